#!/usr/bin/env python
"""Memory and time scaling of the hash-grid trainer, measured with tiny runs (sizing for a GPU check).

Each case runs in a fresh process (so its peak RSS is its own) and does a few training steps of
``prunekit_hashgrid.train`` with the given grid and rays per step; reported per case: process CPU seconds per
step after the first, wall seconds per step (synchronised; includes the first), peak resident memory, hash
parameters. From two batch sizes of one grid it fits  memory = fixed + per_ray * rays  and
step = fixed + per_ray * rays  (a two-point line). Also times the compaction of a paper-size table
(``compact_field``, CPU) for a mask of the synthetic scene's occupied cells, counts the rows a dense table of
that size can reach at all, and times loading the fox capture at one downscale. ``--add fractions:32``: what
fraction of the dense grid's parameters a table of f * 2^19 rows keeps after compaction (the GPU check's
``--fractions``).

    OMP_NUM_THREADS=1 python scripts/bench/hollownerf_scaling.py      # -> bench-out/hollownerf-scaling-cpu.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRIDS = {"cpu": dict(num_levels=8, min_res=16, max_res=256, log2_hashmap_size=13, features_per_level=2),
         "paper": dict(num_levels=16, min_res=16, max_res=2048, log2_hashmap_size=19, features_per_level=2)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def one_train(grid: str, rays: int, samples: int, steps: int, device: str) -> dict:
    import torch

    from prunekit_hashgrid.data import synthetic_views
    from prunekit_hashgrid.train import TrainConfig, train

    torch.set_num_threads(1)
    views = synthetic_views(n_views=8, res=32)
    base = _rss_mb()
    cfg = TrainConfig(mode="hollow", steps=1, batch_rays=rays, samples=samples, grid=GRIDS[grid], device=device)
    train(views, cfg)  # first step: allocations, warm-up
    cfg.steps = steps + 1
    clock = {}  # process CPU time at the progress calls (steps 0 and ``steps``): the loop without its setup
    res = train(views, cfg, progress=lambda s, _: clock.setdefault(s, time.process_time()))
    return {"grid": grid, "rays": rays, "samples": samples, "steps": steps, "device": device,
            "hash_params": res.field.hash_params(),
            "cpu_seconds_per_step": (clock[steps] - clock[0]) / steps,
            "wall_seconds_per_step": res.log["train_seconds"] / (steps + 1),
            "peak_rss_mb": _rss_mb(), "rss_before_model_mb": base,
            **({"cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device == "cuda" else {})}


def one_compact(saliency_res: int) -> dict:
    import torch

    from prunekit_hashgrid.compact import compact_field, reachable_rows
    from prunekit_hashgrid.field import HollowField

    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from hollownerf_occupancy import solid_masks

    torch.set_num_threads(1)
    occupied = solid_masks(saliency_res)[0]
    fld = HollowField(GRIDS["paper"], saliency_res)
    with torch.no_grad():
        fld.saliency.logits.copy_(torch.where(occupied, 1.0, -1.0))
    c0, t0 = time.process_time(), time.perf_counter()
    _, stats = compact_field(fld)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    every = reachable_rows(fld.encoding, torch.ones(saliency_res**3, dtype=torch.bool), saliency_res)
    T = fld.encoding.table_size
    return {"saliency_res": saliency_res, "cells_kept_fraction": float(occupied.float().mean()),
            "cpu_seconds": cpu, "wall_seconds": wall, "peak_rss_mb": _rss_mb(),
            "rows_kept_fraction": stats["rows_kept"] / stats["rows_total"],
            "rows_kept_fraction_per_level": [n / T for n in stats["rows_kept_per_level"]],
            "dense_reachable_fraction": float(every.float().mean()),
            "dense_reachable_fraction_per_level": [float(every[i * T:(i + 1) * T].float().mean())
                                                   for i in range(fld.encoding.num_levels)]}


def one_fractions(saliency_res: int, fractions=(0.3, 0.45, 0.55, 0.8)) -> dict:
    """Reachable rows of a paper grid whose table has f * 2^19 rows per level, over the dense grid's 16 * 2^19:
    with every cell kept (an upper bound on what compaction keeps) and with the synthetic scene's occupied cells."""
    import torch

    from prunekit_hashgrid.compact import reachable_rows
    from prunekit_hashgrid.encoding import HashGrid

    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from hollownerf_occupancy import solid_masks

    torch.set_num_threads(1)
    g, T = GRIDS["paper"], 2 ** GRIDS["paper"]["log2_hashmap_size"]
    masks = {"all_cells": torch.ones(saliency_res**3, dtype=torch.bool), "occupied_cells": solid_masks(saliency_res)[0]}
    out = {}
    for f in fractions:
        grid = HashGrid(**g, table_size=round(f * T))
        out[f"{f:g}"] = {k: int(reachable_rows(grid, m, saliency_res).sum()) / (g["num_levels"] * T) for k, m in masks.items()}
    return {"saliency_res": saliency_res, "kept_param_fraction_of_dense": out}


