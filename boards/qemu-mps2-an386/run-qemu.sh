#!/usr/bin/env bash
# Cargo runner for this board: boots an ELF on QEMU's mps2-an386 with its
# LAN9118 on QEMU's user-mode network (guest 10.0.2.15, host loopback = 10.0.2.2).
# defmt logs arrive on QEMU's stdout over semihosting and are decoded as they come, one line per
# log and its source location, by the project's own decoder (hil-tests/defmt-log, the one the HIL
# harness uses), built here with cargo on first use (about a minute; a debug build, the one the
# host tests already made) into the project's target/defmt-log; nothing needs installing. DEFMT_RAW=1 writes the raw frames instead.
# The firmware's semihosting exit code becomes this script's exit status.
# Extra QEMU arguments: QEMU_EXTRA_ARGS (e.g. "-nic tap,ifname=tap0,script=no,downscript=no,model=lan9118"
# together with QEMU_NIC=none to replace the user-mode NIC).
# Provisioning of the `plug` binary: PLUG_RECORD=<record file> (`broker device-key --record`) is
# loaded at 0x01000000 and PLUG_BOOT=<boot number> into the companion word at 0x01000400; use a
# new boot number for every boot of one record (QEMU keeps nothing across boots, and the
# board's nonces derive from the record's seed and this number; docs/boards.md).
# Persistence: PLUG_FLASH=<host file> is the board's emulated flash (created erased when missing)
# where the `plug` binary counts its own boots and keeps its since_id across QEMU restarts;
# then PLUG_BOOT is optional (when given, the boot number is at least PLUG_BOOT). Delete the
# file to wipe it. PLUG_CMDLINE adds run options (`KEY=VALUE` words, e.g. PLUG_EXIT_AFTER_S=30).
set -euo pipefail
elf="${1:?usage: run-qemu.sh FIRMWARE.elf}"
nic=(-nic "${QEMU_NIC:-user,model=lan9118}")
[[ "${QEMU_NIC:-}" == none ]] && nic=()
# shellcheck disable=SC2206 # word splitting of the extra arguments is intended
extra=(${QEMU_EXTRA_ARGS:-})
if [[ -n "${PLUG_RECORD:-}" ]]; then
    extra+=(-device "loader,file=${PLUG_RECORD},addr=0x01000000,force-raw=on")
fi
if [[ -n "${PLUG_BOOT:-}" ]]; then
    # "PBOT" (0x544F4250, little-endian) in the low word, the boot number in the high word.
    extra+=(-device "loader,addr=0x01000400,data=$(( (PLUG_BOOT << 32) | 0x544F4250 )),data-len=8")
fi
cmdline="${PLUG_CMDLINE:-}"
if [[ -n "${PLUG_FLASH:-}" ]]; then
    cmdline="PLUG_FLASH=${PLUG_FLASH} ${cmdline}"
fi
if [[ -n "${cmdline// /}" ]]; then
    extra+=(-append "$cmdline")
fi
qemu=(qemu-system-arm -M mps2-an386 -cpu cortex-m4 -display none -monitor none -serial none
      -semihosting-config enable=on,target=native "${nic[@]}" "${extra[@]}" -kernel "$elf")
# The decoder is a host tool: build it with the project's host toolchain (rust-toolchain.toml),
# not the cross compiler `cargo xtask cross env` exports for the board, and from its own folder
# so the board's .cargo/config.toml (target, build-std) does not apply. Same folder and
# toolchain as `cargo xtask hil`, so either build serves both.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
decoder_dir="$root/hil-tests/defmt-log"
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
decoder_target="$target_dir/defmt-log"
decoder="$decoder_target/debug/defmt-log"
build_decoder() {
    (cd "$decoder_dir" &&
        env -u RUSTC -u RUSTC_BOOTSTRAP -u RUSTC_WRAPPER -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
            -u CARGO_BUILD_TARGET -u LD_LIBRARY_PATH CARGO_TARGET_DIR="$decoder_target" \
            cargo build --quiet --locked >&2)
}
if [[ "${DEFMT_RAW:-0}" == 1 ]]; then
    exec "${qemu[@]}"
fi
[[ -x "$decoder" ]] ||
    echo "run-qemu.sh: building the defmt decoder (hil-tests/defmt-log; first run only, about a minute)" >&2
if ! build_decoder; then
    echo "run-qemu.sh: cannot build the defmt decoder (above); writing raw defmt frames" >&2
    exec "${qemu[@]}"
fi
set +e
"${qemu[@]}" | "$decoder" --locations "$elf"
status=("${PIPESTATUS[@]}")
# The firmware's verdict is QEMU's status; a decoder failure only matters if QEMU passed.
[[ "${status[0]}" -ne 0 ]] && exit "${status[0]}"
exit "${status[1]}"
