"""Build Cappy's pretraining data from T0's training mixture (38 PromptSource datasets)
(= `cappy pretraining-data`; the command is `cappy.pretraining.build`).

    python scripts/build_pretraining_data.py --output_dir pretraining_data \\
        --augment_models yuchenlin/BART0,bigscience/T0_3B
"""

import sys

from cappy.pretraining.build import main

if __name__ == "__main__":
    sys.exit(main())
