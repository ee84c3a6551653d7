"""Build the zero-shot test file of the paper's Table 1 from PromptSource templates
(= `cappy promptsource-data`; the command is `cappy.promptsource.build`).

    python scripts/build_promptsource_test_data.py --story_cloze_dir ~/data/story_cloze
"""

import sys

from cappy.promptsource.build import main

if __name__ == "__main__":
    sys.exit(main())
