"""``python -m gigsterpg.cli``: the same command as the ``gigsterpg`` console script."""
import sys

from gigsterpg.cli import main

sys.exit(main())
