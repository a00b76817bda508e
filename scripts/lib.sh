# Shared helpers of the project's scripts. Sourced, not run.

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# Installs Debian packages, running `apt-get update` once first.
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q >/dev/null
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Puts cargo's bin directory on PATH (where `cargo install` puts binaries).
cargo_bin_on_path() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
}

# protoc: etcd-client and our own protos are compiled with it.
ensure_protoc() {
    if ! command -v protoc >/dev/null 2>&1; then
        echo "installing protoc (protobuf-compiler)" >&2
        apt_install protobuf-compiler libprotobuf-dev
    fi
}
