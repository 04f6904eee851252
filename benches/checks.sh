#!/usr/bin/env bash
# Cost of health checks and serial probes: an agent with 50 checks and 10
# serial probes, all at 1 s intervals, beside an idle agent (no checks), in
# the same run; CPU and RSS from /proc after DURATION seconds.
#
#   benches/checks.sh [DURATION]      (default 120 s)
#
# BENCHTEL_AGENT_BIN=path measures that build instead of building this
# checkout (how before/after figures in BENCHMARKS.md are taken).
#
# The 50 checks: 20 tcp (a local listener), 10 http (a local python
# http.server), 10 file, 10 exec (`true`). The 10 serial_expect probes talk
# to 10 simulated Zephyr shells, each on its own socat pty pair.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=benches/lib.sh
. benches/lib.sh
command -v socat >/dev/null || { echo "install socat (apt)"; exit 1; }
bin=$(agent_bin)

http_port=$(free_port)
(cd "$work" && python3 -m http.server "$http_port" --bind 127.0.0.1 >/dev/null 2>&1) &
tcp_port=$(free_port)
socat TCP-LISTEN:"$tcp_port",bind=127.0.0.1,fork,reuseaddr /dev/null &
touch "$work/dut.log"

# Ten simulated Zephyr shells.
cat >"$work/zephyr.py" <<'PY'
import sys
f = open(sys.argv[1], "r+b", buffering=0)
buf = b""
while True:
    try:
        b = f.read(1)
    except OSError:  # the pty went away: the run is over
        break
    if not b:
        break
    buf += b
    if b == b"\n":
        if buf.strip() == b"kernel version":
            f.write(b"Zephyr version 3.5.0\r\nuart:~$ ")
        buf = b""
PY
for i in $(seq 0 9); do
  socat pty,raw,echo=0,link="$work/dut$i" pty,raw,echo=0,link="$work/sim$i" &
done
sleep 1
for i in $(seq 0 9); do python3 "$work/zephyr.py" "$work/sim$i" & done

cfg="$work/agent.toml"
{
  printf '[bench]\nid = "bench-checks"\nmax_concurrent_checks = 16\n[otlp]\nendpoint = "http://127.0.0.1:%s"\n' "$(free_port)"
  printf '[http]\nlisten = "127.0.0.1:%s"\n' "$(free_port)"
  for i in $(seq 1 20); do printf '[[checks]]\nname = "tcp%s"\ntype = "tcp"\naddress = "127.0.0.1:%s"\ninterval = "1s"\n' "$i" "$tcp_port"; done
  for i in $(seq 1 10); do printf '[[checks]]\nname = "http%s"\ntype = "http"\nurl = "http://127.0.0.1:%s/"\ninterval = "1s"\n' "$i" "$http_port"; done
  for i in $(seq 1 10); do printf '[[checks]]\nname = "file%s"\ntype = "file"\npath = "%s/dut.log"\ninterval = "1s"\n' "$i" "$work"; done
  for i in $(seq 1 10); do printf '[[checks]]\nname = "exec%s"\ntype = "exec"\ncommand = "true"\ninterval = "1s"\n' "$i"; done
  for i in $(seq 0 9); do printf '[[checks]]\nname = "serial%s"\ntype = "serial_expect"\nport = "%s/dut%s"\nsend = "kernel version"\nexpect = %s\ninterval = "1s"\nsettle = "0s"\n' "$i" "$work" "$i" "'Zephyr version (?P<major>\\d+)'"; done
} >"$cfg"
idle_config "$work/idle.toml"

"$bin" validate --config "$cfg" >&2
STATE_DIRECTORY="$work/s1" "$bin" --config "$cfg" >"$work/busy.log" 2>&1 &
busy=$!
STATE_DIRECTORY="$work/s2" "$bin" --config "$work/idle.toml" >"$work/idle.log" 2>&1 &
idle=$!
sleep "$DURATION"
echo "after ${DURATION} s:"
report "agent, 50 checks + 10 serial probes" "$busy" "$DURATION"
report "agent, idle (no checks)" "$idle" "$DURATION"
fails=$(grep -c '"level":"WARN"' "$work/busy.log" || true)
echo "warnings logged by the busy agent: $fails"
grep '"WARN"' "$work/busy.log" | head -3 || true
