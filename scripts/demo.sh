#!/usr/bin/env bash
# `make demo`: the main job on the sample scene shipped in scenes/.
set -euo pipefail
cd "$(dirname "$0")/.."
PK="${VENV:-.venv}/bin/prunekit"
"$PK" --version
"$PK" plugins
