"""Quality of pruned scenes vs the original's own renders, against splat-transform --decimate.

For each scene: scoring views (synthesised over the sphere, seed 0) and *held-out*
evaluation views (another synthesised set, seed 1000, different directions and distances).
Every method x keep ratio, with and without --merge; splat-transform `--decimate` to the
same Gaussian count; and, at the distillation keeps, `--merge --distill N` for the best
scorer against decimate followed by the same distillation budget. PSNR/SSIM are measured
on the evaluation views only. JSON: bench-out/quality.json; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from common import DATA, ROOT, WORK, decimate, splat_transform, splat_transform_version, write_result

import prunekit
from prunekit_splat.cameras import synthesize_cameras
from prunekit_splat.context import SplatContext
from prunekit_splat.distill import distill
from prunekit_splat.formats import read_scene, write_scene
from prunekit_splat.merge import merge_progressive
from prunekit_splat.metrics import psnr, ssim
from prunekit_splat.render import render

SCENES = {"donut": DATA / "splats" / "donut.ply", "cow": ROOT / "scenes" / "cow.ply",
          "fox": ROOT / ".cache" / "scenes" / "fox.ply"}


def evaluate(scene, cams, refs) -> tuple[float, float]:
    ps, ss = [], []
    with torch.no_grad():
        for c, ref in zip(cams, refs):
            img = render(scene, c).image
            ps.append(min(psnr(ref, img), 60.0))
            ss.append(float(ssim(ref, img)))
    return sum(ps) / len(ps), sum(ss) / len(ss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", default="donut,cow")
    ap.add_argument("--keeps", default="0.05,0.1,0.3,0.5")
    ap.add_argument("--methods", default="random,opacity,hits,lightgaussian,radsplat,sundae")
    ap.add_argument("--views", type=int, default=64)
    ap.add_argument("--eval-views", type=int, default=24)
    ap.add_argument("--resolution", type=int, default=192)
    ap.add_argument("--distill", type=int, default=400)
    ap.add_argument("--distill-keeps", default="0.1,0.3")
    ap.add_argument("--distill-method", default="radsplat")
    args = ap.parse_args()
    st = splat_transform()
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.scenes.split(","):
        path = SCENES.get(name, Path(name))
        if not path.exists():
            print(f"skip {name}: {path} missing")
            continue
        scene = read_scene(path)
        n = len(scene)
        res = args.resolution
        score_cams = synthesize_cameras(scene, n=args.views, width=res, height=res, seed=0)
        eval_cams = synthesize_cameras(scene, n=args.eval_views, width=res, height=res, seed=1000)
        with torch.no_grad():
            refs = [render(scene, c).image for c in eval_cams]
        ctx = SplatContext(scene, score_cams)
        t = time.perf_counter()
        ctx.stats()
        stats_s = time.perf_counter() - t
        print(f"{name}: {n} Gaussians, stats over {len(score_cams)} views in {stats_s:.1f}s", flush=True)
        masks = {}
        for m in args.methods.split(","):
            plugin = prunekit.load(m)
            cfg = plugin.make_config()
            t = time.perf_counter()
            scores = plugin.get_scorer()(scene, ctx, cfg)
            score_s = time.perf_counter() - t
            for k in [float(x) for x in args.keeps.split(",")]:
                budget = prunekit.Budget(keep_ratio=k)
                budget = cfg.budget(budget) if hasattr(cfg, "budget") else budget
                mask = prunekit.select(scores, budget).only
                masks[(m, k)] = (scores, budget)
                for merge in (False, True):
                    out = merge_progressive(scene, scores.groups["units"], budget) if merge else scene.subset(mask)
                    p, s = evaluate(out, eval_cams, refs)
                    results.append(dict(scene=name, method=m, keep=k, merge=merge, distill=0, gaussians=len(out),
                                        psnr=p, ssim=s, score_s=score_s))
                    print(f"  {m:13s} keep={k:<5} merge={merge!s:5} psnr={p:6.2f} ssim={s:.3f}", flush=True)
        decimated = {}
        if st:
            for k in [float(x) for x in args.keeps.split(",")]:
                count = max(1, math.floor(k * n + 1e-9))
                dst = WORK / f"{name}_dec_{k}.ply"
                secs = decimate(st, path, dst, count)
                dec = read_scene(dst)
                decimated[k] = dec
                p, s = evaluate(dec, eval_cams, refs)
                results.append(dict(scene=name, method="splat-transform-decimate", keep=k, merge=False, distill=0,
                                    gaussians=len(dec), psnr=p, ssim=s, score_s=secs))
                print(f"  decimate      keep={k:<5} psnr={p:6.2f} ssim={s:.3f} ({len(dec)} Gaussians, {secs:.1f}s)",
                      flush=True)
        if args.distill:
            for k in [float(x) for x in args.distill_keeps.split(",")]:
                starts = {}
                if (args.distill_method, k) in masks:
                    sc_, b_ = masks[(args.distill_method, k)]
                    starts[f"{args.distill_method}+merge"] = merge_progressive(scene, sc_.groups["units"], b_)
                if k in decimated:
                    starts["splat-transform-decimate"] = decimated[k]
                for label, start in starts.items():
                    t = time.perf_counter()
                    out = distill(start, scene, score_cams, steps=args.distill, seed=0)
                    secs = time.perf_counter() - t
                    p, s = evaluate(out, eval_cams, refs)
                    results.append(dict(scene=name, method=label, keep=k, merge=label.endswith("merge"),
                                        distill=args.distill, gaussians=len(out), psnr=p, ssim=s, distill_s=secs))
                    print(f"  {label} + distill {args.distill}: keep={k} psnr={p:6.2f} ssim={s:.3f} ({secs:.0f}s)",
                          flush=True)
                    if label.endswith("merge"):
                        write_scene(out, WORK / f"{name}_{label}_distill_{k}.ply")
        save(args, st, results)  # after every scene, so a stopped run keeps what it measured
    save(args, st, results)


def save(args, st, results) -> None:
    write_result("quality", {"args": vars(args), "scenes": {k: str(v) for k, v in SCENES.items()},
                             "splat_transform": splat_transform_version(st) if st else None,
                             "eval": "PSNR/SSIM vs the original scene's renders on held-out synthesised views (seed 1000)",
                             "rows": results})


if __name__ == "__main__":
    main()
