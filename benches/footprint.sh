#!/usr/bin/env bash
# Footprint of benchtel-agent next to its peers, measured in the same run:
# RSS and CPU seconds from /proc after DURATION seconds of idle running.
#
#   benches/footprint.sh [DURATION]        (default 300 s)
#   OPT_LEVEL=z benches/footprint.sh 60    (the agent built at another opt-level)
#   BENCHTEL_AGENT_BIN=path benches/footprint.sh   (another build, e.g. an older commit's)
#
# Peers (Debian packages, installed when missing and run as root):
#   prometheus-node-exporter  default collectors, --web.listen-address=127.0.0.1:PORT
#   collectd (collectd-core)  cpu, memory, load, interface, disk, df, write_prometheus; interval 10 s
# All three serve /metrics, and all three are scraped every 15 s during the
# run, as a Prometheus would (node_exporter does nothing unless scraped).
# benchtel-agent: release build, no config file (built-in defaults), OTLP to a
# port where nothing listens (so it also exercises the outbox and backoff).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-300}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if [ "$(id -u)" = 0 ]; then
  # collectd-core does not pull its plugins' libraries (write_prometheus).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus-node-exporter collectd-core libprotobuf-c1 libmicrohttpd12 curl >/dev/null
fi
command -v prometheus-node-exporter >/dev/null || { echo "install prometheus-node-exporter (apt)"; exit 1; }
[ -x /usr/sbin/collectd ] || { echo "install collectd-core (apt)"; exit 1; }

bin=target/release/benchtel-agent
if [ -n "${BENCHTEL_AGENT_BIN:-}" ]; then
  bin=$BENCHTEL_AGENT_BIN
elif [ -n "${OPT_LEVEL:-}" ]; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT_LEVEL CARGO_TARGET_DIR=target/opt-$OPT_LEVEL \
    cargo build --release --locked --bin benchtel-agent >&2
  bin=target/opt-$OPT_LEVEL/release/benchtel-agent
else
  cargo build --release --locked --bin benchtel-agent >&2
fi
ls -l "$bin" | awk -v o="${OPT_LEVEL:-as in Cargo.toml}" '{print "benchtel-agent binary (opt-level " o "): " $5 " bytes"}'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

STATE_DIRECTORY="$work/state" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(free_port)" \
  "$bin" >"$work/agent.log" 2>&1 &
agent=$!

ne_port=$(free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >"$work/ne.log" 2>&1 &
ne=$!

cd_port=$(free_port)
cat >"$work/collectd.conf" <<CONF
Interval 10
BaseDir "$work"
PIDFile "$work/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin interface
LoadPlugin disk
LoadPlugin df
LoadPlugin write_prometheus
<Plugin write_prometheus>
  Port "$cd_port"
</Plugin>
CONF
/usr/sbin/collectd -f -C "$work/collectd.conf" >"$work/collectd.log" 2>&1 &
cd_pid=$!

end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
  for port in 9464 "$ne_port" "$cd_port"; do
    curl -s -o /dev/null "http://127.0.0.1:$port/metrics" || true
  done
  sleep 15
done
for p in "$agent" "$ne" "$cd_pid"; do
  [ -d "/proc/$p" ] || { echo "process $p died; logs in $work:"; tail -5 "$work"/*.log; exit 1; }
done
tick=$(getconf CLK_TCK)
report() { # name pid
  local rss cpu
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$2/status")
  cpu=$(awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$2/stat")
  printf '%-26s RSS %6d KiB  CPU %6s s\n' "$1" "$rss" "$cpu"
}
echo "after ${DURATION} s idle:"
report benchtel-agent "$agent"
report prometheus-node-exporter "$ne"
report collectd "$cd_pid"
