#!/usr/bin/env bash
# The bundled demo: one image, two composes, published to an OCI layout
# (no registry needed). Compose 1 built everything and is published;
# compose 2 lost aarch64, and the gate refuses to drop it from the index.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ensure_cargo
cargo build -q -p archgate
archgate=target/debug/archgate
demo=fixtures/demo
rm -rf "$demo/out"

echo "== archgate publish: compose 1 (x86_64 and aarch64 built)"
"$archgate" publish -c "$demo/archgate.toml" --compose "$demo/compose-1"

echo
echo "== archgate publish: compose 2 (aarch64 failed)"
set +e
"$archgate" publish -c "$demo/archgate.toml" --compose "$demo/compose-2"
rc=$?
set -e
echo "(exit code $rc: 3 means a target was refused by the gate)"
[ "$rc" -eq 3 ] || exit 1

echo
echo "== archgate inspect: the index still serves both arches"
"$archgate" inspect "oci:$demo/out/fedora:41"
