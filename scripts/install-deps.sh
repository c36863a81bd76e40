#!/usr/bin/env bash
# Installs the system packages punktfunk needs to build and test, on Debian/Ubuntu.
# Idempotent: installs only what is missing. As non-root, or on another distribution, it
# prints the packages to install and exits non-zero.
set -euo pipefail

# Build: a C toolchain for ring's assembly, pkg-config for -sys crates.
PACKAGES=(build-essential pkg-config ca-certificates)
# Video: FFmpeg's libraries and headers (ffmpeg-next binds them; bindgen needs libclang) and the
# software encoders punktfunk uses (x264, x265, SVT-AV1 come with Debian's libavcodec).
PACKAGES+=(clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev)
# Audio: libopus (the opus crate links the system library found through pkg-config).
PACKAGES+=(libopus-dev)
# Benchmarks: a veth pair into a network namespace stands in for a NIC (iproute2, ethtool).
PACKAGES+=(iproute2 ethtool)
# Desktop (sway/wlroots): sway runs headless in the tests and the demo; libxkbcommon compiles the
# virtual keyboard's keymap (the xkbcommon crate links it) from xkb-data's rules; setpriv (util-linux)
# runs sway as an unprivileged user when the tests run as root; swaybg paints solid output
# backgrounds the capture tests check pixel by pixel.
PACKAGES+=(sway swaybg libxkbcommon-dev xkb-data util-linux)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install a Rust toolchain (https://rustup.rs), then re-run" >&2
    exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all system packages present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: not a Debian/Ubuntu system; install the equivalents of: ${missing[*]}" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root, or install them yourself:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
