"""Quality of pruned scenes vs the original's own renders, against splat-transform --decimate.

For each scene: scoring views (synthesised over the sphere, seed 0) and *held-out*
evaluation views (another synthesised set, seed 1000, different directions and distances).
Every method x keep ratio, with and without --merge; splat-transform `--decimate` to the
same Gaussian count; and, at the distillation keeps, `--merge --distill N` for the best
scorer (``--distill-method best``: the highest mean merged PSNR over the distillation keeps)
against decimate followed by the same distillation budget. PSNR/SSIM are measured on the
evaluation views only. A method may carry plugin options, ``radsplat:antialiased=false``.
JSON: bench-out/quality_<scene>.json, written after every method (a stopped run keeps what
it measured).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from common import DATA, ROOT, WORK, decimate, splat_transform, splat_transform_version, write_result

import prunekit
from prunekit_splat.cameras import load_cameras, synthesize_cameras
from prunekit_splat.context import SplatContext
from prunekit_splat.distill import distill
from prunekit_splat.formats import read_scene, write_scene
from prunekit_splat.merge import merge_progressive
from prunekit_splat.metrics import psnr, ssim
from prunekit_splat.render import render

CAPTURES = {"fox": (ROOT / ".cache" / "scenes" / "fox_cameras.json", ROOT / ".cache" / "scenes" / "fox_train.json")}
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
    ap.add_argument("--methods", default="random,opacity,hits,lightgaussian,radsplat,radsplat:antialiased=false,sundae")
    ap.add_argument("--views", type=int, default=64)
    ap.add_argument("--eval-views", type=int, default=24)
    ap.add_argument("--resolution", type=int, default=192)
    ap.add_argument("--distill", type=int, default=400)
    ap.add_argument("--distill-keeps", default="0.1,0.3")
    ap.add_argument("--distill-method", default="best")
    ap.add_argument("--no-drop-unseen", dest="drop_unseen", action="store_false",
                    help="merge Gaussians no scoring view sees instead of removing them (the CLI's --no-drop-unseen)")
    args = ap.parse_args()
    st = splat_transform()
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.scenes.split(","):
        results = []
        path = SCENES.get(name, Path(name))
        if not path.exists():
            print(f"skip {name}: {path} missing")
            continue
        scene = read_scene(path)
        n = len(scene)
        res = args.resolution
        score_cams, eval_cams, views_from = capture_views(name, res)
        if score_cams is None:
            score_cams = synthesize_cameras(scene, n=args.views, width=res, height=res, seed=0)
            eval_cams = synthesize_cameras(scene, n=args.eval_views, width=res, height=res, seed=1000)
        views_from += f" ({len(score_cams)} scoring, {len(eval_cams)} evaluation views at {res} px)"
        with torch.no_grad():
            refs = [render(scene, c).image for c in eval_cams]
        ctx = SplatContext(scene, score_cams)
        t = time.perf_counter()
        ctx.stats()
        stats_s = time.perf_counter() - t
        unseen = ctx.stats()["hits"] == 0 if args.drop_unseen else None  # as `prunekit prune --merge` does
        print(f"{name}: {n} Gaussians, stats over {len(score_cams)} views in {stats_s:.1f}s", flush=True)
        masks = {}
        for m in args.methods.split(","):
            plugin, cfg = method_config(m)
            t = time.perf_counter()
            scores = plugin.get_scorer()(scene, ctx, cfg)
            score_s = time.perf_counter() - t
            for k in [float(x) for x in args.keeps.split(",")]:
                budget = prunekit.Budget(keep_ratio=k)
                budget = cfg.budget(budget) if hasattr(cfg, "budget") else budget
                mask = prunekit.select(scores, budget).only
                masks[(m, k)] = (scores, budget)
                for merge in (False, True):
                    out = merge_progressive(scene, scores.groups["units"], budget, drop=unseen) if merge else scene.subset(mask)
                    p, s = evaluate(out, eval_cams, refs)
                    results.append(dict(scene=name, method=m, keep=k, merge=merge, distill=0, gaussians=len(out),
                                        psnr=p, ssim=s, score_s=score_s))
                    print(f"  {m:13s} keep={k:<5} merge={merge!s:5} psnr={p:6.2f} ssim={s:.3f}", flush=True)
            save(name, args, st, results, stats_s, views_from, n)
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
            dkeeps = [float(x) for x in args.distill_keeps.split(",")]
            best = args.distill_method if args.distill_method != "best" else best_method(results, dkeeps)
            for k in dkeeps:
                starts = {}
                if (best, k) in masks:
                    sc_, b_ = masks[(best, k)]
                    starts[f"{best}+merge"] = merge_progressive(scene, sc_.groups["units"], b_, drop=unseen)
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
                    save(name, args, st, results, stats_s, views_from, n)
        save(name, args, st, results, stats_s, views_from, n)


def capture_views(name: str, res: int):
    """For a scene trained by scripts/train_scene.py: its capture's cameras scaled to long side
    ``res``; the trainer's held-out frames (every 8th) evaluate, the others score and distill."""
    cams_json, log_json = CAPTURES.get(name, (None, None))
    if cams_json is None or not cams_json.exists() or not log_json.exists():
        return None, None, "synthesised: sphere, seed 0 (scoring) / seed 1000 (evaluation)"
    cams = load_cameras(cams_json)
    cams = [c.scaled(res / max(c.width, c.height)) for c in cams]
    test = set(json.loads(log_json.read_text())["test_frames"])
    return ([c for i, c in enumerate(cams) if i not in test], [c for i, c in enumerate(cams) if i in test],
            f"capture cameras {cams_json.name}: held-out frames {sorted(test)} evaluate")


def method_config(spec: str):
    """``name[:key=value;...]`` -> (plugin, config); values parsed as JSON (true, 0.5), else strings."""
    name, _, opts = spec.partition(":")
    plugin = prunekit.load(name)
    kw = {}
    for item in filter(None, opts.split(";")):
        key, _, raw = item.partition("=")
        try:
            kw[key] = json.loads(raw)
        except json.JSONDecodeError:
            kw[key] = raw
    return plugin, plugin.make_config(**kw)


def best_method(results: list[dict], keeps: list[float]) -> str:
    """The scorer with the highest mean merged PSNR over ``keeps``."""
    means = {}
    for m in dict.fromkeys(r["method"] for r in results if r["merge"] and not r["distill"]):
        ps = [r["psnr"] for r in results if r["method"] == m and r["merge"] and r["keep"] in keeps]
        if len(ps) == len(keeps):
            means[m] = sum(ps) / len(ps)
    return max(means, key=means.get)


def save(scene: str, args, st, results, stats_s: float, views: str = "", n: int = 0) -> None:
    write_result(f"quality_{scene}", {
        "args": vars(args), "scene": scene, "path": str(SCENES.get(scene, scene)), "gaussians": n,
        "splat_transform": splat_transform_version(st) if st else None, "stats_s": stats_s,
        "eval": "PSNR/SSIM vs the original scene's renders on held-out views", "views": views,
        "training": _training_summary(scene), "rows": results})


def _training_summary(scene: str) -> dict | None:
    """The trainer's summary (held-out PSNR, steps, time) for scenes made by scripts/train_scene.py."""
    log_json = CAPTURES.get(scene, (None, None))[1]
    if log_json is None or not log_json.exists():
        return None
    return {k: v for k, v in json.loads(log_json.read_text()).items() if k != "log"}


if __name__ == "__main__":
    main()
