# Sourced by demo.sh and test.sh: makes sure the tools they need are here.
# On a fresh Debian or Ubuntu machine it installs them with apt (and rustup).

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "archgate setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 && return 0
  echo "archgate setup: no cargo; installing a stable Rust toolchain with rustup" >&2
  apt_install ca-certificates curl gcc libc6-dev
  if apt-cache show rustup >/dev/null 2>&1; then
    apt_install rustup
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  rustup toolchain install stable --profile minimal --component clippy,rustfmt >/dev/null
  rustup default stable >/dev/null
}
