#!/usr/bin/env bash
# Installs QEMU's Arm system emulator, the virtual board for boards/qemu-mps2-an386.
# Idempotent: does nothing when qemu-system-arm is already on PATH.
# Needs root for apt-get (Debian 12).
set -euo pipefail

if command -v qemu-system-arm >/dev/null; then
    echo "install-qemu: $(qemu-system-arm --version | head -n1) already installed" >&2
    exit 0
fi
if [[ $EUID -ne 0 ]]; then
    echo "install-qemu: ERROR: needs root (apt-get install qemu-system-arm)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the lists only when the package is unknown to them (fresh machine).
if ! apt-cache show qemu-system-arm >/dev/null 2>&1; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends qemu-system-arm >&2
echo "install-qemu: $(qemu-system-arm --version | head -n1) installed" >&2
