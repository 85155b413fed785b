"""The ``zkv`` entry point: ``zkv node CONFIG`` starts without the command-line parser (Typer
and what it loads are a third of a node's start-up), and says what is wrong with a bad config
exactly as the full command line does; everything else goes to the full command line."""

from __future__ import annotations

import subprocess
import sys

from tests.cluster.harness import REPO

_PROBE = """
import sys
sys.argv = ["zkv", *sys.argv[1:]]
from zkv.entry import main
try:
    main()
except SystemExit as exc:
    print("exit", exc.code, "typer" in sys.modules, file=sys.stderr)
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_node_starts_without_loading_typer_and_a_missing_config_is_one_line(tmp_path) -> None:
    res = _run("node", str(tmp_path / "missing.toml"))
    lines = res.stderr.splitlines()
    assert lines == [f"zkv: {tmp_path / 'missing.toml'}: no such config file", "exit 2 False"], res.stderr


def test_a_bad_config_reads_the_same_through_either_path(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "a"\nlisten = "nowhere"\n')
    fast = _run("node", str(bad)).stderr.splitlines()
    full = _run("node", "--", str(bad)).stderr.splitlines()  # "--": the full parser
    assert fast[-1] == "exit 2 False" and full[-1] == "exit 2 True"
    assert fast[:-1] == full[:-1] and len(fast) == 2 and fast[0].startswith("zkv: "), (fast, full)


def test_other_commands_and_node_help_go_to_the_full_command_line() -> None:
    res = _run("node", "--help")
    assert "exit 0 True" in res.stderr and "Usage: zkv node" in res.stdout
    res = _run("keygen")  # a missing argument: Typer's usage error
    assert "exit 2 True" in res.stderr
