#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (idempotent), then one pytest run per ComfyUI test host.
#   bash scripts/test.sh                      whole suite on v0.3.75, then whole suite on 0.33.0
#   bash scripts/test.sh --host 0.33.0 ...    only that host (repeatable); FAITHFUL_TEST_HOSTS="..." likewise
# Other arguments go to pytest; with no test path among them the whole tests/ folder runs. Each host's run sets
# FAITHFUL_HOST_VERSION and FAITHFUL_COMFYUI and uses that host's Python. Prints each run's counts and time;
# exits non-zero when any run fails or runs no test (pytest's exit code 5), or a host cannot be set up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hosts=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) hosts+=("${2:?--host needs a version, e.g. --host 0.33.0}"); shift 2;;
    --host=*) hosts+=("${1#--host=}"); shift;;
    *) args+=("$1"); shift;;
  esac
done
[ ${#hosts[@]} -gt 0 ] || read -r -a hosts <<< "${FAITHFUL_TEST_HOSTS:-0.3.75 0.33.0}"
setup_args=()
for h in "${hosts[@]}"; do setup_args+=(--host "$h"); done
bash "$root/scripts/setup.sh" "${setup_args[@]}"
cd "$root"
target=tests
for a in "${args[@]+"${args[@]}"}"; do case "$a" in tests/*|*.py|*::*) target="";; esac; done

hostroot="${FAITHFUL_HOST:-$root/.host}"
logs="$(mktemp -d)"
summary=()
status=0
once_done=0  # after the first host, tests marked "once" (host-independent) are deselected
for h in "${hosts[@]}"; do
  if [ "$h" = "0.3.75" ]; then
    tree="$hostroot/ComfyUI"; py="${FAITHFUL_VENV:-$root/.venv}/bin/python"
  else
    tree="$hostroot/ComfyUI-$h"; py="$hostroot/venv-$h/bin/python"
  fi
  echo "[test] ComfyUI $h: $py -m pytest ${args[*]+"${args[*]}"} $target" >&2
  t0=$(date +%s)
  rc=0
  FAITHFUL_HOST_VERSION="$h" FAITHFUL_COMFYUI="$tree" FAITHFUL_ONCE_DONE="$once_done" \
    "$py" -m pytest -q -p no:cacheprovider ${args[@]+"${args[@]}"} $target 2>&1 | tee "$logs/$h.log" || rc=$?
  t=$(( $(date +%s) - t0 ))
  counts="$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected)|no tests ran' "$logs/$h.log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')"
  summary+=("ComfyUI $h: ${counts:-no summary line} (exit $rc, ${t}s)")
  [ "$rc" = 0 ] || status=1
  once_done=1
done
rm -rf "$logs"
for line in "${summary[@]}"; do echo "[test] $line"; done
exit "$status"
