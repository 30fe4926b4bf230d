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

# The Python libraries some tests use as real peers (productmd, koji,
# fedora-messaging and fedora-image-uploader-messages, aiosmtpd as a mail
# server): installed into a venv
# under target/, so that neither
# the system's Python nor an externally managed one is touched. Exports
# ARCHGATE_PYTHON, the venv's interpreter, which the tests run.
ensure_python_tools() {
  local venv="$PWD/target/python"
  local check='import productmd, koji, fedora_messaging, fedora_image_uploader_messages, pika, yaml, aiosmtpd'
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    if ! command -v python3 >/dev/null 2>&1; then
      apt_install python3 python3-venv
    fi
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      apt_install python3-venv
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
    echo "archgate setup: installing productmd, koji, fedora-messaging into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check productmd \
      fedora-messaging fedora-image-uploader-messages pyyaml aiosmtpd
    # koji's own dependencies include Kerberos bindings that need headers;
    # what importing it needs is these (requests with its own dependencies).
    "$venv/bin/pip" install -q --disable-pip-version-check requests python-dateutil six defusedxml
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps koji
  fi
  export ARCHGATE_PYTHON="$venv/bin/python"
}
