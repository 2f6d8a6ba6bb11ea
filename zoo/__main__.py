"""``python -m zoo`` runs the CLI."""

import sys

from zoo.cli.main import main

sys.exit(main())
