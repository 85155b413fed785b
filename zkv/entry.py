"""The ``zkv`` program's entry point (the console script and ``python -m zkv``).

``zkv node CONFIG`` starts the node without loading the command-line parser; every other command
line goes to zkv.cli.  A node's supervisor starts on every start and restart of a node (by a
service manager, bin/cluster, the tests hundreds of times), and Typer with the pydantic and rich it
loads costs it about 0.2 s of CPU, a third of a node's start-up, to read one argument.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "node" and not args[1].startswith("-"):
        from zkv.node import main as node_main

        sys.exit(node_main(args[1]))
    from zkv.cli import main as cli_main

    cli_main()
