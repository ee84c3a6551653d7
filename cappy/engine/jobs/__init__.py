"""The jobs on the devices: scoring (`scoring`), training (`training`, `finetuning`),
candidate generation (`candidate_generation`), and the front door every command uses
(`session.Cappy`)."""
