import sys

from cappy.cli import main

sys.exit(main())
