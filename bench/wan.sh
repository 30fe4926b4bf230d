#!/usr/bin/env bash
# The benchmark over a real network's latency: a docker-registry behind a
# TCP proxy on 127.0.0.1 that delays every chunk both ways (a round trip of
# RTT_MS, throughput not limited), as a release engineer's host sees quay.io.
#
#   bash bench/wan.sh [RTT_MS] [SIZE_MB]          (defaults: 50 5)
#   BENCH_NO_BASELINE=1 bash bench/wan.sh         (archgate only: no skopeo + buildah)
#   BENCH_ROUNDS=5 bash bench/wan.sh              (rounds of the cold publishes; default 3)
#
# Measures, with requests counted from the registry's access log:
#   - archgate cold publish of 12 targets (2 images x 2 repositories x 3 tags),
#     without the delay, with it, and signed with it, in rounds: what latency
#     and signing add in each round, and their medians
#   - archgate warm re-run of those 12, and of 60 targets (10 images x 2
#     repositories x 3 tags), all unchanged
#   - the skopeo + buildah way through the same proxy, cold and warm, 12 targets
# Each image has 4 arches. Needs: docker-registry, skopeo, buildah, xz, GNU
# time (scripts/test.sh installs the first three).
set -euo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-50}
size=${2:-5}
arches=(x86_64 aarch64 ppc64le s390x)
. bench/lib.sh
bench_setup wan
for seed in 1 2; do
  dir="$work/wan-compose-$size-$seed"
  if [ ! -f "$dir/compose.toml" ]; then
    echo "generating image $seed: 4 artifacts of about $size MB (once)" >&2
    MAKE_BENCH_SEED=$seed target/release/make-bench "$dir" "$size" "${arches[@]}"
  fi
done
# One dir compose with two different images.
compose="$run/compose"
mkdir -p "$compose"
cp "$work/wan-compose-$size-1/compose.toml" "$compose/"
# (Hard-linked copies: a symbolic link out of a compose is refused.)
cp -al "$work/wan-compose-$size-1/fedora" "$compose/image-1"
cp -al "$work/wan-compose-$size-2/fedora" "$compose/image-2"

# A fresh, empty registry behind the delaying proxy (bench/lib.sh).
start() { start_registry "$run/registry" "$rtt"; }

results=()
# measure NAME TARGETS CMD...: wall seconds, requests, requests per target, peak RSS.
measure() {
  local name=$1 targets=$2; shift 2
  local before; before=$(requests)
  /usr/bin/time -f '%e %M' -o "$run/time" "$@" > "$run/$name.log" 2>&1 || {
    echo "$name failed, see $run/$name.log" >&2; tail -20 "$run/$name.log" >&2; exit 1; }
  local kb after n
  read -r secs kb < "$run/time"
  after=$(requests)
  n=$((after - before))
  results+=("$(printf '%-34s %7.2f s  %5d requests  %5.2f per target  %4d MB' "$name ($targets targets)" "$secs" "$n" "$(echo "$n / $targets" | bc -l)" $((kb / 1024)))")
  echo "${results[-1]}" >&2
}

# config FILE IMAGES: IMAGES images over the two builds, 2 repositories, 3 tags each.
config() {
  local file=$1 count=$2
  {
    printf '[source]\nkind = "dir"\nlocation = "%s"\n\n[registry."%s"]\ntls-verify = false\n\n' "$compose" "$host"
    for i in $(seq 1 "$count"); do
      printf '[[image]]\nname = "img%s"\nmatch = { dir = "image-%s" }\n' "$i" $(( (i - 1) % 2 + 1 ))
      printf 'repositories = ["docker://%s/img%s", "docker://%s/mirror/img%s"]\n' "$host" "$i" "$host" "$i"
      printf 'tags = ["{release}", "latest", "stable"]\n\n'
    done
  } > "$file"
}

