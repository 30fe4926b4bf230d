#!/usr/bin/env bash
# The whole test suite, installing what it needs first. .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
# skopeo checks what archgate writes (and with buildah, runs the tools engines);
# docker-registry, htpasswd (apache2-utils) and openssl (a test PKI) serve the
# registry tests; rabbitmq-server gives the service tests a private node (the
# system service is not used); man-db renders the generated man pages;
# python3-venv holds the Python peers (productmd, koji, fedora-messaging);
# gcc links the Rust code; systemd-analyze checks the service's unit, and
# strace and setpriv (util-linux) what the tools engines call under it;
# unshare (util-linux) gives a test its own mount namespace for a FUSE mount.
apt_install skopeo buildah docker-registry apache2-utils openssl rabbitmq-server man-db python3-venv gcc libc6-dev systemd strace util-linux
ensure_cargo
ensure_python_tools
# The generator checks of fixtures/real must run here, not be skipped.
export ARCHGATE_REQUIRE_PYTHON_TOOLS=1
export INSTA_UPDATE=no
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
