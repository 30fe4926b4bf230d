#!/usr/bin/env bash
# Publishing through a link whose throughput is the limit: a docker-registry
# behind the delaying proxy, each direction one link of RATE_MBIT shared by
# every connection, plus a round trip of RTT_MS (what a compose host's
# uplink to quay.io is).
#
#   bash bench/link.sh [RATE_MBIT] [RTT_MS] [SIZE_MB]      (defaults: 100 50 7)
#   BENCH_TLS=1 bash bench/link.sh ...   (the registry over TLS, which
#                                         offers HTTP/2, as quay.io does)
#   BENCH_COUNTS=4 BENCH_ROUNDS=1 bash bench/link.sh   (only the 4-image
#                                         publish, once)
#
# Cold publishes, each on a fresh registry: 1 image, then 4 images built
# from the same blobs (as the atomic desktops share theirs), each image of 4
# arches to 2 repositories x 2 tags of one registry. For each: wall time;
# the bytes that must cross (every blob once per registry: what the
# registry stores) and the bytes sent, from the proxy's own count; the
# floor (those bytes at the link's rate) and the two ratios; requests from
# the registry's access log. Needs: docker-registry, xz, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-100}
rtt=${2:-50}
size=${3:-7}
arches=(x86_64 aarch64 ppc64le s390x)
. bench/lib.sh
bench_setup link
built="$work/link-compose-$size"
if [ ! -f "$built/compose.toml" ]; then
  echo "generating an image: 4 artifacts of about $size MB (once)" >&2
  target/release/make-bench "$built" "$size" "${arches[@]}"
fi
compose="$run/compose"
mkdir -p "$compose"
cp "$built/compose.toml" "$compose/"
# Four images from the same blobs: hard-linked copies of one build.
for i in 1 2 3 4; do cp -al "$built/fedora" "$compose/image-$i"; done

# A fresh, empty registry behind the limited link (bench/lib.sh).
start() { start_registry "$run/registry" "$rtt" "$rate"; }

# config FILE IMAGES: IMAGES images of the one build, 2 repositories, 2 tags each.
config() {
  local file=$1 count=$2
  {
    printf '[source]\nkind = "dir"\nlocation = "%s"\n\n[registry."%s"]\ntls-verify = false\n\n' "$compose" "$host"
    for i in $(seq 1 "$count"); do
      printf '[[image]]\nname = "img%s"\nmatch = { dir = "image-%s" }\n' "$i" "$i"
      printf 'repositories = ["docker://%s/img%s", "docker://%s/mirror/img%s"]\n' "$host" "$i" "$host" "$i"
      printf 'tags = ["{release}", "latest"]\n\n'
    done
  } > "$file"
}

up() { sleep 0.1; cut -d' ' -f1 "$stats"; }
results=()
# cold IMAGES: a cold publish of IMAGES images on a fresh registry.
cold() {
  local count=$1 targets=$(($1 * 4))
  start
  config "$run/$count.toml" "$count"
  rm -rf "$run/cache"
  local before; before=$(up)
  ARCHGATE_CACHE_DIR="$run/cache" /usr/bin/time -f '%e %M' -o "$run/time" \
    "$archgate" publish -c "$run/$count.toml" > "$run/$count.log" 2>&1 || {
    echo "publish failed, see $run/$count.log" >&2; tail -20 "$run/$count.log" >&2; exit 1; }
  local secs kb sent needed requests
  read -r secs kb < "$run/time"
  sent=$(( $(up) - before ))
  needed=$(find "$data" -path '*/blobs/sha256/*' -name data -printf '%s\n' | awk '{s += $1} END {print s}')
  requests=$(requests)
  ratios+=("$(awk -v w="$secs" -v b="$needed" -v r="$rate" 'BEGIN { printf "%.3f", w / (b * 8 / (r * 1e6)) }')")
  results+=("$(awk -v n="$count" -v t="$targets" -v w="$secs" -v s="$sent" -v b="$needed" -v r="$rate" -v q="$requests" -v m="$((kb / 1024))" 'BEGIN {
    floor = b * 8 / (r * 1e6)
    printf "%d image(s), %2d targets: %6.2f s  floor %5.2f s  wall/floor %.2f  sent %6.1f MB  must cross %6.1f MB  sent/needed %.3f  %4d requests (%.1f per target)  %3d MB",
      n, t, w, floor, w / floor, s / 1e6, b / 1e6, s / b, q, q / t, m }')")
  echo "${results[-1]}" >&2
}

# Each figure BENCH_ROUNDS times (default 3): the median of wall/floor.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
summary=()
for count in ${BENCH_COUNTS:-1 4}; do
  ratios=()
  for _ in $(seq "${BENCH_ROUNDS:-3}"); do cold "$count"; done
  summary+=("$count image(s): wall/floor ${ratios[*]}, median $(median "${ratios[@]}")")
done
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); link $rate Mbit/s each way, round trip $rtt ms"
printf '%s\n' "${results[@]}" "${summary[@]}"
