"""`python -m core.cli` runs the `adlens` command line."""

import sys

from core.cli import main

sys.exit(main())
