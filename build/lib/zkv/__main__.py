"""``python -m zkv`` runs the command-line interface."""

from zkv.cli import main

main()
