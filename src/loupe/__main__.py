import sys

from loupe.cli import main

sys.exit(main())
