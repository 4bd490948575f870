"""--merge with and without dropping Gaussians that no scoring view sees (``--drop-unseen``).

Same scenes, views and held-out evaluation as bench_quality.py; scorer ``radsplat`` (default
options) and ``opacity``. JSON: bench-out/quality-merge-unseen-<scene>.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_quality import SCENES, capture_views, evaluate
from common import write_result

import prunekit
from prunekit_splat.cameras import synthesize_cameras
from prunekit_splat.context import SplatContext
from prunekit_splat.formats import read_scene
from prunekit_splat.merge import merge_progressive
from prunekit_splat.render import render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", default="donut")
    ap.add_argument("--keeps", default="0.05,0.1,0.3,0.5")
    ap.add_argument("--methods", default="radsplat,opacity")
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--eval-views", type=int, default=12)
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()
    scene = read_scene(SCENES[args.scene])
    res = args.resolution
    score_cams, eval_cams, views = capture_views(args.scene, res)
    if score_cams is None:
        score_cams = synthesize_cameras(scene, n=args.views, width=res, height=res, seed=0)
        eval_cams = synthesize_cameras(scene, n=args.eval_views, width=res, height=res, seed=1000)
    with torch.no_grad():
        refs = [render(scene, c).image for c in eval_cams]
    ctx = SplatContext(scene, score_cams)
    unseen = ctx.stats()["hits"] == 0
    print(f"{args.scene}: {len(scene)} Gaussians, {int(unseen.sum())} unseen from all {len(score_cams)} views", flush=True)
    rows = []
    for m in args.methods.split(","):
        plugin = prunekit.load(m)
        scores = plugin.get_scorer()(scene, ctx, plugin.make_config()).groups["units"]
        for k in [float(x) for x in args.keeps.split(",")]:
            b = prunekit.Budget(keep_ratio=k)
            for drop in (False, True):
                t = time.perf_counter()
                out = merge_progressive(scene, scores, b, drop=unseen if drop else None)
                secs = time.perf_counter() - t
                p, s = evaluate(out, eval_cams, refs)
                rows.append(dict(method=m, keep=k, drop_unseen=drop, gaussians=len(out), psnr=p, ssim=s, merge_s=secs))
                print(f"  {m} keep={k} drop_unseen={drop}: {p:.2f} dB", flush=True)
            write_result(f"quality-merge-unseen-{args.scene}", {
                "args": vars(args), "scene": args.scene, "gaussians": len(scene), "unseen": int(unseen.sum()),
                "views": views, "eval": "PSNR/SSIM vs the original's renders on held-out views", "rows": rows})


if __name__ == "__main__":
    main()
