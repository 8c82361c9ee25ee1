#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for `cargo xtask test`. Idempotent: a second run
# only checks. Called by `cargo xtask test` (step `deps`); safe to run by hand.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Debian packages the tests use; each line: package and why.
packages=(
  qemu-system-arm   # the QEMU mps2-an386 virtual board (real firmware binary, end to end)
  iproute2          # ip netns / ip tuntap: the HIL host TAP rig's network namespace
  chromium          # the headless browser of the web console test (broker/tests/console_browser.rs)
  chromium-driver   # its WebDriver server (chromedriver), which the test drives
  python3-venv      # the private venv kosoku (the Autobahn WebSocket cases) is installed into
  mosquitto         # the MQTT broker `cargo xtask bench` measures ours against, side by side
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# kosoku (pinned), the Autobahn WebSocket conformance cases run by broker/tests/ws_autobahn.rs,
# in a private venv under .cache/ (the Autobahn testsuite itself is Python 2 only).
venv="$here/../.cache/autobahn-venv"
if ! [ -x "$venv/bin/kosoku" ] || ! "$venv/bin/pip" show kosoku 2>/dev/null | grep -qx 'Version: 0.1.0'; then
  echo "bootstrap: installing kosoku into .cache/autobahn-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kosoku==0.1.0'
fi

# Pinned cross toolchain for the MCU targets (private prefix under .cache/).
if [ -x "$here/cross-toolchain.sh" ]; then
  "$here/cross-toolchain.sh"
fi
echo "bootstrap: ready"
