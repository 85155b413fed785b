"""docs/zkv@.service is a unit systemd accepts (``systemd-analyze verify``, where it exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "docs" / "zkv@.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_service_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "Restart=on-failure" in text and "KillSignal=SIGTERM" in text
    # An instance, with ExecStart pointing at this environment's zkv (verify checks it exists).
    zkv = Path(sys.executable).parent / "zkv"
    unit = tmp_path / "zkv@node0.service"
    unit.write_text(text.replace("/opt/zkv/bin/zkv", str(zkv)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if unit.name in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
