#!/usr/bin/env python
"""HollowNeRF in the paper's regime on a lent GPU, as one command that fits one device call.

Instant-NGP-size tables (16 levels, 2^19 rows per level, finest resolution 2048: nerfacto's torch
``HashEncoding``, METHODS.md 5.2) on the fox capture at 1/``--downscale`` resolution:

1. one-line error and exit 2 unless CUDA is available (``--device cpu``: a slow dry run of this flow, for testing);
2. times ``--calib-steps`` training steps of that grid at ``--batch-rays`` on the GPU (every sample evaluated,
   as in dense training and in HollowNeRF before the freeze: an upper bound on the step time);
3. sizes the training steps so that the five runs dense, hollow@f1, dense-matched@f1, hollow@f2,
   dense-matched@f2 (``--fractions``: table rows as a fraction of 2^19) fit into ``--seconds``, after reserving
   time for loading, CPU compaction and evaluation (estimates, printed);
4. runs ``bench_hollownerf.py`` with those steps on CUDA; it rewrites ``--output`` after every run, in that
   order, so a cut-off run still leaves the first target's three runs.

    PYTHONPATH=core:plugins python scripts/bench/hollownerf_gpu_check.py --scene PATH/TO/fox
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--scene", default=str(HERE.parents[2] / "shared" / "data" / "fox"), help="the fox capture folder")
    ap.add_argument("--downscale", type=int, default=2, help="1: full 1080x1920 images")
    ap.add_argument("--seconds", type=float, default=480, help="wall-clock budget for the whole check")
    ap.add_argument("--batch-rays", type=int, default=8192)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--target", type=float, default=0.3,
                    help="saliency budget C (the fox fills its box: C = 0.3 beat 0.1 at 192x108 px, package README)")
    ap.add_argument("--fractions", default="0.3,0.55",
                    help="hollow table fractions (of 2^19 rows): near 30 %% and 55 %% of the dense grid's reachable rows "
                         "after compaction (package README)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (a second seed: a second call, another -o)")
    ap.add_argument("--calib-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=0, help="skip the sizing and train this many steps per run")
    ap.add_argument("--compact-seconds", type=float, default=30, help="reserve per hollow run (CPU compaction)")
    ap.add_argument("--train-eval-views", type=int, default=4)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1), help="CPU threads (compaction)")
    ap.add_argument("-o", "--output", default=str(HERE.parents[1] / "bench-out" / "hollownerf-gpu-fox.json"))
    a = ap.parse_args(argv)

    import time

    from prunekit import UsageError
    from prunekit_hashgrid.train import resolve_device

    t_start = time.perf_counter()
    try:
        resolve_device(a.device)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    grid = ["--log2-table", "19", "--levels", "16", "--max-res", "2048"]
    fr = [f"{float(x):g}" for x in a.fractions.split(",")]
    runs = ",".join(["dense", *(f"{k}@{f}" for f in fr for k in ("hollow", "dense-matched"))])
    n_runs = 1 + 2 * len(fr)
    steps = a.steps
    if steps <= 0:
        scaling = _load("hollownerf_scaling")
        cal = scaling.one_train("paper", a.batch_rays, a.samples, a.calib_steps, a.device)
        step_s = cal["wall_seconds_per_step"]
        per_sample = step_s / (a.batch_rays * a.samples)
        pixels = 1080 * 1920 / a.downscale**2
        eval_s = per_sample * pixels * a.samples * (6 + a.train_eval_views)  # forward only: generous
        spent = time.perf_counter() - t_start
        reserve = spent + 40 + n_runs * eval_s + len(fr) * a.compact_seconds
        steps = max(100, int((a.seconds - reserve) / (n_runs * step_s)))
        peak = cal.get("cuda_peak_mb", cal["peak_rss_mb"])
        print(f"calibration: {step_s * 1e3:.1f} ms/step at {a.batch_rays} rays x {a.samples} samples (peak {peak:.0f} "
              f"MiB); reserve {reserve:.0f} s (eval ~{eval_s:.0f} s/run) -> {steps} steps per run", flush=True)
    bench = _load("bench_hollownerf")
    return bench.main(["--scene", a.scene, "--downscale", str(a.downscale), *grid, "--steps", str(steps),
                       "--batch-rays", str(a.batch_rays), "--samples", str(a.samples), "--fractions", ",".join(fr),
                       "--target", str(a.target), "--seed", str(a.seed), "--only", runs, "--device", a.device,
                       "--train-eval-views", str(a.train_eval_views), "--threads", str(a.threads),
                       "-o", a.output])


if __name__ == "__main__":
    sys.exit(main())
