#!/usr/bin/env python
"""HollowNeRF in the paper's regime on a lent GPU, as one command that fits one device call.

Instant-NGP-size tables (16 levels, 2^19 rows per level, finest resolution 2048: nerfacto's torch
``HashEncoding``, METHODS.md 5.2) on the fox capture at 1/``--downscale`` resolution:

1. one-line error and exit 2 unless CUDA is available;
2. times ``--calib-steps`` training steps of that grid at ``--batch-rays`` on the GPU (every sample evaluated,
   as in dense training and in HollowNeRF before the freeze: an upper bound on the step time);
3. sizes the training steps so that the five runs dense, hollow@0.3, dense-matched@0.3, hollow@0.55,
   dense-matched@0.55 fit into ``--seconds``, after reserving time for loading, CPU compaction and
   evaluation (estimates, printed);
4. runs ``bench_hollownerf.py`` with those steps on CUDA; it rewrites ``--output`` after every run, in that
   order, so a cut-off run still leaves the first target's three runs.

    PYTHONPATH=core:plugins python scripts/bench/hollownerf_gpu_check.py --scene PATH/TO/fox
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = "dense,hollow@0.3,dense-matched@0.3,hollow@0.55,dense-matched@0.55"


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
    ap.add_argument("--calib-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=0, help="skip the sizing and train this many steps per run")
    ap.add_argument("--compact-seconds", type=float, default=30, help="reserve per hollow run (CPU compaction)")
    ap.add_argument("--train-eval-views", type=int, default=4)
    ap.add_argument("-o", "--output", default=str(HERE.parents[1] / "bench-out" / "hollownerf-gpu-fox.json"))
    a = ap.parse_args(argv)

    import time

    from prunekit import UsageError
    from prunekit_hashgrid.train import resolve_device

    t_start = time.perf_counter()
    try:
        resolve_device("cuda")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    grid = ["--log2-table", "19", "--levels", "16", "--max-res", "2048"]
    steps = a.steps
    if steps <= 0:
        scaling = _load("hollownerf_scaling")
        cal = scaling.one_train("paper", a.batch_rays, a.samples, a.calib_steps, "cuda")
        step_s = cal["wall_seconds_per_step"]
        per_sample = step_s / (a.batch_rays * a.samples)
        pixels = 1080 * 1920 / a.downscale**2
        eval_s = per_sample * pixels * a.samples * (6 + a.train_eval_views)  # forward only: generous
        spent = time.perf_counter() - t_start
        reserve = spent + 40 + 5 * eval_s + 2 * a.compact_seconds
        steps = max(100, int((a.seconds - reserve) / (5 * step_s)))
        print(f"calibration: {step_s * 1e3:.1f} ms/step at {a.batch_rays} rays x {a.samples} samples "
              f"(peak {cal['cuda_peak_mb']:.0f} MiB); reserve {reserve:.0f} s (eval ~{eval_s:.0f} s/run) -> "
              f"{steps} steps per run", flush=True)
    bench = _load("bench_hollownerf")
    return bench.main(["--scene", a.scene, "--downscale", str(a.downscale), *grid, "--steps", str(steps),
                       "--batch-rays", str(a.batch_rays), "--samples", str(a.samples), "--fractions", "0.3,0.55",
                       "--only", RUNS, "--device", "cuda", "--train-eval-views", str(a.train_eval_views),
                       "--threads", "8", "-o", a.output])


if __name__ == "__main__":
    sys.exit(main())
