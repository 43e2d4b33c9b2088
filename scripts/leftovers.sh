#!/usr/bin/env bash
# Usage: scripts/leftovers.sh DIR
# Fails, listing them, if processes whose command line names DIR still run after a short
# grace (a replica checks once a second whether its orchestrator is gone, then stops
# gracefully). It kills what it lists, so one bad run does not poison the next.
set -euo pipefail
dir="${1:?usage: leftovers.sh DIR}"

list() {
  local p cmd state
  for p in /proc/[0-9]*; do
    # A process can vanish between the listing and the read.
    cmd="$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" || continue
    case "$cmd" in *leftovers.sh*) continue ;; *"$dir"*) ;; *) continue ;; esac
    state="$( { sed 's/.*) //' "$p/stat" | cut -d' ' -f1; } 2>/dev/null)" || continue
    [ "$state" = Z ] && continue
    echo "${p#/proc/} $cmd"
  done
}

for _ in $(seq 1 20); do
  left="$(list)"
  [ -z "$left" ] && exit 0
  sleep 0.5
done
echo "error: processes of finished tests still run (nothing may outlive its owner):" >&2
echo "$left" >&2
echo "$left" | cut -d' ' -f1 | xargs -r kill -KILL 2>/dev/null || true
exit 1
