#!/usr/bin/env bash
# A compose served over HTTP, published to two registries (issue 33): the
# compose server, and each registry, behind its own link of RATE_MBIT each
# way plus a round trip of RTT_MS (the delaying proxy of bench/lib.sh), so
# that the uplinks are not shared. One image of 4 arches (.oci.tar.xz, as
# Pungi writes the base images), 2 tags, to both registries.
#
#   bash bench/http.sh [RATE_MBIT] [RTT_MS] [SIZE_MB]     (defaults: 100 50 30)
#
# Twice: the server offering Range requests (nothing of an artifact may be
# kept on disk), then without them (the run's spool, bounded by
# [source] spool-limit, holds what it may). For each: wall time; the floor,
# the larger of (bytes down / rate) and (bytes up to each registry / rate),
# from the proxies' own counts; bytes read from the compose server over the
# artifacts' size; the run's temp dir at its peak (sampled every 20 ms);
# peak RSS; archgate's CPU seconds. Needs: docker-registry, xz, GNU time,
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-100}
rtt=${2:-50}
size=${3:-30}
arches=(x86_64 aarch64 ppc64le s390x)
. bench/lib.sh
bench_setup http
built="$work/http-compose-$size"
if [ ! -f "$built/compose.toml" ]; then
  echo "generating 4 artifacts of about $size MB (once)" >&2
  target/release/make-bench "$built" "$size" "${arches[@]}"
