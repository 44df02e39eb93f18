#!/usr/bin/env bash
# System programs the test suite drives for real: Chromium (drawing page), Prometheus (scraping), a Docker
# engine and debootstrap (container images), DejaVu fonts (printed digits); wrk drives bench/.
# Installs what is missing when run as root on Debian; elsewhere says what to install.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v prometheus >/dev/null || need+=(prometheus)
command -v dockerd >/dev/null || need+=(docker.io iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v wrk >/dev/null || need+=(wrk)
# every DejaVu face (core and extra): the synthetic images, and so the shipped card's figures, draw on all 21
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSerifCondensed-Italic.ttf ] || need+=(fonts-dejavu-core fonts-dejavu-extra)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})." >&2
    echo "system-deps: the tests that need them are skipped until then." >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
