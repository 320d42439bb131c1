#!/usr/bin/env bash
# Idempotent set-up of an extra ComfyUI test host from a source tarball (called by scripts/setup.sh --host VER):
#   .host/ComfyUI-VER/   the host tree, unpacked from comfyui-VER.tar.gz
#   .host/venv-VER/      its own virtual environment: the same pinned CPU torch as the main host, the tree's
#                        requirements.txt minus torch/torchvision/torchaudio, this pack's requirements and test
#                        tools, all under scripts/constraints-VER.txt
# The tarball is found at $FAITHFUL_SHARED/hosts/comfyui-VER.tar.gz (FAITHFUL_SHARED defaults to the folder
# "shared" beside this checkout), or given directly as $FAITHFUL_HOST_TARBALL. FAITHFUL_HOST moves .host.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ver="${1:?usage: setup-host.sh VERSION   (e.g. 0.33.0)}"
hostdir="${FAITHFUL_HOST:-$root/.host}"
tree="$hostdir/ComfyUI-$ver"
venv="$hostdir/venv-$ver"
cons="$root/scripts/constraints-$ver.txt"
tarball="${FAITHFUL_HOST_TARBALL:-${FAITHFUL_SHARED:-$root/../shared}/hosts/comfyui-$ver.tar.gz}"

log() { echo "[setup $ver] $*" >&2; }
[ -f "$cons" ] || { log "no pinned versions for ComfyUI $ver ($cons): hosts known: 0.3.75 $(cd "$root/scripts" && ls constraints-*.txt | sed 's/constraints-//; s/\.txt//' | tr '\n' ' ')"; exit 2; }

# The host tree: unpack once into a partial folder, check its version, then move it into place.
if [ ! -f "$tree/main.py" ]; then
  [ -f "$tarball" ] || { log "no ComfyUI $ver tarball at $tarball: set FAITHFUL_SHARED (the folder holding hosts/) or FAITHFUL_HOST_TARBALL"; exit 2; }
  log "unpacking $tarball"
  mkdir -p "$hostdir"
  tmp="$(mktemp -d "$hostdir/.unpack-XXXXXX")"
  tar -xzf "$tarball" -C "$tmp"
  got="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$tmp/ComfyUI/comfyui_version.py")"
  [ "$got" = "$ver" ] || { log "the tarball holds ComfyUI '$got', not $ver"; rm -rf "$tmp"; exit 2; }
  rm -f "$tmp/ComfyUI/extra_model_paths.yaml"
  mv "$tmp/ComfyUI" "$tree"
  rm -rf "$tmp"
fi

[ -x "$venv/bin/python" ] || { log "creating venv at $venv"; python3 -m venv "$venv"; }
py="$venv/bin/python"
pipi() { "$py" -m pip install --disable-pip-version-check -q -c "$cons" "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
stamp="$venv/.faithful-setup-$(cat "$cons" "$tree/requirements.txt" "$root"/scripts/requirements-*.txt "$root/requirements.txt" "$0" "$root/scripts/cpu_guards.py" | sha1sum | cut -c1-12)"

if [ ! -f "$stamp" ]; then
  log "installing python packages (pinned CPU torch, the host's requirements, spaCy, test tools)"
  pipi --upgrade pip >/dev/null 2>&1 || true
  pipi torch==2.13.0
  reqs="$venv/host-requirements.txt"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=~!;#].*)?$' "$tree/requirements.txt" > "$reqs"
  pipi -r "$reqs" -r "$root/requirements.txt" -r "$root/scripts/requirements-dev.txt" torchaudio
  pipi --no-deps --require-hashes -r "$root/scripts/requirements-spacy-model.txt"
  "$py" "$root/scripts/cpu_guards.py" torchvision
  "$py" "$root/scripts/cpu_guards.py" torchaudio
  # The host must start: --quick-test-for-ci loads everything (custom nodes included) and exits.
  base="$(mktemp -d)"; mkdir -p "$base/custom_nodes"
  if ! (cd "$tree" && timeout 300 "$py" main.py --cpu --quick-test-for-ci --base-directory "$base" \
          --database-url sqlite:///:memory: >"$base/start.log" 2>&1); then
    log "ComfyUI $ver does not start with this venv:"; tail -40 "$base/start.log" >&2; rm -rf "$base"; exit 1
  fi
  rm -rf "$base"
  touch "$stamp"
fi
"$py" "$root/scripts/cpu_guards.py" torchvision
"$py" "$root/scripts/cpu_guards.py" torchaudio
log "ready: python=$py host=$tree"
