#!/usr/bin/env bash
# The main job: set-up (idempotent), then an example workflow through a headless ComfyUI server, writing the
# image and an attention-map picture. Arguments go to tools/run_example.py (see --help): --ckpt, --comfyui, ...
# FAITHFUL_HOST_VERSION=0.33.0 runs it on the second test host (README "Testing").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ver="${FAITHFUL_HOST_VERSION:-0.3.75}"
if [ "$ver" = "0.3.75" ]; then py="${FAITHFUL_VENV:-$root/.venv}/bin/python"; else py="${FAITHFUL_HOST:-$root/.host}/venv-$ver/bin/python"; fi
if [ -z "${FAITHFUL_COMFYUI:-}" ] && [[ " $* " != *" --comfyui "* ]]; then
  bash "$root/scripts/setup.sh" --host "$ver"
else
  # Your own ComfyUI: run with its Python (--python) unless this checkout's venv exists.
  prev=""; for a in "$@"; do [ "$prev" = "--python" ] && [ ! -x "$py" ] && py="$a"; prev="$a"; done
  [ -x "$py" ] || py="$(command -v python3)"
fi
cd "$root"
exec "${FAITHFUL_PYTHON:-$py}" -m tools.run_example "$@"
