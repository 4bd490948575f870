#!/usr/bin/env python
"""Benchmark Token Cropr against random pruning and ToMe-style merging (cluttered MNIST).

Needs the cached models of ``scripts/train_cropr_vit.py`` (stages cls-backbone, cls-cropr,
and for the dense task seg-backbone, seg-cropr). For every token schedule (``r16``: 16
tokens dropped after every block; ``s80-24-12-8-a1-2-3-4``: 80, 24, 12, 8 tokens dropped
after blocks 1-4), the same per-block token counts for every method, it measures, in one run:

- accuracy (classification) or mIoU and digit IoU (pixel mask, Last Layer Fusion / unmerge)
  on the 2,000 fixed test canvases;
- throughput: images/s of batched inference, each method timed in turn in every
  repetition (interleaved); ``speedup`` uses each method's fastest of --reps repetitions
  (the least disturbed by other processes), ``speedup_median`` the medians;
- the block-MAC ratio implied by the token counts (a load-independent cost figure);
- the per-module cost of the per-image ``prunekit.select`` call.

Cropr modules are trained once (at the schedule of the cached stage) and evaluated at every
schedule of the sweep (same blocks, other counts). ToMe-style merging cannot merge more than
half a block's tokens, so it also runs its own constant-r schedules (``--merge-extra``) to
reach higher speeds. "Matched throughput": each baseline's quality is interpolated (linearly
in speed-up, over all its points) at the speed-up Cropr reached. JSON: bench-out/cropr.json.
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
from prunekit_tokens.experiment import ModelSpec, cache_dir, parse_schedule, test_canvases, write_json
from prunekit_tokens.persist import load_pretrained
from prunekit_tokens.selection import keep_mask
from prunekit_tokens.training import batches, evaluate_classification, evaluate_mask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from train_cropr_vit import load_segmenter  # noqa: E402


def attach(method: str, model, sched: str, cropr_cfg, cropr_state, llf: bool):
    if method == "unpruned":
        return None
    cfg = replace(cropr_cfg, **parse_schedule(sched), llf=llf)
    if method == "cropr":
        red = attach_cropr(model, cfg)
        red.load_state_dict(modules_by_block(cropr_cfg, cfg, cropr_state, len(red.host.blocks)))
    elif method == "random":
        red = attach_random(model, config=cfg, seed=0)
    elif method == "merge":
        red = attach_merge(model, config=cfg)
    elif method == "merge-prop":
        red = attach_merge(model, config=cfg, proportional_attention=True)
    else:
        raise ValueError(method)
    return red.eval()


def modules_by_block(trained, wanted, state: dict, num_blocks: int) -> dict:
    """The trained Cropr weights for a schedule that uses a subset of the trained blocks: the module
    after block ``b`` gets the weights of the module trained after block ``b``."""
    index = {b: i for i, (b, _) in enumerate(trained.plan(num_blocks))}
    out = {}
    for j, (b, _) in enumerate(wanted.plan(num_blocks)):
        if b not in index:
            raise UsageError(f"no Cropr module was trained after block {b} (trained: {sorted(index)})")
        prefix = f"cropr.{index[b]}."
        out.update({f"cropr.{j}." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return out


def timed_throughput(model_fn: dict, variants, batch, reps):
    """Seconds per batch of every variant and repetition, as wall-clock and as process CPU time.

    Variants are timed in turn within each repetition (interleaved). With one torch thread the
    CPU time counts only the time this process computed, so it stays meaningful when other
    processes load the machine; wall-clock time does not (both are recorded)."""
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    with torch.inference_mode():
        for k, (setup, teardown) in variants.items():  # warm-up
            red = setup()
            model_fn[k](batch)
            teardown(red)
        for _ in range(reps):
            for k, (setup, teardown) in variants.items():
                red = setup()
                t0, c0 = time.perf_counter(), time.process_time()
                model_fn[k](batch)
                cpu[k].append(time.process_time() - c0)
                wall[k].append(time.perf_counter() - t0)
                teardown(red)
    return wall, cpu


def interpolate(points, speed):
    """Quality at ``speed`` from [(speed, quality)]: linear interpolation along the upper envelope
    (points that no faster point matches in quality; the best a method reaches at each speed,
    whatever its schedule; below the slowest envelope point, that point's quality); None outside
    the measured speeds."""
    env, best = [], -float("inf")
    for sp, q in sorted(points, reverse=True):
        if q > best:
            env.append((sp, q))
            best = q
    pts = sorted(env)
    if not points or not min(points)[0] <= speed <= pts[-1][0]:
        return None
    if speed <= pts[0][0]:  # a faster point is at least as good
        return pts[0][1]
    for (s0, a0), (s1, a1) in zip(pts, pts[1:]):
        if s0 <= speed <= s1:
            return a0 + (a1 - a0) * (speed - s0) / (s1 - s0) if s1 > s0 else max(a0, a1)
    return None


def run_task(name, model, fwd, evaluate, cropr_dir, schedules, merge_extra, methods, llf, x_test, args, spec,
             references=None, reuse=None, own_models=None):
    """``references``: unpruned models measured as their own methods, e.g. "original" (the backbone
    before joint fine-tuning) and "control" (fine-tuned as long as the joint run, without pruning).
    ``reuse``: an earlier run's entry for this task; its quality figures are taken (only timing is
    measured again) for the variants it has. ``own_models``: ``{"random-ft": model, ...}`` baselines
    that run on their own weights (fine-tuned with that baseline's pruning) instead of Cropr's."""
    old = {f"{r['method']}@{r['schedule']}": (r["quality"], r["token_counts"]) for r in (reuse or {}).get("rows", [])}
    old_infeasible = (reuse or {}).get("infeasible", {})
    model_c, red = load_pretrained(cropr_dir, model=model) if model is not None else load_pretrained(cropr_dir)
    cropr_cfg, cropr_state = red.config, red.state_dict()
    red.remove()
    model = model_c.eval()
    f = fwd(model)
    n0 = 1 + spec.grid[0] * spec.grid[1]
    quality, infeasible, variants = {}, {}, {}
    ref_fns = {}
    for ref, ref_model in (references or {}).items():
        ref_fns[f"{ref}@none"] = fwd(ref_model.eval())
        quality[f"{ref}@none"] = old.get(f"{ref}@none") or (evaluate(ref_fns[f"{ref}@none"]), [n0] * spec.num_hidden_layers)
        variants[f"{ref}@none"] = (lambda: None, lambda red: None)
        print(f"[{name}] {ref}: {quality[f'{ref}@none'][0]}", flush=True)
    own_fns = {}
    for method in methods:
        base, mdl = method.removesuffix("-ft"), (own_models or {}).get(method, model)
        fn = f if mdl is model else fwd(mdl.eval())
        todo = ["none"] if method == "unpruned" else schedules + (merge_extra if method.startswith("merge") else [])
        for sched in todo:
            key = f"{method}@{sched}"
            if key in old_infeasible:
                infeasible[key] = old_infeasible[key]
                continue
            red = None
            try:
                red = attach(base, mdl, sched, cropr_cfg, cropr_state, llf)
                q = old[key][0] if key in old else evaluate(fn)
            except UsageError as e:  # e.g. merging more than half the tokens of a block
                print(f"[{name}] {key}: infeasible ({e})", flush=True)
                infeasible[key] = str(e)
                continue
            finally:
                if red is not None:
                    red.remove()
            counts = old[key][1] if key in old else red.token_counts if red is not None else [n0] * spec.num_hidden_layers
            quality[key] = (q, counts)
            variants[key] = (lambda m=base, r=sched, M=mdl: attach(m, M, r, cropr_cfg, cropr_state, llf),
                             lambda red: red.remove() if red is not None else None)
            own_fns[key] = fn
            print(f"[{name}] {key}: {q} tokens {counts}", flush=True)
    batch = normalise(torch.as_tensor(x_test[: args.batch]))
    fns = {k: ref_fns.get(k, own_fns.get(k, f)) for k in variants}
    wall, cpu = timed_throughput(fns, variants, batch, args.reps)
    n, b = len(batch), "unpruned@none"
    rows = []
    for key, (q, counts) in quality.items():
        method, sched = key.split("@")
        rows.append({"method": method, "schedule": sched, "quality": q, "token_counts": counts,
                     # images per CPU-second (1 thread), fastest repetition: the load-robust figure
                     "images_per_s": n / min(cpu[key]), "speedup": min(cpu[b]) / min(cpu[key]),
                     "speedup_cpu_median": statistics.median(cpu[b]) / statistics.median(cpu[key]),
                     "images_per_s_wall": n / min(wall[key]), "speedup_wall": min(wall[b]) / min(wall[key]),
                     "speedup_wall_median": statistics.median(wall[b]) / statistics.median(wall[key]),
                     "mac_ratio": relative_cost(counts, spec.hidden_size, spec.hidden_size * spec.mlp_ratio),
                     "cpu_s": cpu[key], "wall_s": wall[key]})
    return rows, {"cropr_dir": str(cropr_dir), "cropr_config": cropr_cfg.__dict__, "infeasible": infeasible}


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cls-cropr", default="cls-cropr-s80-24-12-8-a1-2-3-4-frozen-proj",
                    help="cache folder (under .cache/prunekit_tokens) of the trained classification Cropr stage")
    ap.add_argument("--seg-cropr", default="seg-cropr-r28-joint-proj", help="cache folder of the dense-task Cropr stage")
    ap.add_argument("--cls-backbone", default="cls-backbone", help="cache folder of the classifier the "
                    "classification Cropr stage was trained from (the 'original' reference of a joint stage)")
    ap.add_argument("--cls-baseline-ft", default="", help="baselines fine-tuned with their own pruning, e.g. "
                    "random=cls-random-ft-...,merge=cls-merge-ft-... (cache folders); run as methods random-ft, merge-ft")
    ap.add_argument("--cls-control", default="", help="cache folder of a cls-finetune stage: the unpruned control "
                    "for a jointly trained classification Cropr stage")
    ap.add_argument("--cls-schedules", default="s40-12-6-4-a1-2-3-4,s64-20-10-6-a1-2-3-4,s80-24-12-8-a1-2-3-4,"
                    "s96-24-12-8-a1-2-3-4", help="token schedules, classification (same blocks as the trained stage)")
    ap.add_argument("--seg-schedules", default="s16-16-16-16,s32-32-32-32,s64-32-16-8,s72-40-16-8",
                    help="token schedules, dense task (Last Layer Fusion)")
    ap.add_argument("--merge-extra", default="r12,r16,r20,r24",
                    help="extra constant-r schedules for merging (it cannot merge over half a block's tokens)")
    ap.add_argument("--methods", default="unpruned,cropr,random,merge")
    ap.add_argument("--tasks", default="cls,seg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench-out" / "cropr.json"))
    ap.add_argument("--reuse-quality", action="store_true", help="take accuracy / mIoU from the task's entry in "
                    "--out (same models and test set) and only measure throughput again")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = _list(args.methods)
    try:
        for sched in _list(args.cls_schedules) + _list(args.seg_schedules) + _list(args.merge_extra):
            parse_schedule(sched)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec = ModelSpec()
    x, y, m = test_canvases(CanvasSpec(size=spec.image_size))
    x, y, m = x[: args.n_test], y[: args.n_test], m[: args.n_test].astype(np.int64)
    out_path = Path(args.out)
    out = {"format": "prunekit.bench.cropr", "tasks": {}, "machine": machine_info()}
    run_info = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "inputs": {**vars(args), "n_test": len(x), "canvas": CanvasSpec().__dict__}}
    torch.manual_seed(0)

    reuse = previous_tasks(out_path, out["format"]) if args.reuse_quality else {}
    for task in _list(args.tasks):
        dense = task == "seg"
        d = cache_dir() / (args.seg_cropr if dense else args.cls_cropr)
        if not (d / "cropr_config.json").exists():
            print(f"error: {d}: missing; train it with scripts/train_cropr_vit.py first", file=sys.stderr)
            return 1
        mode = json.loads((d / "cropr_config.json").read_text())["config"]["train_mode"]
        if not dense:  # the classifier's own sizes (it may differ from the segmenter's ModelSpec())
            from transformers import ViTConfig

            spec = ModelSpec.from_config(ViTConfig.from_pretrained(d))
        else:
            spec = ModelSpec()
        if dense:
            seg = load_segmenter(spec, cache_dir() / "seg-backbone")
            ev = lambda f: evaluate_mask(f, batches(x, m, 256, normalise=normalise), 2)  # noqa: E731
            refs = {"original": load_segmenter(spec, cache_dir() / "seg-backbone")} if mode == "joint" else {}
            rows, meta = run_task("seg", seg, lambda mdl: mdl, ev, d, _list(args.seg_schedules),
                                  _list(args.merge_extra), [k for k in methods if k != "merge-prop"], True, x, args,
                                  spec, refs, reuse.get(f"dense/{d.name}"))
            key, metric = f"dense/{d.name}", "mIoU (background, digit) with LLF / unmerge"
        else:
            ev = lambda f: evaluate_classification(f, batches(x, y, 256, normalise=normalise))  # noqa: E731
            refs = {}
            if mode == "joint":
                from transformers import ViTForImageClassification

                refs["original"] = ViTForImageClassification.from_pretrained(cache_dir() / args.cls_backbone)
                if args.cls_control:
                    refs["control"] = ViTForImageClassification.from_pretrained(cache_dir() / args.cls_control)
            own = {}
            for item in _list(args.cls_baseline_ft):
                from transformers import ViTForImageClassification

                meth, _, folder = item.partition("=")
                if meth not in ("random", "merge") or not (cache_dir() / folder / "config.json").exists():
                    print(f"error: --cls-baseline-ft {item!r}: expected random=|merge=<trained cache folder>",
                          file=sys.stderr)
                    return 2
                own[f"{meth}-ft"] = ViTForImageClassification.from_pretrained(cache_dir() / folder)
            rows, meta = run_task("cls", None, lambda mdl: (lambda xb: mdl(pixel_values=xb).logits), ev, d,
                                  _list(args.cls_schedules), _list(args.merge_extra), methods + list(own), False, x,
                                  args, spec, refs, reuse.get(f"classification/{d.name}"), own)
            key, metric = f"classification/{d.name}", "top-1 accuracy"
        info = {**run_info, "inputs": {**run_info["inputs"], "model": spec.__dict__}, **overheads(args.batch, spec)}
        out["tasks"][key] = {"rows": rows, **meta, "metric": metric, "train_mode": mode, "run": info}
        if key in reuse:
            out["tasks"][key]["quality_from_run"] = reuse[key].get("quality_from_run") or reuse[key]["run"]["date"]
    out["tasks"] = {**previous_tasks(out_path, out["format"]), **out["tasks"]}
    out["summary"] = summarise(out["tasks"])
    write_json(out_path, out)
    print_summary(out)
    print(f"wrote {args.out}")
    return 0


def previous_tasks(path: Path, fmt: str) -> dict:
    """Tasks of an earlier run in ``path`` (read just before writing, so runs of other tasks are kept)."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return prev.get("tasks", {}) if isinstance(prev, dict) and prev.get("format") == fmt else {}


def overheads(batch: int, spec: ModelSpec) -> dict:
    """Per-module cost of the per-image ``prunekit.select`` call and of the Cropr scorer, one batch."""
    from prunekit_tokens.modules import CroprModule

    s = torch.randn(batch, 1 + spec.grid[0] * spec.grid[1])
    t0 = time.perf_counter()
    for _ in range(10):
        keep_mask(s, s.shape[1] // 2, 1)
    res = {"select_ms_per_module_batch": (time.perf_counter() - t0) / 10 * 1000}
    scorer = CroprModule(spec.hidden_size, spec.num_attention_heads, qk_proj=True).eval()
    tokens = torch.randn(batch, s.shape[1], spec.hidden_size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(10):
            scorer(tokens)
    res["cropr_scorer_ms_per_module_batch"] = (time.perf_counter() - t0) / 10 * 1000
    return res


def _q(row, task):
    return row["quality"] if task.startswith("classification") else row["quality"]["miou"]


BASELINES = ("random", "merge", "merge-prop", "random-ft", "merge-ft")


def summarise(tasks):
    summ = {}
    for task, res in tasks.items():
        rows = res["rows"]
        base = next(r for r in rows if r["method"] == "unpruned")
        # targets are measured against the best unpruned model without Cropr training: the backbone
        # itself (frozen mode), or the better of the original and the equally fine-tuned control (joint)
        refs = [r for r in rows if r["method"] in ("original", "control")]
        ref = max(refs, key=lambda r: _q(r, task)) if refs else base
        bq = _q(ref, task)
        by = {}
        for r in rows:
            by.setdefault(r["method"], []).append(r)
        comp = []
        for r in by.get("cropr", []):
            entry = {"schedule": r["schedule"], "speedup": r["speedup"], "cropr": _q(r, task), "reference": bq}
            for b in BASELINES:
                if b in by:
                    same = next((x for x in by[b] if x["schedule"] == r["schedule"]), None)
                    entry[f"{b}_same_schedule"] = _q(same, task) if same else None
                    entry[f"{b}_same_schedule_speedup"] = same["speedup"] if same else None
                    entry[f"{b}_at_cropr_speed"] = interpolate([(x["speedup"], _q(x, task)) for x in by[b]], r["speedup"])
            comp.append(entry)
        s = {"reference": ref["method"], "reference_quality": bq, "unpruned_same_weights": _q(base, task),
             "references": {r["method"]: _q(r, task) for r in refs},
             "unpruned_images_per_s": base["images_per_s"], "cropr_points": comp}
        if task.startswith("classification"):
            ok = [c for c in comp if bq - c["cropr"] <= 0.01]
            s["best_speedup_within_1pt"] = max((c["speedup"] for c in ok), default=None)
            s["target_1p5x_within_1pt"] = bool(ok) and s["best_speedup_within_1pt"] >= 1.5
        else:
            ok = [c for c in comp if c["cropr"] >= 0.98 * bq]
            s["best_speedup_keeping_98pct_miou"] = max((c["speedup"] for c in ok), default=None)
            s["target_1p3x_98pct"] = bool(ok) and s["best_speedup_keeping_98pct_miou"] >= 1.3
        for kind in ("same_schedule", "at_cropr_speed"):
            wins = [c["cropr"] > c[f"{b}_{kind}"] for c in comp for b in BASELINES
                    if b != "merge-prop" and c.get(f"{b}_{kind}") is not None]
            s[f"cropr_beats_baselines_{kind}"] = f"{sum(wins)}/{len(wins)}"
        summ[task] = s
    return summ


def print_summary(out):
    nan = float("nan")
    for task, res in out["tasks"].items():
        print(f"\n{task}:")
        print(f"{'method':>10} {'schedule':>22} {'quality':>8} {'img/cpu-s':>9} {'speedup':>8} {'cpu-med':>7} "
              f"{'wall':>6} {'MACs':>6}")
        for r in res["rows"]:
            print(f"{r['method']:>10} {r['schedule']:>22} {_q(r, task):8.4f} {r['images_per_s']:9.1f} "
                  f"{r['speedup']:8.2f} {r.get('speedup_cpu_median', nan):7.2f} {r.get('speedup_wall', nan):6.2f} "
                  f"{r['mac_ratio']:6.2f}")
    print(json.dumps(out["summary"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
