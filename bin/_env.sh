# Sourced by bin/cluster and bin/test: make sure .venv exists and has zkv installed.
# Re-installs only when pyproject.toml is newer than the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "zkv needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "creating $ROOT/.venv" >&2
    "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.zkv-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "installing zkv and its test dependencies into .venv" >&2
    "$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
    touch "$STAMP"
fi
# Byte-compile zkv's own modules: an editable install leaves them as source only, and where
# PYTHONDONTWRITEBYTECODE is set every process compiles them again on import, a third of a
# node's start-up. Files already compiled and unchanged are skipped; one that cannot be
# compiled or written (a syntax error, a read-only checkout) is left to the import to report.
"$ROOT/.venv/bin/python" -m compileall -q "$ROOT/zkv" >/dev/null 2>&1 || true
export PATH="$ROOT/.venv/bin:$PATH"
