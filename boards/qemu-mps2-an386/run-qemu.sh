#!/usr/bin/env bash
# Cargo runner for this board: boots an ELF on QEMU's mps2-an386 with its
# LAN9118 on QEMU's user-mode network (guest 10.0.2.15, host loopback = 10.0.2.2).
# defmt logs arrive on QEMU's stdout over semihosting; when `defmt-print` is
# installed they are decoded, otherwise the raw frames are written as they come.
# The firmware's semihosting exit code becomes this script's exit status.
# Extra QEMU arguments: QEMU_EXTRA_ARGS (e.g. "-nic tap,ifname=tap0,script=no,downscript=no,model=lan9118"
# together with QEMU_NIC=none to replace the user-mode NIC).
set -euo pipefail
elf="${1:?usage: run-qemu.sh FIRMWARE.elf}"
nic=(-nic "${QEMU_NIC:-user,model=lan9118}")
[[ "${QEMU_NIC:-}" == none ]] && nic=()
# shellcheck disable=SC2206 # word splitting of the extra arguments is intended
extra=(${QEMU_EXTRA_ARGS:-})
qemu=(qemu-system-arm -M mps2-an386 -cpu cortex-m4 -display none -monitor none -serial none
      -semihosting-config enable=on,target=native "${nic[@]}" "${extra[@]}" -kernel "$elf")
if command -v defmt-print >/dev/null && [[ "${DEFMT_RAW:-0}" != 1 ]]; then
    set +e
    "${qemu[@]}" | defmt-print -e "$elf"
    status=("${PIPESTATUS[@]}")
    # The firmware's verdict is QEMU's status; a decoder failure only matters if QEMU passed.
    [[ "${status[0]}" -ne 0 ]] && exit "${status[0]}"
    exit "${status[1]}"
else
    exec "${qemu[@]}"
fi
