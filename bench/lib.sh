# Shared by bench/wan.sh and bench/link.sh (sourced): a fresh docker-registry
# behind the delaying proxy (fixtures/src/bin/delay-proxy.rs), and cleaning
# up what was started.

# bench_setup NAME: $work (BENCH_DIR, default target/bench, where
# generated composes are kept), a fresh $run ($work/NAME), the release
# build, and $archgate (ARCHGATE=PATH measures another build, e.g. an
# older one).
bench_setup() {
  work=${BENCH_DIR:-target/bench}
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  run="$work/$1"
  rm -rf "$run"; mkdir -p "$run"
  cargo build -q --release -p archgate -p archgate-fixtures --bin archgate --bin make-bench --bin delay-proxy
  archgate=${ARCHGATE:-$PWD/target/release/archgate}
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT

# start_registry DIR RTT_MS [RATE_MBIT]: a fresh, empty registry in DIR with
# an access log (over TLS with a self-signed certificate when BENCH_TLS is
# set: it then offers HTTP/2), behind the proxy (a round trip of RTT_MS;
# each direction limited to RATE_MBIT, shared by all connections, when
# given). Sets $reg (the registry), $host (the proxy), $log (the registry's
# log), $data (its storage) and $stats (the proxy's `UP DOWN` byte counts).
start_registry() {
  cleanup
  add_registry "$@"
}

# add_registry DIR RTT_MS [RATE_MBIT]: start_registry, leaving running
# what was started before (a second registry, a compose server).
add_registry() {
  local d=$1 rtt=$2 rate=${3:-}
  rm -rf "$d"; mkdir -p "$d"
  data="$d/data"
  local tls=
  if [ -n "${BENCH_TLS:-}" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/key.pem" -out "$d/cert.pem" -days 2 \
      -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2> /dev/null
    tls=", tls: {certificate: $d/cert.pem, key: $d/key.pem}"
  fi
  printf 'version: 0.1\nlog: {level: info}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:0%s}\n' "$data" "$tls" > "$d/config.yml"
  log="$d/log"
  docker-registry serve "$d/config.yml" > "$log" 2>&1 &
  pids+=($!)
  reg=
  for _ in $(seq 100); do
    reg=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | sed 's/listening on //' || true)
    [ -n "$reg" ] && break
    sleep 0.05
  done
  [ -n "$reg" ] || { echo "docker-registry did not start" >&2; exit 1; }
  stats="$d/stats"
  DELAY_PROXY_STATS="$stats" target/release/delay-proxy "$reg" $((rtt / 2)) $rate > "$d/proxy" &
  pids+=($!)
  host=
  for _ in $(seq 100); do host=$(cat "$d/proxy"); [ -n "$host" ] && [ -f "$stats" ] && break; sleep 0.05; done
  [ -n "$host" ] || { echo "delay-proxy did not start" >&2; exit 1; }
}

# Requests the registry has answered so far (its access log: one line each).
requests() { grep -c '"[A-Z]* /v2/' "$log" || true; }
