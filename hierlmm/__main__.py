"""``python -m hierlmm`` runs the command line."""

import sys

from hierlmm.cli import main

sys.exit(main())
