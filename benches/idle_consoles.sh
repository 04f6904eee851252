#!/usr/bin/env bash
# Cost of watching idle consoles: an agent with 10 `serial_watch` probes on
# 10 consoles that say nothing (each board idles at its login prompt, as
# most boards do most of the day), beside an idle agent (no checks), in the
# same run; CPU and RSS from /proc after DURATION seconds.
#
#   benches/idle_consoles.sh [DURATION]      (default 120 s)
#
# The watches use the `alive` poke (once at start, then after 60 s of
# silence, so a 120 s run pokes each board twice); each simulated board
# answers a CR with `bench login: `, with no newline, as getty does.
# BENCHTEL_AGENT_BIN=path measures that build instead of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh
command -v socat >/dev/null || { echo "install socat (apt)"; exit 1; }
bin=$(agent_bin)

cat >"$work/getty.py" <<'PY'
import sys
f = open(sys.argv[1], "r+b", buffering=0)
while True:
    try:
        b = f.read(1)
    except OSError:  # the pty went away: the run is over
        break
    if not b:
        break
    if b in (b"\r", b"\n"):
        f.write(b"\r\nbench login: ")
PY
for i in $(seq 0 9); do
  socat pty,raw,echo=0,link="$work/dut$i" pty,raw,echo=0,link="$work/sim$i" &
done
sleep 1
for i in $(seq 0 9); do python3 "$work/getty.py" "$work/sim$i" & done

cfg="$work/agent.toml"
{
  printf '[bench]\nid = "bench-consoles"\n[otlp]\nendpoint = "http://127.0.0.1:%s"\n' "$(free_port)"
  printf '[http]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"
  for i in $(seq 0 9); do
    printf '[[checks]]\nname = "boot%s"\ntype = "serial_watch"\nport = "%s/dut%s"\n' "$i" "$work" "$i"
    printf 'reset = "^U-Boot SPL"\nfatal = "Kernel panic"\n'
    printf 'milestones = [{ name = "kernel", pattern = "^Starting kernel", within = "30s" }, { name = "login", pattern = "login: $", within = "90s" }]\n'
    printf 'alive = { send = "\\r", expect = "login: $", after_silence = "60s" }\n'
  done
} >"$cfg"
idle_config "$work/idle.toml"

"$bin" validate --config "$cfg" >&2
STATE_DIRECTORY="$work/s1" "$bin" --config "$cfg" >"$work/busy.log" 2>&1 &
busy=$!
STATE_DIRECTORY="$work/s2" "$bin" --config "$work/idle.toml" >"$work/idle.log" 2>&1 &
idle=$!
sleep "$DURATION"
echo "after ${DURATION} s:"
report "agent, 10 idle consoles watched" "$busy" "$DURATION"
report "agent, idle (no checks)" "$idle" "$DURATION"
echo "bench state: $(grep -o '"to":"[a-z]*"' "$work/busy.log" | tail -1)"
echo "warnings logged by the watching agent: $(grep -c '"level":"WARN"' "$work/busy.log" || true)"
grep '"WARN"' "$work/busy.log" | head -3 || true
