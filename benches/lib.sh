# Shared by the agent's bench scripts (sourced): a free port, and the
# CPU and RSS of a process from /proc after the run.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# report LABEL PID DURATION
report() {
  local rss cpu tick
  tick=$(getconf CLK_TCK)
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$2/status")
  cpu=$(awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$2/stat")
  printf '%-34s RSS %6d KiB  CPU %6s s  (%.2f%% of one core)\n' "$1" "$rss" "$cpu" "$(echo "$cpu * 100 / $3" | bc -l)"
}

# An idle agent's config (no checks) at PATH, beside the measured one.
idle_config() {
  printf '[bench]\nid = "bench-idle"\n[otlp]\nendpoint = "http://127.0.0.1:%s"\n[http]\nlisten = "127.0.0.1:%s"\n' "$(free_port)" "$(free_port)" >"$1"
}

# The agent to measure: BENCHTEL_AGENT_BIN, else this checkout's release
# build (built here).
agent_bin() {
  if [ -n "${BENCHTEL_AGENT_BIN:-}" ]; then
    echo "$BENCHTEL_AGENT_BIN"
    return
  fi
  cargo build --release --locked --bin benchtel-agent >&2
  echo target/release/benchtel-agent
}
