#!/usr/bin/env bash
# One-time set-up for `make test` / `make demo`: a .venv with prunekit installed editable
# with the extras that `make test` covers. Re-runs are a stamp check (no reinstall).
#
# EXTRAS (default: everything the test suite covers) is a comma list of pyproject extras.
# Two facts shape the install (see README "Set-up"):
#  * nerfstudio 1.1.5 pulls torchvision, which forces torch 2.14.1 (a CUDA build that runs
#    on CPU); without nerfstudio we install the torch 2.13.0 CPU wheel first instead.
#  * nerfstudio pins protobuf<=3.20.3 while Flower 1.42 needs protobuf>=5.28; one resolver
#    run fails or backtracks to an old Flower. Both run with protobuf 6, so Flower is
#    installed in a second step (pip then warns about nerfstudio's pin; that is expected).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,splat,gsplat,nerfstudio,diffusion,tokens,hashgrid,voxel,federated}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
key=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
stamp="$VENV/.prunekit-setup-$key-${EXTRAS//,/_}"
[ -f "$stamp" ] && exit 0

has_extra() { [[ ",$EXTRAS," == *",$1,"* ]]; }

# open3d (pulled in by nerfstudio, or prunekit[o3d]) needs libusb; install it when we can (root, Debian).
if { has_extra o3d || has_extra nerfstudio; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s libusb-1.0-0 >/dev/null 2>&1; then
  echo "setup: installing Debian package libusb-1.0-0"
  apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1; } \
    || echo "setup: warning: could not install libusb-1.0-0 (only open3d needs it)"
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
if ! has_extra nerfstudio; then
  # torch first, pinned to the CPU wheel, so nothing later pulls a multi-GB CUDA build.
  "$VENV/bin/python" -c "import torch" 2>/dev/null || { echo "setup: installing torch"; pip install -q torch==2.13.0; }
fi
main=${EXTRAS//,federated/}; main=${main//federated,/}
echo "setup: installing prunekit[$main] (editable)"
pip install -q -e ".[$main]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import prunekit" || { echo "setup: prunekit install failed" >&2; exit 1; }
if has_extra federated; then
  echo "setup: installing the federated extra (Flower) in a second step"
  pip install -q -e ".[federated]" 2>&1 \
    | grep -v -e "^WARNING: Location" -e "nerfstudio .* requires protobuf" -e "dependency resolver does not currently" || true
  "$VENV/bin/python" -c "import flwr" || { echo "setup: Flower install failed" >&2; exit 1; }
  # nerfstudio's jupyter extras pull rfc3987-syntax, whose import (via jsonschema, in every Ray
  # agent) is slow enough on a busy 2-core machine that Ray's raylet times out at start-up.
  # Nothing of ours uses it.
  pip uninstall -y -q rfc3987-syntax >/dev/null 2>&1 || true
fi
rm -f "$VENV"/.prunekit-setup-*
touch "$stamp"
echo "setup: done"