export ARCHGATE_CACHE_DIR="$run/cache"
keys="$PWD/fixtures/keys"
# median V...: the middle value (the mean of the two middle ones).
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# BENCH_ROUNDS rounds (default 3), each on fresh registries, one after the
# other: the cold publish without the delay (the proxy in place, 0 ms),
# with it, and signed with it. What latency and signing add is taken in
# each round (its runs are minutes apart at most), and their medians.
latency=(); signing=()
for round in $(seq "${BENCH_ROUNDS:-3}"); do
  start_registry "$run/registry" 0
  config "$run/12.toml" 2
  rm -rf "$ARCHGATE_CACHE_DIR"
  measure "archgate cold publish, no delay" 12 "$archgate" publish -c "$run/12.toml"
  undelayed=$secs
  start
  config "$run/12.toml" 2
  rm -rf "$ARCHGATE_CACHE_DIR"
  measure "archgate cold publish" 12 "$archgate" publish -c "$run/12.toml"
  cold=$secs
  if [ "$round" = 1 ]; then
    measure "archgate warm re-run" 12 "$archgate" publish -c "$run/12.toml"
    config "$run/60.toml" 10
    "$archgate" publish -c "$run/60.toml" > "$run/60-first.log" 2>&1
    measure "archgate warm re-run" 60 "$archgate" publish -c "$run/60.toml"
  fi
  # Signed ([sign] with the benchmark key of fixtures/keys): a cold publish
  # of the 12 targets on a fresh registry (every arch manifest and index
  # signed before its tag), and (once) its warm re-run.
  start
  config "$run/signed.toml" 2
  printf '[sign]\nsigstore-private-key = "%s/bench.key"\npassphrase-file = "%s/bench.pass"\n' "$keys" "$keys" >> "$run/signed.toml"
  rm -rf "$ARCHGATE_CACHE_DIR"
  measure "archgate cold publish, signed" 12 "$archgate" publish -c "$run/signed.toml"
  secs_signed=$secs
  if [ "$round" = 1 ]; then
    measure "archgate warm re-run, signed" 12 "$archgate" publish -c "$run/signed.toml"
  fi
  latency+=("$(printf '%.2f' "$(echo "$cold - $undelayed" | bc)")")
  signing+=("$(printf '%.2f' "$(echo "$secs_signed - $cold" | bc)")")
  results+=("  round $round: latency adds ${latency[-1]} s; signing adds ${signing[-1]} s")
  echo "${results[-1]}" >&2
done
results+=("  latency adds to the cold publish: median $(printf '%.2f' "$(median "${latency[@]}")") s (${latency[*]}); signing adds: median $(printf '%.2f' "$(median "${signing[@]}")") s (${signing[*]})")

if [ -n "${BENCH_NO_BASELINE:-}" ]; then
  echo
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); round trip $rtt ms"
  printf '%s\n' "${results[@]}"
  exit 0
fi

# The skopeo + buildah way, through the same proxy, on a fresh registry.
start
storage="$run/storage"
mkdir -p "$storage"
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$storage" "$storage" > "$storage/storage.conf"
export CONTAINERS_STORAGE_CONF="$storage/storage.conf"
baseline() {
  set -e
  local tmp="$run/unpacked"; mkdir -p "$tmp"
  for img in 1 2; do
    for a in "${arches[@]}"; do
      [ -f "$tmp/$img-$a.oci.tar" ] || xz -dc "$compose/image-$img/$a/"*.oci.tar.xz > "$tmp/$img-$a.oci.tar"
    done
    for repo in "img$img" "mirror/img$img"; do
      for a in "${arches[@]}"; do
        skopeo copy -q --dest-tls-verify=false "oci-archive:$tmp/$img-$a.oci.tar" "docker://$host/$repo:41-$a"
      done
      for tag in 41 latest stable; do
        list="bench-list-$$"
        buildah manifest rm "$list" > /dev/null 2>&1 || true
        buildah manifest create "$list" > /dev/null
        for a in "${arches[@]}"; do
          buildah manifest add --tls-verify=false "$list" "docker://$host/$repo:41-$a" > /dev/null
        done
        buildah manifest push -q --all --tls-verify=false "$list" "docker://$host/$repo:$tag"
        buildah manifest rm "$list" > /dev/null
      done
    done
  done
}
export -f baseline
export run host compose
arches_list="${arches[*]}"
measure "skopeo+buildah cold" 12 bash -c "arches=($arches_list); baseline"
measure "skopeo+buildah warm" 12 bash -c "arches=($arches_list); baseline"

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); round trip $rtt ms; artifacts: 2 images x 4 arches x $(du -mL "$compose/image-1/x86_64/"*.oci.tar.xz | cut -f1) MB .oci.tar.xz"
printf '%s\n' "${results[@]}"
