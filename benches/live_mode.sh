#!/bin/sh
# The agent's RSS in live mode: its outbox on a tmpfs filled to the last
# byte, beside the same agent in durable mode earlier in the same run.
# Phases: durable (collector answering), live (collector answering: the
# queue drains as it fills), live with the collector gone (the queue full
# at outbox.live_max_bytes, 1 MiB, dropping its oldest). Needs root (it
# mounts a tmpfs).
# Usage: sudo benches/live_mode.sh [SECONDS_PER_PHASE]   (default 60)
set -eu
cd "$(dirname "$0")/.."
. benches/lib.sh
secs=${1:-60}
[ "$(id -u)" = 0 ] || { echo "live_mode.sh mounts a tmpfs: run it as root" >&2; exit 1; }
bin=$(agent_bin)
dir=$(mktemp -d)
mkdir "$dir/disk"
mount -t tmpfs -o size=8m tmpfs "$dir/disk"
agent= sink=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null
  [ -n "$sink" ] && kill "$sink" 2>/dev/null
  sleep 1
  umount -l "$dir/disk"
  rm -rf "$dir"
}
trap cleanup EXIT
otlp=$(free_port)
http=$(free_port)
# An OTLP/HTTP sink that answers 200 to everything.
python3 - "$otlp" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
sink=$!
cat >"$dir/agent.toml" <<TOML
[bench]
id = "bench-live"
[otlp]
endpoint = "http://127.0.0.1:$otlp"
[outbox]
path = "$dir/disk/outbox.db"
[http]
listen = "127.0.0.1:$http"
[telemetry]
export_interval = "1s"
[sources.heartbeat]
interval = "1s"
TOML
"$bin" --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 &
agent=$!
sleep "$secs"
report "durable, collector up" "$agent" "$secs"
dd if=/dev/zero of="$dir/disk/filler" bs=64k 2>/dev/null || true
sleep 5
curl -s "http://127.0.0.1:$http/healthz"; echo
sleep "$secs"
report "live, collector up" "$agent" $((2 * secs + 5))
kill "$sink"; sink=
# Until the queue is full and drops its oldest (at most 15 min).
start=$(date +%s)
until curl -s "http://127.0.0.1:$http/metrics" | grep -q '^benchtel_outbox_dropped_total{.*reason="disk_full".*} [1-9]'; do
  [ $(($(date +%s) - start)) -lt 900 ] || { echo "the live queue never overflowed" >&2; exit 1; }
  sleep 5
done
report "live, collector down (queue full)" "$agent" $((2 * secs + 5 + $(date +%s) - start))
curl -s "http://127.0.0.1:$http/healthz"; echo
