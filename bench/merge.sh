#!/usr/bin/env bash
# The CI merge over a network's latency (issue 32): four per-platform
# images already in a registry (pushed by skopeo, as four CI jobs push them
# by digest), merged into one index under 3 tags in the same registry,
# through the delaying proxy of bench/lib.sh (a round trip of RTT_MS):
#   - archgate (the `registry` source, a digests directory): the merge,
#     and its no-op re-run; and a no-op re-run of 300 tags
#   - buildah manifest create / add (by digest) / push --all, once per tag
# Requests are counted from the registry's access log.
#
#   bash bench/merge.sh [RTT_MS]        (default 50)
# Needs: docker-registry, skopeo, buildah, xz, GNU time, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-50}
arches=(x86_64 aarch64 ppc64le s390x)
. bench/lib.sh
bench_setup merge
src="$work/merge-compose"
if [ ! -f "$src/compose.toml" ]; then
  echo "generating 4 images of about 1 MB (once)" >&2
  MAKE_BENCH_SEED=7 target/release/make-bench "$src" 1 "${arches[@]}"
fi

results=()
measure() {
  local name=$1 targets=$2; shift 2
  local before; before=$(requests)
  /usr/bin/time -f '%e %M' -o "$run/time" "$@" > "$run/${name// /-}.log" 2>&1 || {
    echo "$name failed, see $run/${name// /-}.log" >&2; tail -20 "$run/${name// /-}.log" >&2; exit 1; }
  local secs kb after n
  read -r secs kb < "$run/time"
  after=$(requests)
  n=$((after - before))
  results+=("$(printf '%-40s %7.2f s  %5d requests  %6.2f per tag  %4d MB' "$name ($targets tags)" "$secs" "$n" "$(echo "$n / $targets" | bc -l)" $((kb / 1024)))")
  echo "${results[-1]}" >&2
}

# A fresh registry; the four platform images pushed straight to it (not
# through the proxy: that is the build jobs' part, not the merge's).
start_registry "$run/registry" "$rtt"
digests="$run/digests"; mkdir -p "$digests"
for a in "${arches[@]}"; do
  xz -dc "$src/fedora/$a/"*.oci.tar.xz > "$run/$a.oci.tar"
  skopeo copy -q --dest-tls-verify=false --digestfile "$run/digest" "oci-archive:$run/$a.oci.tar" "docker://$reg/ci/app:build-$a"
  : > "$digests/$(cut -d: -f2 "$run/digest")"
done

config() { # FILE TAGS...
  local file=$1; shift
  local tags; tags=$(printf '"%s", ' "$@"); tags="[${tags%, }]"
  printf '[source]\nkind = "registry"\nlocation = "%s"\nrepository = "%s/ci/app"\narches = ["x86_64", "aarch64", "ppc64le", "s390x"]\n\n[registry."%s"]\ntls-verify = false\n\n[[image]]\nname = "app"\nrepositories = ["docker://%s/app"]\ntags = %s\n' \
    "$digests" "$host" "$host" "$host" "$tags" > "$file"
}
config "$run/3.toml" 1.0 1 latest
measure "archgate merge" 3 "$archgate" publish -c "$run/3.toml" --build-id 1
measure "archgate no-op re-run" 3 "$archgate" publish -c "$run/3.toml" --build-id 1
mapfile -t many < <(seq -f 't%g' 1 300)
config "$run/300.toml" "${many[@]}"
"$archgate" publish -c "$run/300.toml" --build-id 1 > "$run/300-first.log" 2>&1
measure "archgate no-op re-run" 300 "$archgate" publish -c "$run/300.toml" --build-id 1

storage="$run/storage"; mkdir -p "$storage"
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$storage" "$storage" > "$storage/storage.conf"
export CONTAINERS_STORAGE_CONF="$storage/storage.conf"
baseline() {
  set -e
  buildah manifest rm merge-list > /dev/null 2>&1 || true
  buildah manifest create merge-list > /dev/null
  for d in "$digests"/*; do
    buildah manifest add --tls-verify=false merge-list "docker://$host/ci/app@sha256:${d##*/}" > /dev/null
  done
  for tag in 1.0 1 latest; do
    buildah manifest push -q --all --tls-verify=false merge-list "docker://$host/app-buildah:$tag"
  done
  buildah manifest rm merge-list > /dev/null
}
export -f baseline
export host digests
measure "buildah manifest create, add, push" 3 bash -c baseline
measure "buildah manifest, again" 3 bash -c baseline

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); round trip $rtt ms; 4 platform images of about 1 MB"
printf '%s\n' "${results[@]}"
