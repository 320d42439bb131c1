#!/usr/bin/env bash
# The main job: set-up (idempotent), then an example workflow through a headless ComfyUI server, writing the
# image and an attention-map picture. Arguments go to tools/run_example.py (see --help): --ckpt, --comfyui, ...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${FAITHFUL_COMFYUI:-}" ] && [[ " $* " != *" --comfyui "* ]]; then
  bash "$root/scripts/setup.sh"
fi
cd "$root"
exec "${FAITHFUL_PYTHON:-${FAITHFUL_VENV:-$root/.venv}/bin/python}" -m tools.run_example "$@"
