#!/usr/bin/env bash
# The publishing benchmark (issue 4): archgate's native engine against the way
# Fedora publishes today (xz -d, skopeo copy oci-archive: per arch and
# repository, buildah manifest create/add/push --all per tag), on the same
# local docker-registry, plus the floor: decompress and sha256 every artifact
# once, in parallel.
#
#   bash bench/run.sh [SIZE_MB] [ARCH_COUNT] [FORM]    (defaults: 150 4 xz)
#   BENCH_NO_BASELINE=1 bash bench/run.sh ...        (archgate only)
#
# FORM xz: each artifact a .oci.tar.xz of three gzip layers; the floor is
# decompressing and hashing every artifact once, in parallel. FORM
# ociarchive: each an uncompressed OCI archive of one gzip layer, as Pungi
# writes bootable containers; the floor is the registry's own ingest of the
# same blobs (each blob POSTed and PUT with curl, the arches in parallel,
# into an empty registry), and hashing the archives is shown beside it.
#
# Needs: docker-registry, skopeo, buildah, xz, GNU time (scripts/test.sh
# installs the first three; apt-get install xz-utils time for the others).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-150}
count=${2:-4}
form=${3:-xz}
arches=(x86_64 aarch64 ppc64le s390x)
arches=("${arches[@]:0:$count}")
work=${BENCH_DIR:-target/bench}
suffix=$([ "$form" = xz ] && echo "" || echo "-$form")
mkdir -p "$work"
work=$(cd "$work" && pwd)
compose="$work/compose-$size-$count$suffix"

cargo build -q --release -p archgate -p archgate-fixtures --bin archgate --bin make-bench
# ARCHGATE=PATH measures another build of archgate (e.g. an older one).
archgate=${ARCHGATE:-$PWD/target/release/archgate}
if [ ! -f "$compose/compose.toml" ]; then
  echo "generating $count artifacts of about $size MB in $compose (once)" >&2
  MAKE_BENCH_FORM=$form target/release/make-bench "$compose" "$size" "${arches[@]}"
fi
case $form in
  xz) files=("$compose"/fedora/*/*.oci.tar.xz) ;;
  ociarchive) files=("$compose"/fedora/*/*.ociarchive) ;;
  *) echo "FORM is xz or ociarchive" >&2; exit 2 ;;
esac

reg_pid=
stop_registry() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  reg_pid=
}
trap 'stop_registry' EXIT
# A fresh, empty registry on a free port; sets $reg.
start_registry() {
  stop_registry
  rm -rf "$work/run/registry"
  mkdir -p "$work/run/registry"
  cat > "$work/run/registry/config.yml" <<YML
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $work/run/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:0}
YML
  REGISTRY_HTTP_ADDR=127.0.0.1:0 docker-registry serve "$work/run/registry/config.yml" > "$work/run/registry/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do
    reg=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/run/registry/log" | sed 's/listening on //') && [ -n "$reg" ] && return 0
    sleep 0.05
  done
  echo "docker-registry did not start" >&2; exit 1
}

# CPU seconds the registry has used since it started.
reg_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$reg_pid/stat"; }

