#!/usr/bin/env bash
# Installs everything diffasr needs on a fresh Debian machine: apt packages (TTS engines for the
# synthetic corpus, Chromium for the browser test, sox) and the Python package with its pins.
# Usage: bash scripts/setup.sh        (root, or a user allowed to run apt-get through sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
APT_PKGS="espeak-ng flite festival festvox-kallpc16k festival-hi festvox-hi-nsk sox chromium chromium-driver"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
# torch first and pinned: 2.13.0 resolves to the CPU wheel; an unpinned torch pulls a CUDA build.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"
