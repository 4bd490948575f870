#!/usr/bin/env python
"""Benchmark Token Cropr against random pruning and ToMe-style merging (cluttered MNIST).

Needs the cached models of ``scripts/train_cropr_vit.py`` (stages cls-backbone, cls-cropr,
and for the dense task seg-backbone, seg-cropr). For every token budget R (tokens dropped
per module, same per-block counts for every method) it measures, in one run:

- accuracy (classification) or mIoU and digit IoU (pixel mask, Last Layer Fusion / unmerge)
  on the 2,000 fixed test canvases;
- throughput: images/s of batched inference, each method timed in turn in every
  repetition (interleaved); ``speedup`` uses each method's fastest of --reps repetitions
  (the least disturbed by other processes), ``speedup_median`` the medians;
- the block-MAC ratio implied by the token counts (a load-independent cost figure);
- the per-module cost of the per-image ``prunekit.select`` call.

Cropr modules are trained once (at the R of the cached stage) and evaluated at every R.
"Matched throughput": each baseline's accuracy is interpolated (linearly in speed-up,
over its R sweep) at the speed-up Cropr reached. JSON goes to bench-out/cropr.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import UsageError
from prunekit.report import machine_info
from prunekit_tokens.attach import attach_cropr, attach_merge, attach_random, relative_cost
from prunekit_tokens.cluttered_mnist import CanvasSpec, normalise
from prunekit_tokens.experiment import ModelSpec, cache_dir, test_canvases, write_json
from prunekit_tokens.persist import load_pretrained
from prunekit_tokens.selection import keep_mask
from prunekit_tokens.training import batches, evaluate_classification, evaluate_mask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from train_cropr_vit import load_segmenter  # noqa: E402


def attach(method: str, model, R: int, cropr_cfg, cropr_state, llf: bool):
    if method == "unpruned":
        return None
    cfg = replace(cropr_cfg, prune_count=R, prune_counts=(), llf=llf)
    if method == "cropr":
        red = attach_cropr(model, cfg)
        red.load_state_dict(cropr_state)
    elif method == "random":
        red = attach_random(model, config=cfg, seed=0)
    elif method == "merge":
        red = attach_merge(model, config=cfg)
    elif method == "merge-prop":
        red = attach_merge(model, config=cfg, proportional_attention=True)
    else:
        raise ValueError(method)
    return red.eval()


def timed_throughput(model_fn, variants, batch, reps):
    """Median images/s per variant; variants timed in turn within each repetition."""
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for k, (setup, teardown) in variants.items():  # warm-up
            red = setup()
            (model_fn.get(k) if isinstance(model_fn, dict) else model_fn)(batch)
            teardown(red)
        for _ in range(reps):
            for k, (setup, teardown) in variants.items():
                red = setup()
                t0 = time.perf_counter()
                (model_fn.get(k) if isinstance(model_fn, dict) else model_fn)(batch)
                times[k].append(time.perf_counter() - t0)
                teardown(red)
    return ({k: len(batch) / statistics.median(v) for k, v in times.items()},
            {k: len(batch) / min(v) for k, v in times.items()}, times)


def interpolate(points, speed):
    """Accuracy at ``speed`` from [(speed, acc)] by linear interpolation (None outside the sweep)."""
    pts = sorted(points)
    for (s0, a0), (s1, a1) in zip(pts, pts[1:]):
        if s0 <= speed <= s1:
            return a0 + (a1 - a0) * (speed - s0) / (s1 - s0) if s1 > s0 else max(a0, a1)
    return None


def run_task(name, model, fwd, evaluate, cropr_dir, budgets, methods, llf, x_test, args, spec, original=None):
    """``original``: the backbone before joint fine-tuning (joint mode), measured as method "original"."""
    model_c, red = load_pretrained(cropr_dir, model=model) if model is not None else load_pretrained(cropr_dir)
    cropr_cfg, cropr_state = red.config, red.state_dict()
    red.remove()
    model = model_c.eval()
    f = fwd(model)
    n0 = 1 + spec.grid[0] * spec.grid[1]
    rows = []
    quality = {}
    infeasible = {}
    variants = {}
    if original is not None:
        f_orig = fwd(original.eval())
        quality["original@0"] = (evaluate(f_orig), [n0] * spec.num_hidden_layers)
        variants["original@0"] = (lambda: None, lambda red: None)
        print(f"[{name}] original@0: {quality['original@0'][0]}", flush=True)
    for method in methods:
        for R in ([0] if method == "unpruned" else budgets):
            key = f"{method}@{R}"
            red = attach(method, model, R, cropr_cfg, cropr_state, llf)
            try:
                q = evaluate(f)
            except UsageError as e:  # e.g. merging more than half the tokens of a block
                print(f"[{name}] {key}: infeasible ({e})", flush=True)
                infeasible[key] = str(e)
                continue
            finally:
                if red is not None:
                    red.remove()
            counts = red.token_counts if red is not None else [n0] * spec.num_hidden_layers
            quality[key] = (q, counts)
            variants[key] = (lambda m=method, r=R: attach(m, model, r, cropr_cfg, cropr_state, llf),
                             lambda red: red.remove() if red is not None else None)
            print(f"[{name}] {key}: {q} tokens {counts}", flush=True)
    batch = normalise(torch.as_tensor(x_test[: args.batch]))
    fns = {k: (f_orig if k == "original@0" else f) for k in variants}
    ips_med, ips_best, raw = timed_throughput(fns, variants, batch, args.reps)
    ips = ips_best  # fastest repetition: least disturbed by other processes on a shared machine
    base = ips["unpruned@0"]
    for key, (q, counts) in quality.items():
        method, R = key.split("@")
        rows.append({"method": method, "R": int(R), "quality": q, "token_counts": counts,
                     "images_per_s": ips[key], "speedup": ips[key] / base,
                     "images_per_s_median": ips_med[key], "speedup_median": ips_med[key] / ips_med["unpruned@0"],
                     "mac_ratio": relative_cost(counts, spec.hidden_size, spec.hidden_size * spec.mlp_ratio),
                     "times_s": raw[key]})
    return rows, {"cropr_dir": str(cropr_dir), "cropr_config": cropr_cfg.__dict__, "infeasible": infeasible}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cls-r", type=int, default=24, help="R of the cached cls-cropr stage to load")
    ap.add_argument("--seg-r", type=int, default=28, help="R of the cached seg-cropr stage to load")
    ap.add_argument("--mode", default="frozen", choices=("frozen", "joint"))
    ap.add_argument("--tag", default="-proj", help="suffix of the cached Cropr folders (train script --tag)")
    ap.add_argument("--cls-budgets", default="12,16,20,24,28", help="R values (tokens dropped per module), classification")
    ap.add_argument("--seg-budgets", default="16,24,28,32", help="R values, dense task (with Last Layer Fusion)")
    ap.add_argument("--methods", default="unpruned,cropr,random,merge")
    ap.add_argument("--tasks", default="cls,seg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench-out" / "cropr.json"))
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    cls_budgets = [int(b) for b in args.cls_budgets.split(",") if b]
    seg_budgets = [int(b) for b in args.seg_budgets.split(",") if b]
    methods = [m for m in args.methods.split(",") if m]
    spec = ModelSpec()
    x, y, m = test_canvases(CanvasSpec(size=spec.image_size))
    x, y, m = x[: args.n_test], y[: args.n_test], m[: args.n_test].astype(np.int64)
    out_path = Path(args.out)
    out = {"format": "prunekit.bench.cropr", "tasks": {}}
    if out_path.exists():  # keep the other task's figures from an earlier run (each task records its run)
        try:
            prev = json.loads(out_path.read_text())
            if prev.get("format") == out["format"]:
                out["tasks"] = prev.get("tasks", {})
        except ValueError:
            pass
    out["machine"] = machine_info()
    run_info = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "inputs": {**vars(args), "model": spec.__dict__, "n_test": len(x), "canvas": CanvasSpec().__dict__}}
    torch.manual_seed(0)

    # cost of the per-image select call (one module, one batch)
    s = torch.randn(args.batch, 1 + spec.grid[0] * spec.grid[1])
    t0 = time.perf_counter()
    for _ in range(10):
        keep_mask(s, s.shape[1] - cls_budgets[0], 1)
    run_info["select_ms_per_module_batch"] = (time.perf_counter() - t0) / 10 * 1000
    from prunekit_tokens.modules import CroprModule

    scorer = CroprModule(spec.hidden_size, spec.num_attention_heads, qk_proj=True).eval()
    tokens = torch.randn(args.batch, s.shape[1], spec.hidden_size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(10):
            scorer(tokens)
        run_info["cropr_scorer_ms_per_module_batch"] = (time.perf_counter() - t0) / 10 * 1000

    if "cls" in args.tasks:
        d = cache_dir() / f"cls-cropr-r{args.cls_r}-{args.mode}{args.tag}"
        if not (d / "cropr_config.json").exists():
            print(f"missing {d}: run scripts/train_cropr_vit.py cls-backbone cls-cropr --prune-count {args.cls_r} "
                  f"--proj --tag={args.tag} first", file=sys.stderr)
            return 1
        ev = lambda f: evaluate_classification(f, batches(x, y, 256, normalise=normalise))  # noqa: E731
        original = None
        if args.mode == "joint":
            from transformers import ViTForImageClassification

            original = ViTForImageClassification.from_pretrained(cache_dir() / "cls-backbone")
        rows, meta = run_task("cls", None, lambda mdl: (lambda xb: mdl(pixel_values=xb).logits), ev, d,
                              cls_budgets, methods, False, x, args, spec, original)
        out["tasks"][f"classification/{args.mode}{args.tag}"] = {"rows": rows, **meta, "metric": "top-1 accuracy", "run": run_info}
    if "seg" in args.tasks:
        d = cache_dir() / f"seg-cropr-r{args.seg_r}-{args.mode}{args.tag}"
        if not (d / "cropr_config.json").exists():
            print(f"missing {d}: run scripts/train_cropr_vit.py seg-backbone seg-cropr --prune-count {args.seg_r} "
                  f"--proj --tag={args.tag} first", file=sys.stderr)
            return 1
        seg = load_segmenter(spec, cache_dir() / "seg-backbone")
        ev = lambda f: evaluate_mask(f, batches(x, m, 256, normalise=normalise), 2)  # noqa: E731
        original = load_segmenter(spec, cache_dir() / "seg-backbone") if args.mode == "joint" else None
        rows, meta = run_task("seg", seg, lambda mdl: mdl, ev, d, seg_budgets,
                              [k for k in methods if k != "merge-prop"], True, x, args, spec, original)
        out["tasks"][f"dense/{args.mode}{args.tag}"] = {"rows": rows, **meta, "metric": "mIoU (background, digit) with LLF / unmerge",
                                 "run": run_info}
    out["summary"] = summarise(out["tasks"])
    write_json(out_path, out)
    print_summary(out)
    print(f"wrote {args.out}")
    return 0


def _q(row, task):
    return row["quality"] if task.startswith("classification") else row["quality"]["miou"]


def summarise(tasks):
    summ = {}
    for task, res in tasks.items():
        rows = res["rows"]
        base = next(r for r in rows if r["method"] == "unpruned")
        orig = next((r for r in rows if r["method"] == "original"), None)
        ref = orig or base  # targets are measured against the model before any Cropr training
        bq = _q(ref, task)
        by = {}
        for r in rows:
            by.setdefault(r["method"], []).append(r)
        comp = []
        for r in by.get("cropr", []):
            entry = {"R": r["R"], "speedup": r["speedup"], "cropr": _q(r, task), "reference": bq}
            for b in ("random", "merge", "merge-prop"):
                if b in by:
                    same_r = next((x for x in by[b] if x["R"] == r["R"]), None)
                    entry[f"{b}_same_budget"] = _q(same_r, task) if same_r else None
                    entry[f"{b}_same_budget_speedup"] = same_r["speedup"] if same_r else None
                    entry[f"{b}_at_cropr_speed"] = interpolate([(x["speedup"], _q(x, task)) for x in by[b]], r["speedup"])
            comp.append(entry)
        s = {"reference": ref["method"], "reference_quality": bq, "unpruned_same_weights": _q(base, task),
             "unpruned_images_per_s": base["images_per_s"], "cropr_points": comp}
        if task.startswith("classification"):
            ok = [c for c in comp if bq - c["cropr"] <= 0.01]
            s["best_speedup_within_1pt"] = max((c["speedup"] for c in ok), default=None)
            s["target_1p5x_within_1pt"] = bool(ok) and s["best_speedup_within_1pt"] >= 1.5
        else:
            ok = [c for c in comp if c["cropr"] >= 0.98 * bq]
            s["best_speedup_keeping_98pct_miou"] = max((c["speedup"] for c in ok), default=None)
            s["target_1p3x_98pct"] = bool(ok) and s["best_speedup_keeping_98pct_miou"] >= 1.3
        wins = []
        for c in comp:
            for b in ("random", "merge"):
                v = c.get(f"{b}_same_budget")
                if v is not None:
                    wins.append(c["cropr"] > v)
        s["cropr_beats_baselines_same_budget"] = f"{sum(wins)}/{len(wins)}"
        summ[task] = s
    return summ


def print_summary(out):
    for task, res in out["tasks"].items():
        print(f"\n{task}:")
        print(f"{'method':>10} {'R':>3} {'quality':>8} {'img/s':>8} {'speedup':>8} {'median':>7} {'MACs':>6}")
        for r in res["rows"]:
            print(f"{r['method']:>10} {r['R']:>3} {_q(r, task):8.4f} {r['images_per_s']:8.1f} {r['speedup']:8.2f} "
                  f"{r.get('speedup_median', float('nan')):7.2f} {r['mac_ratio']:6.2f}")
    print(out["summary"])


if __name__ == "__main__":
    sys.exit(main())