# Each step starts from the same page cache: what the step before wrote is
# on disk first; where the kernel lets us (root, a writable /proc/sys), the
# cache is emptied and then holds only the step's own input ($inputs: files
# or directories, read once beforehand), so a step neither gains from what
# an earlier one left in memory nor pays for evicting it. (At 1.5 GB per
# arch, archives, unpacked blobs and registry storage are 19 GB: more than
# the cache, and without this the floor went from 16 to 31 s between runs.)
inputs=()
fresh_cache() {
  sync
  if [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches 2> /dev/null; then
    [ ${#inputs[@]} -eq 0 ] || find "${inputs[@]}" -type f -exec cat {} + > /dev/null
    cache_note="the page cache emptied before each step, then only its input read into it"
  else
    cache_note="the page cache as the steps before left it (dropping it needs root)"
  fi
}

# measure NAME CMD...: wall seconds and peak RSS (largest process) of CMD.
results=()
measure() {
  local name=$1; shift
  local out="$work/run/time"
  fresh_cache
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$@" > "$work/run/$name.log" 2>&1 || { echo "$name failed, see $work/run/$name.log" >&2; cat "$work/run/$name.log" >&2; exit 1; }
  read -r secs kb user sys < "$out"
  results+=("$(printf '%-28s %8.2f s %8d MB %8.2f CPU s' "$name" "$secs" $((kb / 1024)) "$(echo "$user + $sys" | bc)")")
  echo "${results[-1]}" >&2
}

mkdir -p "$work/run"
inputs=("${files[@]}")
if [ "$form" = xz ]; then
  floor() { for f in "${files[@]}"; do (xz -dc -T1 "$f" | sha256sum > /dev/null) & done; wait; }
  measure "floor (xz -d | sha256)" bash -c "$(declare -f floor); files=(${files[*]}); floor"
else
  hashing() { for f in "${files[@]}"; do sha256sum "$f" > /dev/null & done; wait; }
  measure "hashing the archives" bash -c "$(declare -f hashing); files=(${files[*]}); hashing"
  # The registry's own ingest: every blob of every archive (unpacked
  # beforehand, not timed) POSTed and PUT by curl, the arches at once.
  # (Streaming each from its place in the archive through a pipe instead
  # costs the two cores more than archgate itself: 2.62 s against 2.26 s
  # at 162 MB.)
  blobs="$work/run/blobs"
  rm -rf "$blobs"
  for f in "${files[@]}"; do
    arch=$(basename "$(dirname "$f")")
    mkdir -p "$blobs/$arch"
    tar -xf "$f" -C "$blobs/$arch" blobs
  done
  ingest() {
    local pids=()
    for d in "$blobs"/*; do
      (
        set -e
        for b in "$d"/blobs/sha256/*; do
          loc=$(curl -sS -o /dev/null -D - -X POST "http://$reg/v2/floor/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
          case $loc in http*) ;; *) loc="http://$reg$loc" ;; esac
          sep='?'; case $loc in *\?*) sep='&' ;; esac
          curl -sS -f -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
            --upload-file "$b" "$loc${sep}digest=sha256:$(basename "$b")"
        done
      ) &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
  }
  start_registry
  inputs=("$blobs")
  measure "floor (registry ingest)" bash -c "$(declare -f ingest); blobs=$blobs reg=$reg; ingest"
  results+=("  registry CPU (floor):  $(reg_cpu) s")
  inputs=("${files[@]}")
fi

# archgate: 2 repositories x 2 tags.
# config FILE [EXTRA]: one image to 2 repositories x 2 tags on $reg, EXTRA
# (a table) before the image.
config() {
  cat > "$1" <<TOML
[source]
kind = "dir"
location = "$compose"
[registry."$reg"]
tls-verify = false
${2:-}
[[image]]
name = "fedora"
repositories = ["docker://$reg/fedora", "docker://$reg/mirror/fedora"]
tags = ["{release}", "latest"]
TOML
}
start_registry
config "$work/run/archgate.toml"
export ARCHGATE_CACHE_DIR="$work/run/cache"
rm -rf "$ARCHGATE_CACHE_DIR"
measure "archgate read only (plan)" "$archgate" plan -c "$work/run/archgate.toml"
rm -rf "$ARCHGATE_CACHE_DIR"
count() { grep -c '"[A-Z]* /v2/' "$work/run/registry/log" || true; }
before=$(count)
measure "archgate cold" "$archgate" publish -c "$work/run/archgate.toml"
echo "  registry CPU during the archgate cold publish: $(reg_cpu) s" >&2
results+=("  registry CPU (archgate cold):  $(reg_cpu) s")
n=$(( $(count) - before ))
results+=("  requests (archgate cold, 4 targets): $n, $(echo "scale=1; $n / 4" | bc) per target")
if [ "$form" = ociarchive ]; then
  # The floor and archgate in turns, BENCH_ROUNDS times (default 5), each
  # on a fresh registry: per round the wall ratio (archgate cold over the
  # floor) and the CPU ratio (archgate's CPU seconds over curl's); their
  # medians.
  walls=(); cpus=()
  for round in $(seq "${BENCH_ROUNDS:-5}"); do
    start_registry
    inputs=("$blobs")
    measure "floor, round $round" bash -c "$(declare -f ingest); blobs=$blobs reg=$reg; ingest"
    floor_secs=$secs; floor_cpu=$(echo "$user + $sys" | bc)
    start_registry
    config "$work/run/archgate.toml"
    rm -rf "$ARCHGATE_CACHE_DIR"
    inputs=("${files[@]}")
    measure "archgate cold, round $round" "$archgate" publish -c "$work/run/archgate.toml"
    walls+=("$(echo "scale=3; $secs / $floor_secs" | bc)")
    cpus+=("$(echo "scale=3; ($user + $sys) / $floor_cpu" | bc)")
  done
  median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
  results+=("  archgate cold over the floor, ${#walls[@]} rounds: wall ratios ${walls[*]} (median $(median "${walls[@]}")); CPU ratios to curl ${cpus[*]} (median $(median "${cpus[@]}"))")
  echo "${results[-1]}" >&2
  rm -rf "$blobs"
fi
measure "archgate warm (unchanged)" "$archgate" publish -c "$work/run/archgate.toml"

# The same cold publish, signed ([sign] with the benchmark key of
# fixtures/keys), on a fresh registry, with a cold cache.
start_registry
keys="$PWD/fixtures/keys"
config "$work/run/signed.toml" "[sign]
sigstore-private-key = \"$keys/bench.key\"
passphrase-file = \"$keys/bench.pass\""
rm -rf "$ARCHGATE_CACHE_DIR"
measure "archgate cold, signed" "$archgate" publish -c "$work/run/signed.toml"

if [ -n "${BENCH_NO_BASELINE:-}" ] || [ "$form" != xz ]; then
  echo
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); artifacts: $count x $(du -m "${files[0]}" | cut -f1) MB ($form); $cache_note"
  printf '%s\n' "${results[@]}"
  exit 0
fi

# The skopeo + buildah way, on a fresh registry.
start_registry
storage="$work/run/storage"
mkdir -p "$storage"
cat > "$storage/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$storage/graph"
runroot = "$storage/run"
CONF
export CONTAINERS_STORAGE_CONF="$storage/storage.conf"
baseline() {
  set -e
  local tmp="$work/run/unpacked"; mkdir -p "$tmp"
  for f in "${files[@]}"; do
    arch=$(basename "$(dirname "$f")")
    xz -dc "$f" > "$tmp/$arch.oci.tar"
  done
  for repo in fedora mirror/fedora; do
    for f in "${files[@]}"; do
      arch=$(basename "$(dirname "$f")")
      skopeo copy -q --dest-tls-verify=false "oci-archive:$tmp/$arch.oci.tar" "docker://$reg/$repo:41-$arch"
    done
    for tag in 41 latest; do
      list="bench-list-$$"
      buildah manifest rm "$list" > /dev/null 2>&1 || true
      buildah manifest create "$list" > /dev/null
      for f in "${files[@]}"; do
        arch=$(basename "$(dirname "$f")")
        buildah manifest add --tls-verify=false "$list" "docker://$reg/$repo:41-$arch" > /dev/null
      done
      buildah manifest push -q --all --tls-verify=false "$list" "docker://$reg/$repo:$tag"
      buildah manifest rm "$list" > /dev/null
    done
  done
  rm -rf "$tmp"
}
measure "skopeo+buildah cold" bash -c "$(declare -f baseline); work=$work reg=$reg files=(${files[*]}); baseline"
results+=("  registry CPU (skopeo+buildah cold): $(reg_cpu) s")
measure "skopeo+buildah warm" bash -c "$(declare -f baseline); work=$work reg=$reg files=(${files[*]}); baseline"

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); artifacts: $count x $(du -m "${files[0]}" | cut -f1) MB .oci.tar.xz"
printf '%s\n' "${results[@]}"
