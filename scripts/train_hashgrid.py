#!/usr/bin/env python
"""Train a hash-grid NeRF on CPU or CUDA (dense, HollowNeRF or occupancy-grid culled) and save a checkpoint.

    python scripts/train_hashgrid.py --scene synthetic --mode hollow --target 0.1 -o out/hollow.safetensors
    python scripts/train_hashgrid.py --scene ../shared/data/fox --downscale 10 --mode hollow -o out/fox.safetensors
    python scripts/train_hashgrid.py --scene ../shared/data/fox --downscale 2 --log2-table 19 --levels 16 \
        --max-res 2048 --batch-rays 8192 --device cuda -o out/fox-gpu.safetensors

Every 8th view is held out; the held-out PSNR is printed (and stored in the checkpoint's metadata).
Then: ``prunekit prune out/hollow.safetensors -m hollownerf --threshold 0 -o out/hollow-compact.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--scene", default="synthetic", help="'synthetic' or a transforms.json (or its folder)")
    ap.add_argument("--mode", choices=["dense", "hollow", "occgrid"], default="hollow")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-rays", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--target", type=float, default=0.1, help="HollowNeRF: fraction of saliency cells kept")
    ap.add_argument("--saliency-res", type=int, default=32)
    ap.add_argument("--dilate", type=int, default=0, help="HollowNeRF, ours: grow the frozen mask by this many cells")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--max-res", type=int, default=256)
    ap.add_argument("--log2-table", type=int, default=14)
    ap.add_argument("--table-size", type=int, default=None, help="rows per level (overrides --log2-table)")
    ap.add_argument("--res", type=int, default=48, help="synthetic scene: image side in pixels")
    ap.add_argument("--downscale", type=int, default=10, help="real captures: image downscale factor")
    ap.add_argument("--box-half", type=float, default=2.0, help="real captures: half-size of the scene box")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda': where the model, rays and samples live")
    ap.add_argument("-o", "--output", required=True, help="checkpoint path (.safetensors)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)

    from prunekit import PrunekitError, atomic_path
    from prunekit_hashgrid import checkpoint
    from prunekit_hashgrid.data import load_scene, split
    from prunekit_hashgrid.train import TrainConfig, config_dict, evaluate, train

    if not a.output.endswith(".safetensors"):
        print(f"error: {a.output}: the checkpoint must be a .safetensors file", file=sys.stderr)
        return 2
    grid = dict(num_levels=a.levels, min_res=16, max_res=a.max_res, log2_hashmap_size=a.log2_table,
                features_per_level=2, table_size=a.table_size)
    try:
        cfg = TrainConfig(mode=a.mode, steps=a.steps, batch_rays=a.batch_rays, samples=a.samples, grid=grid,
                          saliency_res=a.saliency_res, saliency_target=a.target, dilate=a.dilate, seed=a.seed, threads=a.threads,
                          background=(1.0, 1.0, 1.0) if a.scene == "synthetic" else None, device=a.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            views = load_scene(a.scene, res=a.res, downscale=a.downscale, box_half=a.box_half)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        tr, te = split(views)
        result = train(tr, cfg, progress=None if a.json else lambda s, l: print(f"step {s:5d}  loss {l:.5f}",
                                                                                 file=sys.stderr))
        ev = evaluate(result.field, te, a.samples, result.keep_fn())
    except (PrunekitError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    summary = {"scene": a.scene, "device": a.device, "train_views": len(tr), "heldout_views": len(te), "psnr_heldout": ev["psnr"],
               "render_seconds": ev["render_seconds"], "train_seconds": result.log["train_seconds"],
               **{k: v for k, v in result.log.items() if k in ("kept_cell_fraction", "occupied_fraction")},
               "sizes": checkpoint.sizes(result.field)}
    with atomic_path(a.output) as tmp:
        checkpoint.save(result.field, tmp, {"train": config_dict(cfg), **summary})
    print(json.dumps(summary, indent=2) if a.json else
          f"{a.output}: held-out PSNR {ev['psnr']:.2f} dB on {len(te)} views, {int(summary['sizes']['hash_params']):,} hash params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
