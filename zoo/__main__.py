"""``python -m zoo`` runs the CLI."""

from zoo.cli.main import run

run()
