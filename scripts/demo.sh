#!/usr/bin/env bash
# `make demo`: prune the shipped sample scene (scenes/cow.ply, made by
# scripts/make_sample_scene.py from the public-domain Spot cow) with SUNDAE and RadSplat,
# print the reports, and write before/after images under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
PK="${VENV:-.venv}/bin/prunekit"
SCENE=scenes/cow.ply
CAMS=scenes/cow_cameras.json
mkdir -p out/demo
"$PK" --version
"$PK" plugins
"$PK" info "$SCENE"
echo
echo "== SUNDAE, keep 10%, with merge (no cameras needed) =="
"$PK" prune "$SCENE" -m sundae --keep 0.1 --merge -o out/demo/cow_sundae.ply --report out/demo/sundae
echo
echo "== RadSplat, keep 10%, scored over the scene's cameras, with merge =="
"$PK" prune "$SCENE" -m radsplat --keep 0.1 --cameras "$CAMS" --merge -o out/demo/cow_radsplat.ply --report out/demo/radsplat
echo
echo "== quality of each against the original (held-out views) =="
"$PK" eval "$SCENE" out/demo/cow_sundae.ply
"$PK" eval "$SCENE" out/demo/cow_radsplat.ply
echo
echo "before/after images: out/demo/sundae/before_after.png, out/demo/radsplat/before_after.png"
