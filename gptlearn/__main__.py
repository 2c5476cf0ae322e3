"""``python -m gptlearn ...`` runs the ``gptlearn`` command (see :mod:`gptlearn.cli`)."""
import sys

from .cli import main

sys.exit(main())
