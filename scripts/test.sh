#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then pytest. Extra arguments go to pytest.
# Exits non-zero when any test fails or when no test ran (pytest's exit code 5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# With no test path among the arguments, the whole tests/ folder; with paths, just those.
target=tests
for a in "$@"; do case "$a" in tests/*|*.py|*::*) target="";; esac; done
exec "${FAITHFUL_VENV:-$root/.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@" $target