fi
# The same artifacts in a Pungi compose tree (hard links), with the
# metadata Pungi writes (composeinfo.json, images.json with checksums).
pungi="$run/pungi/Bench-41-20241101.0"
python3 - "$built" "$pungi" "${arches[@]}" <<'PY'
import hashlib, json, os, sys
built, root, arches = sys.argv[1], sys.argv[2], sys.argv[3:]
cid = "Bench-41-20241101.0"
os.makedirs(f"{root}/compose/metadata", exist_ok=True)
open(f"{root}/STATUS", "w").write("FINISHED\n")
images = {"Container": {}}
for arch in arches:
    name = f"Fedora-Container-Base-41.{arch}.oci.tar.xz"
    rel = f"Container/{arch}/images/{name}"
    os.makedirs(os.path.dirname(f"{root}/compose/{rel}"), exist_ok=True)
    os.link(f"{built}/fedora/{arch}/{name}", f"{root}/compose/{rel}")
    h = hashlib.sha256()
    with open(f"{root}/compose/{rel}", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    images["Container"][arch] = [{
        "arch": arch, "bootable": False, "checksums": {"sha256": h.hexdigest()},
        "disc_count": 1, "disc_number": 1, "format": "tar.xz", "implant_md5": None,
        "mtime": 1730419200, "path": rel, "size": os.path.getsize(f"{root}/compose/{rel}"),
        "subvariant": "Container_Base", "type": "docker", "volume_id": None}]
compose = {"id": cid, "date": "20241101", "respin": 0, "type": "production"}
info = {"header": {"type": "productmd.composeinfo", "version": "1.1"}, "payload": {
    "compose": dict(compose, final=False),
    "release": {"name": "Fedora", "version": "41", "short": "Fedora", "type": "ga", "is_layered": False},
    "variants": {"Container": {"id": "Container", "uid": "Container", "name": "Container",
                               "type": "variant", "arches": arches, "paths": {}}}}}
json.dump(info, open(f"{root}/compose/metadata/composeinfo.json", "w"))
json.dump({"header": {"type": "productmd.images", "version": "1.2"},
           "payload": {"compose": compose, "images": images}},
          open(f"{root}/compose/metadata/images.json", "w"))
PY
artifacts=$(find "$pungi/compose/Container" -name '*.oci.tar.xz' -printf '%s\n' | awk '{s += $1} END {print s}')

# The compose server (bench/serve.py) behind its own limited link.
serve() {
  python3 bench/serve.py "$run/pungi" $1 > "$run/serve" &
  pids+=($!)
  local srv=
  for _ in $(seq 100); do srv=$(cat "$run/serve"); [ -n "$srv" ] && break; sleep 0.05; done
  [ -n "$srv" ] || { echo "serve.py did not start" >&2; exit 1; }
  cstats="$run/compose-stats"
  rm -f "$cstats" "$run/compose-proxy"
  DELAY_PROXY_STATS="$cstats" target/release/delay-proxy "$srv" $((rtt / 2)) "$rate" > "$run/compose-proxy" &
  pids+=($!)
  chost=
  for _ in $(seq 100); do chost=$(cat "$run/compose-proxy"); [ -n "$chost" ] && [ -f "$cstats" ] && break; sleep 0.05; done
}

results=()
# once NAME [--no-range]: a cold publish to two fresh registries.
once() {
  local name=$1 flag=${2:-}
  cleanup
  add_registry "$run/reg-a" "$rtt" "$rate"; local host_a=$host stats_a=$stats
  add_registry "$run/reg-b" "$rtt" "$rate"; local host_b=$host stats_b=$stats
  serve "$flag"
  cat > "$run/$name.toml" <<TOML
[source]
kind = "pungi"

[registry."$host_a"]
tls-verify = false

[registry."$host_b"]
tls-verify = false

[[image]]
name = "fedora"
match = { subvariant = "Container_Base" }
repositories = ["docker://$host_a/fedora", "docker://$host_b/fedora"]
tags = ["{release}", "latest"]
TOML
  local tmp="$run/tmp-$name"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # The run's temp dir at its peak, sampled.
  ( peak=0; while :; do n=$(du -sb "$tmp" 2>/dev/null | cut -f1); [ "${n:-0}" -gt "$peak" ] && peak=$n && echo "$peak" > "$run/disk-$name"; sleep 0.02; done ) &
  local sampler=$!
  echo 0 > "$run/disk-$name"
  TMPDIR="$tmp" ARCHGATE_CACHE_DIR="$run/cache-$name" /usr/bin/time -f '%e %M %U %S' -o "$run/time" \
    "$archgate" publish -v -c "$run/$name.toml" --compose "http://$chost/Bench-41-20241101.0" > "$run/$name.log" 2>&1 || {
    kill "$sampler"; echo "publish failed, see $run/$name.log" >&2; tail -20 "$run/$name.log" >&2; exit 1; }
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  local secs kb user sys
  read -r secs kb user sys < "$run/time"
  local down up_a up_b disk
  down=$(cut -d' ' -f2 "$cstats"); up_a=$(cut -d' ' -f1 "$stats_a"); up_b=$(cut -d' ' -f1 "$stats_b")
  disk=$(cat "$run/disk-$name")
  local said; said=$(grep -c "offers no Range requests" "$run/$name.log" || true)
  results+=("$(awk -v n="$name" -v w="$secs" -v d="$down" -v a="$up_a" -v b="$up_b" -v art="$artifacts" -v r="$rate" -v k="$disk" -v m="$((kb / 1024))" -v c="$(echo "$user + $sys" | bc)" -v s="$said" 'BEGIN {
    bps = r * 1e6 / 8; f = d; if (a > f) f = a; if (b > f) f = b; floor = f / bps
    printf "%-9s %6.2f s  floor %5.2f s  wall/floor %.2f  read %6.1f MB = %.3fx the artifacts  up %6.1f + %6.1f MB  disk peak %8.3f MB  RSS %3d MB  CPU %5.2f s  said no-Range: %d",
      n, w, floor, w / floor, d / 1e6, d / art, a / 1e6, b / 1e6, k / 1e6, m, c, s }')")
  echo "${results[-1]}" >&2
}

once ranges
once no-range --no-range
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); links of $rate Mbit/s each way, round trip $rtt ms; artifacts $((artifacts / 1000000)) MB"
printf '%s\n' "${results[@]}"
