#!/usr/bin/env bash
# Sets up the pinned cross toolchain that builds board firmware for MCU targets.
#
# Why: rustup here only has the host standard library and cannot download targets,
# so MCU targets need `-Zbuild-std`, which needs library source matching the
# compiler release exactly. Debian ships both (rustc-web + rust-web-src). We
# extract them with `apt-get download` + `dpkg-deb -x` into a private prefix under
# the project's cache folder: nothing is installed system-wide.
#
# Usage: scripts/cross-toolchain.sh
#   Logs go to stderr. On success stdout holds exactly the environment cargo
#   needs, one KEY=VALUE per line (RUSTC, LD_LIBRARY_PATH, RUSTC_BOOTSTRAP,
#   CROSS_TOOLCHAIN_PREFIX, CLIPPY_DRIVER). `cargo xtask cross` reads it; in a
#   shell: eval "$(scripts/cross-toolchain.sh | sed 's/^/export /')".
# Idempotent: a stamp file makes the second run instant.
# Needs root (apt-get update) only when the pinned packages are not in the lists.
set -euo pipefail

# The pinned packages. They must be bumped TOGETHER: the Rust packages share one
# version (rust-web-clippy gives clippy-driver for lint runs on MCU targets),
# libllvm22 is the LLVM that libstd-rust-web-<series> links against.
RUST_VERSION='1.96.0+dfsg1-1~deb12u2'
RUST_SERIES='1.96'
LLVM_PACKAGE='libllvm22'
LLVM_VERSION='1:22.1.8-1~deb12u1'
RUST_PACKAGES=(rustc-web "libstd-rust-web-${RUST_SERIES}" libstd-rust-web-dev rust-web-src rust-web-clippy)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${CROSS_TOOLCHAIN_DIR:-$ROOT/.cache/cross-toolchain}/${RUST_VERSION}"
STAMP="$PREFIX/.stamp"
STAMP_CONTENT="${RUST_PACKAGES[*]} ${RUST_VERSION} ${LLVM_PACKAGE}=${LLVM_VERSION}"
LIBDIR="$PREFIX/usr/lib/x86_64-linux-gnu"
HOST_RUSTLIB_BIN="$PREFIX/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin"

log() { echo "cross-toolchain: $*" >&2; }

print_env() {
    echo "RUSTC=$PREFIX/usr/bin/rustc"
    echo "LD_LIBRARY_PATH=$LIBDIR"
    echo "RUSTC_BOOTSTRAP=1"
    echo "CROSS_TOOLCHAIN_PREFIX=$PREFIX"
    echo "CLIPPY_DRIVER=$PREFIX/usr/bin/clippy-driver"
}

pinned_specs() {
    local p
    for p in "${RUST_PACKAGES[@]}"; do echo "$p=$RUST_VERSION"; done
    echo "$LLVM_PACKAGE=$LLVM_VERSION"
}

# rust-lld from the rustup stable toolchain (Debian's rustc ships none).
find_rust_lld() {
    local sysroot
    sysroot="$(rustup run stable rustc --print sysroot 2>/dev/null || true)"
    if [[ -n "$sysroot" && -x "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" ]]; then
        echo "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
        return 0
    fi
    return 1
}

link_rust_lld() {
    local lld
    if ! lld="$(find_rust_lld)"; then
        log "ERROR: no rust-lld in the rustup 'stable' toolchain (lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld)."
        exit 1
    fi
    mkdir -p "$HOST_RUSTLIB_BIN"
    ln -sfn "$lld" "$HOST_RUSTLIB_BIN/rust-lld"
}

toolchain_works() {
    LD_LIBRARY_PATH="$LIBDIR" "$PREFIX/usr/bin/rustc" --version >/dev/null 2>&1
}

# Fast path: already set up for exactly this pin.
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_CONTENT" ]] && toolchain_works; then
    # Re-point rust-lld in case rustup's stable toolchain moved.
    [[ -x "$HOST_RUSTLIB_BIN/rust-lld" ]] || link_rust_lld
    print_env
    exit 0
fi

for tool in apt-get apt-cache dpkg-deb rustup; do
    command -v "$tool" >/dev/null || { log "ERROR: '$tool' not found (this script expects Debian 12 with rustup)."; exit 1; }
done

# `apt-cache show pkg=ver` can exit 0 for a missing version: look for a record.
spec_available() {
    # No `grep -q`: it exits at the first match, apt-cache then dies of SIGPIPE and, under
    # pipefail, the whole pipeline reports failure for a package that is there.
    apt-cache show "$1" 2>/dev/null | grep "^Package:" >/dev/null
}

all_pinned_available() {
    local spec
    while read -r spec; do
        spec_available "$spec" || return 1
    done < <(pinned_specs)
}

if ! all_pinned_available; then
    log "pinned packages not in the apt lists; running apt-get update"
    if [[ $EUID -ne 0 ]]; then
        log "ERROR: apt-get update needs root; run this script as root once."
        exit 1
    fi
    apt-get update -qq >&2
fi

if ! all_pinned_available; then
    {
        echo "cross-toolchain: ERROR: a pinned package version is no longer available from apt."
        echo "  Missing:"
        while read -r spec; do
            spec_available "$spec" || echo "    $spec"
        done < <(pinned_specs)
        echo "  Available now:"
        for p in "${RUST_PACKAGES[@]}" "$LLVM_PACKAGE"; do
            echo "    $p: $(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        done
        echo "  Bump these TOGETHER in scripts/cross-toolchain.sh: RUST_VERSION (rustc-web,"
        echo "  libstd-rust-web-<series>, libstd-rust-web-dev, rust-web-src, rust-web-clippy), RUST_SERIES if the"
        echo "  release changed, and LLVM_PACKAGE/LLVM_VERSION to what libstd-rust-web-<series> depends on"
        echo "  (apt-cache show libstd-rust-web-<series>=<version> | grep Depends)."
        echo "  A new rustc release may need crate version bumps in boards/*/Cargo.lock."
    } >&2
    exit 1
fi

log "setting up Rust ${RUST_VERSION} in $PREFIX"
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
DEBS="$PREFIX/.debs"
mkdir -p "$DEBS"
chmod 777 "$DEBS" # apt's download sandbox user (_apt) writes here
mapfile -t SPECS < <(pinned_specs)
(cd "$DEBS" && apt-get download -q "${SPECS[@]}" >&2)
for deb in "$DEBS"/*.deb; do
    log "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$PREFIX"
done
rm -rf "$DEBS"

# Trim the source tree: build-std needs only library/ (and its vendored deps);
# the compiler and test sources are most of the size.
for src in "$PREFIX"/usr/src/rustc-*; do
    [[ -d "$src" ]] || continue
    rm -rf "$src/src" "$src/compiler" "$src/tests"
done

if [[ ! -e "$PREFIX/usr/lib/rustlib/src/rust/library/core" ]]; then
    log "ERROR: the extracted sysroot has no lib/rustlib/src/rust/library/core (rust-web-src layout changed?)"
    exit 1
fi

link_rust_lld

if ! toolchain_works; then
    log "ERROR: the extracted rustc does not run:"
    LD_LIBRARY_PATH="$LIBDIR" "$PREFIX/usr/bin/rustc" --version >&2 || true
    exit 1
fi

echo "$STAMP_CONTENT" >"$STAMP"
log "ready: $(LD_LIBRARY_PATH="$LIBDIR" "$PREFIX/usr/bin/rustc" --version) ($(du -sh "$PREFIX" | cut -f1))"
print_env
