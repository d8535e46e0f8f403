"""Runs :func:`efl_d2.data.mini_lvis.cli.main` for ``python -m efl_d2.data.mini_lvis``."""

import sys

from .cli import main

sys.exit(main())
