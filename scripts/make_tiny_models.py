"""Build tiny random models for offline runs and tests (their outputs mean nothing)
(= `cappy tiny-models`; the command is `cappy.engine.weights.tiny_models`).
"""

import sys

from cappy.engine.weights.tiny_models import main

if __name__ == "__main__":
    sys.exit(main())
