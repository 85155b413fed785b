"""``python -m zkv`` runs the ``zkv`` program (zkv.entry)."""

from zkv.entry import main

main()
