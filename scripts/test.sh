#!/usr/bin/env bash
# The whole test suite, installing what it needs first. .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
# skopeo checks what archgate writes (and with buildah, runs the tools engines);
# docker-registry, htpasswd (apache2-utils)
# and openssl serve the registry tests; gcc links the Rust code.
apt_install skopeo buildah docker-registry apache2-utils openssl gcc libc6-dev
ensure_cargo
ensure_python_tools
# The generator checks of fixtures/real must run here, not be skipped.
export ARCHGATE_REQUIRE_PYTHON_TOOLS=1
export INSTA_UPDATE=no
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
