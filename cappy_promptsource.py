"""Zero-shot classification with Cappy on 11 held-out PromptSource tasks (the paper's Table 1).

    python scripts/build_promptsource_test_data.py --story_cloze_dir DIR   # or download_promptsource_test_data.sh
    python cappy_promptsource.py --model_name_or_path btan2/cappy-large

`--help` lists every flag; cappy/promptsource/evaluate.py holds the command and what it
does.
"""

import sys

from cappy.promptsource.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
