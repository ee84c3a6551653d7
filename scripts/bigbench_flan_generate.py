"""Generate the candidate responses that Cappy reranks, for BIG-Bench tasks
(= `cappy generate`; the command is `cappy.bigbench.generate`).

    python scripts/bigbench_flan_generate.py --model_name_or_path google/flan-t5-xl \
        --n_model_shards 4
"""

import sys

from cappy.bigbench.generate import main

if __name__ == "__main__":
    sys.exit(main())
