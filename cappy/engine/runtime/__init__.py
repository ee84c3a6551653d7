"""The parallel runtime and the process: the device mesh and random stream (`mesh`), several
hosts (`hosts`, and `local_processes` on one machine), which process writes and shows
progress (`leader`), JAX's compilation cache, the Redco adapter, what transformers is asked
before use (`transformers_setup`), and how a command starts and ends (`process`)."""