def one_load(downscale: int) -> dict:
    import warnings

    import torch

    from prunekit_hashgrid.data import load_scene

    torch.set_num_threads(1)
    c0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = load_scene(str(ROOT.parent / "shared" / "data" / "fox"), downscale=downscale)
    return {"downscale": downscale, "views": len(v), "image_hw": list(v.images.shape[1:3]),
            "cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - t0,
            "peak_rss_mb": _rss_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one case as JSON, in this process
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rays", default="64,256", help="two batch sizes (rays per step) per grid")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--fox-downscale", type=int, default=8)
    ap.add_argument("--add", metavar="CASE", help="run one case (e.g. fractions:32) and add it to --output")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench-out" / "hollownerf-scaling-cpu.json"))
    a = ap.parse_args(argv)
    if a.one:
        kind, *args = a.one.split(":")
        fn = {"train": lambda g, r: one_train(g, int(r), a.samples, a.steps, a.device),
              "compact": lambda g: one_compact(int(g)), "load": lambda d: one_load(int(d)),
              "fractions": lambda g: one_fractions(int(g))}[kind]
        print(json.dumps(fn(*args)))
        return 0

    from prunekit import atomic_write_text
    from prunekit.report import machine_info

    def case(spec: str) -> dict:
        p = subprocess.run([sys.executable, __file__, "--one", spec, "--device", a.device, "--steps", str(a.steps),
                            "--samples", str(a.samples)], capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(spec, r, flush=True)
        return r

    if a.add:
        out = json.loads(Path(a.output).read_text())
        out[a.add.split(":")[0]] = case(a.add)
        out.setdefault("commands", []).append(" ".join(sys.argv))
        atomic_write_text(a.output, json.dumps(out, indent=2) + "\n")
        return 0
    rays = [int(x) for x in a.rays.split(",")]
    out = {"benchmark": "hollownerf scaling", "machine": machine_info(), "command": " ".join(sys.argv),
           "inputs": {k: v for k, v in vars(a).items() if k not in ("one", "output")}, "train": [], "fits": {}}
    for g in GRIDS:
        runs = [case(f"train:{g}:{r}") for r in rays]
        out["train"] += runs
        lo, hi = runs[0], runs[-1]
        d = hi["rays"] - lo["rays"]
        mem = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / d
        sec = (hi["cpu_seconds_per_step"] - lo["cpu_seconds_per_step"]) / d
        out["fits"][g] = {"mb_per_ray": mem, "mb_fixed": lo["peak_rss_mb"] - mem * lo["rays"],
                          "cpu_seconds_per_ray_step": sec, "cpu_seconds_fixed_per_step": lo["cpu_seconds_per_step"] - sec * lo["rays"]}
    out["compaction"] = case("compact:32")
    out["fox_load"] = case(f"load:{a.fox_downscale}")
    atomic_write_text(a.output, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["fits"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
