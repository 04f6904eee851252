#!/usr/bin/env bash
# Footprint of benchtel-agent next to its peers, measured in the same runs:
# RSS and CPU seconds from /proc after DURATION seconds of idle running.
#
#   benches/footprint.sh [DURATION] [RUNS]   (defaults 180 s, 3 runs; medians)
#   OPT_LEVEL=z benches/footprint.sh 60      (the agent built at another opt-level)
#   BENCHTEL_AGENT_BIN=path benches/footprint.sh   (another build, e.g. an older commit's)
#
# Each run starts four processes side by side, all on their defaults:
#   benchtel-agent, collector down  OTLP to a port where nothing listens (the
#                                   outbox grows, the lanes back off)
#   benchtel-agent, collector up    OTLP to a real collector (rotel, PyPI
#                                   `rotel`, blackhole exporter) that takes it all
#   prometheus-node-exporter        default collectors
#   collectd (collectd-core)        cpu, memory, load, interface, disk, df,
#                                   write_prometheus; interval 10 s
# All four serve /metrics and are scraped every 15 s, as a Prometheus would
# (node_exporter does nothing unless scraped). The agents get no config but
# their ports: built-in defaults (heartbeat 10 s, host metrics 15 s, export
# 10 s). Peers are installed when missing and the script runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-180}
RUNS=${2:-3}
# shellcheck source=lib.sh
. benches/lib.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if [ "$(id -u)" = 0 ]; then
  # collectd-core does not pull its plugins' libraries (write_prometheus).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus-node-exporter collectd-core libprotobuf-c1 libmicrohttpd12 curl >/dev/null
fi
command -v prometheus-node-exporter >/dev/null || { echo "install prometheus-node-exporter (apt)"; exit 1; }
[ -x /usr/sbin/collectd ] || { echo "install collectd-core (apt)"; exit 1; }
rotel_py=python3
[ -x target/tools/rotel-venv/bin/python3 ] && rotel_py=target/tools/rotel-venv/bin/python3
rotel=$("$rotel_py" -c 'import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null) \
  || { echo "install rotel: python3 -m pip install rotel (or run scripts/test once)"; exit 1; }

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

collectd_conf() { # PORT
  cat <<CONF
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
  Port "$1"
</Plugin>
CONF
}

agent() { # NAME OTLP_PORT HTTP_PORT
  printf '[otlp]\nendpoint = "http://127.0.0.1:%s"\n[http]\nlisten = "127.0.0.1:%s"\n' "$2" "$3" >"$work/$1.toml"
  STATE_DIRECTORY="$work/$1-state" "$bin" --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
}

sample() { # LABEL PID: "label rss_kib cpu_s"
  local tick
  tick=$(getconf CLK_TCK)
  [ -d "/proc/$2" ] || { echo "$1 (pid $2) died; logs in $work:" >&2; tail -5 "$work"/*.log >&2; exit 1; }
  echo "$1 $(awk '/^VmRSS:/ {print $2}' "/proc/$2/status") $(awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$2/stat")"
}

: >"$work/samples"
for run in $(seq "$RUNS"); do
  rm -rf "$work"/*-state
  otlp=$(free_port)
  "$rotel" start --otlp-http-endpoint "127.0.0.1:$otlp" --otlp-grpc-endpoint "127.0.0.1:$(free_port)" \
    --exporter blackhole >"$work/rotel.log" 2>&1 &
  rotel_pid=$!
  down_http=$(free_port) up_http=$(free_port) ne_port=$(free_port) cd_port=$(free_port)
  agent down "$(free_port)" "$down_http"; down=$!
  agent up "$otlp" "$up_http"; up=$!
  prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >"$work/ne.log" 2>&1 &
  ne=$!
  collectd_conf "$cd_port" >"$work/collectd.conf"
  /usr/sbin/collectd -f -C "$work/collectd.conf" >"$work/collectd.log" 2>&1 &
  cd_pid=$!
  end=$((SECONDS + DURATION))
  while [ $SECONDS -lt $end ]; do
    for port in "$down_http" "$up_http" "$ne_port" "$cd_port"; do
      curl -s -o /dev/null "http://127.0.0.1:$port/metrics" || true
    done
    sleep 15
  done
  # The collector-up agent must really have delivered: nothing queued.
  curl -s "http://127.0.0.1:$up_http/healthz" | grep -q '"outbox_records":0' \
    || { echo "the collector-up agent has records queued: is rotel taking them? ($work/rotel.log)" >&2; exit 1; }
  {
    sample "benchtel-agent(collector-down)" "$down"
    sample "benchtel-agent(collector-up)" "$up"
    sample prometheus-node-exporter "$ne"
    sample collectd "$cd_pid"
  } | tee -a "$work/samples" | sed "s/^/run $run: /"
  kill "$down" "$up" "$ne" "$cd_pid" "$rotel_pid"
  wait "$down" "$up" "$ne" "$cd_pid" "$rotel_pid" 2>/dev/null || true
done

echo "medians of $RUNS runs of ${DURATION} s:"
python3 - "$work/samples" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rss, cpu = line.split()
    rows.setdefault(name, []).append((int(rss), float(cpu)))
for name, xs in rows.items():
    rss = statistics.median(r for r, _ in xs)
    cpu = statistics.median(c for _, c in xs)
    print(f"{name:32} RSS {rss:8.0f} KiB  CPU {cpu:6.2f} s")
PY
