"""Speed of the pure-PyTorch splat renderer (prunekit_splat.render, backend="torch").

Scenes: the real 45,624-Gaussian donut (shared data), a 150k scene made by tiling it on a
grid (``common.tile_scene``: many small copies) and a 150k "dense" scene (3.3 jittered
copies in place: about 3.3x the depth complexity). Views: ``synthesize_cameras`` (seed 0),
256x256. Per scene and thread count it measures, per view (median over views), the wall
and process-CPU seconds of a forward render without grad, of forward + backward of the
image sum with grad on all scene tensors, and of a render with all four statistics.
Baseline in the same run: the same renderer with 16x16 tiles (the gsplat tile size)
instead of the default 8x8; ``speedup_vs_tile16`` are ratios of median wall times.
``threads`` is the renderer's ``threads=`` argument (torch intra-op threads for the render
and its backward; the library default is 1).

The machine is shared with other jobs: ``loadavg`` is recorded before each block, and
process-CPU time (which excludes time spent waiting for a core) is reported beside wall
time. Usage: python scripts/bench/bench_render.py [--views 6] [--size 256] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, tile_scene, write_result  # noqa: E402

from prunekit_splat.cameras import synthesize_cameras  # noqa: E402
from prunekit_splat.formats import read_scene  # noqa: E402
from prunekit_splat.render import render  # noqa: E402
from prunekit_splat.scene import GaussianScene  # noqa: E402


def dense_copies(scene: GaussianScene, n: int, seed: int = 0) -> GaussianScene:
    """``n`` Gaussians: copies of ``scene`` in place, centres jittered by half their scale."""
    reps = -(-n // len(scene))
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(len(scene)).repeat(reps)[:n]
    base = scene.subset(idx)
    jitter = torch.randn(n, 3, generator=g) * 0.5 * torch.exp(base.scales)
    return base.replace(means=base.means + jitter)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def measure(scene: GaussianScene, cams, tile_size: int, threads: int) -> dict:
    rows = {"forward": [], "forward_backward": [], "stats": []}
    pairs_visible = []
    for cam in cams:
        with torch.no_grad():
            res, w, c = timed(lambda: render(scene, cam, backend="torch", tile_size=tile_size, threads=threads))
        rows["forward"].append((w, c))
        pairs_visible.append(int(res.visible.sum()))
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in scene.tensors().items()}

        def fwd_bwd():
            r = render(GaussianScene(**leaves), cam, backend="torch", tile_size=tile_size, threads=threads)
            r.image.sum().backward()
            return r

        _, w, c = timed(fwd_bwd)
        rows["forward_backward"].append((w, c))
        with torch.no_grad():
            _, w, c = timed(lambda: render(scene, cam, backend="torch", tile_size=tile_size, stats=True,
                                            threads=threads))
        rows["stats"].append((w, c))
    out = {}
    for k, v in rows.items():
        out[f"{k}_wall_s"] = statistics.median(x[0] for x in v)
        out[f"{k}_cpu_s"] = statistics.median(x[1] for x in v)
        out[f"{k}_wall_s_max"] = max(x[0] for x in v)
    out["visible_gaussians_median"] = statistics.median(pairs_visible)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-baseline", action="store_true", help="skip the 16x16-tile baseline")
    args = ap.parse_args(argv)
    src = DATA / "splats" / "donut.ply"
    if not src.exists():
        print(f"skipped: {src} not found")
        return
    donut = read_scene(src)
    scenes = {
        "donut_45k": donut,
        "tiled_150k": tile_scene(donut, 150_000),
        "dense_150k": dense_copies(donut, 150_000),
    }
    results = []
    inputs = {"scene": str(src), "cameras": "synthesize_cameras(seed=0)", "views": args.views, "size": args.size,
              "threads": args.threads}
    notes = ("median over views; wall and process-CPU seconds; baseline = same renderer with 16x16 tiles; "
             "the JSON is rewritten after every block, 'complete' says whether all blocks ran")
    path = None
    blocks = [(name, threads) for threads in args.threads for name in scenes]  # all 1-thread blocks first
    for i, (name, threads) in enumerate(blocks):
        scene = scenes[name]
        cams = synthesize_cameras(scene, n=args.views, width=args.size, height=args.size, seed=0)
        render(scene, cams[0], backend="torch", threads=threads)  # warm-up
        entry = {"scene": name, "gaussians": len(scene), "threads": threads, "views": len(cams),
                 "size": args.size, "loadavg_before": os.getloadavg()}
        entry["tile8"] = measure(scene, cams, 8, threads)
        if not args.no_baseline:
            entry["baseline_tile16"] = measure(scene, cams, 16, threads)
            entry["speedup_vs_tile16"] = {
                k: entry["baseline_tile16"][f"{k}_wall_s"] / entry["tile8"][f"{k}_wall_s"]
                for k in ("forward", "forward_backward", "stats")}
        results.append(entry)
        t8 = entry["tile8"]
        print(f"{name:11s} threads={threads} fwd {t8['forward_wall_s']:.2f}s (cpu {t8['forward_cpu_s']:.2f}) "
              f"fwd+bwd {t8['forward_backward_wall_s']:.2f}s (cpu {t8['forward_backward_cpu_s']:.2f}) "
              f"stats {t8['stats_wall_s']:.2f}s  load {entry['loadavg_before'][0]:.1f}", flush=True)
        path = write_result("render", {"inputs": inputs, "results": results, "notes": notes,
                                       "complete": i == len(blocks) - 1})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
