#!/usr/bin/env bash
# One-time set-up for `make test` / `make demo`: a .venv with torch (CPU wheel) and
# prunekit installed editable with its extras. Re-runs are a stamp check (no reinstall).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,splat}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
key=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
stamp="$VENV/.prunekit-setup-$key-${EXTRAS//,/_}"
[ -f "$stamp" ] && exit 0

# open3d (prunekit[o3d]) needs libusb; install it when we can (root, Debian).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s libusb-1.0-0 >/dev/null 2>&1; then
  echo "setup: installing Debian package libusb-1.0-0"
  apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1; } \
    || echo "setup: warning: could not install libusb-1.0-0 (only open3d needs it)"
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
# torch first, pinned to the CPU wheel, so nothing later pulls a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || { echo "setup: installing torch"; pip install -q torch==2.13.0; }
echo "setup: installing prunekit[$EXTRAS] (editable)"
pip install -q -e ".[$EXTRAS]"
rm -f "$VENV"/.prunekit-setup-*
touch "$stamp"
echo "setup: done"
