"""Benchmark: INRIA PLY read/write throughput for a synthetic 1M-Gaussian SH-degree-3 scene.

Baseline in the same run: a raw ``readinto`` of the same file into a numpy buffer (the
page-cache/memory-bandwidth ceiling), so ``read_vs_raw`` is the fraction of that ceiling we
reach. Figures are the best of ``--repeats`` warm-cache runs. Writes bench-out/ply_io.json.

    .venv/bin/python scripts/bench/bench_ply_io.py [--n 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prunekit.report import machine_info
from prunekit_splat.formats import read_scene, write_scene
from prunekit_splat.scene import GaussianScene


def synthetic_scene(n: int, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return GaussianScene(means=r(n, 3), quats=r(n, 4), scales=r(n, 3) - 4, opacities=r(n), sh0=r(n, 3),
                         shN=0.1 * r(n, 15, 3), extra={"normals": torch.zeros(n, 3)})


def best(fn, repeats: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (user+sys of this process, all threads) of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def raw_read(path: Path) -> None:
    buf = np.empty(path.stat().st_size, np.uint8)
    with open(path, "rb") as f:
        f.readinto(memoryview(buf))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench-out/ply_io.json")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    scene = synthetic_scene(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.ply"
        write_s = best(lambda: write_scene(scene, path), args.repeats)
        size = path.stat().st_size
        raw_read(path)  # warm the page cache
        raw_s = best(lambda: raw_read(path), args.repeats)
        read_s = best(lambda: read_scene(path), args.repeats)
        back = read_scene(path)
        assert torch.equal(back.shN, scene.shN) and torch.equal(back.means, scene.means)
        path2 = Path(tmp) / "again.ply"
        rewrite_s = best(lambda: write_scene(back, path2), args.repeats)  # header-preserving path
        identical = path.read_bytes() == path2.read_bytes()
    mb = size / 1e6
    timed = {"read": read_s, "write": write_s, "rewrite_preserving_header": rewrite_s, "raw_readinto": raw_s}
    result = {
        "benchmark": "ply_io", "machine": machine_info(),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],  # other jobs share these cores
        "inputs": {"gaussians": args.n, "sh_degree": 3, "normals": True, "file_bytes": size,
                   "repeats": args.repeats, "cache": "warm (file read once before timing)"},
        "wall_seconds": {k: v[0] for k, v in timed.items()},
        "cpu_seconds": {k: v[1] for k, v in timed.items()},
        "mb_per_s": {k: mb / v[0] for k, v in timed.items()},
        "mb_per_cpu_s": {k: mb / v[1] for k, v in timed.items()},
        "ratios": {"read_vs_raw": raw_s[0] / read_s[0]},
        "round_trip_byte_identical": identical,
        "target": {"read_mb_per_s": 500, "met": mb / read_s[0] >= 500},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    keys = ("mb_per_s", "mb_per_cpu_s", "ratios", "load_average_1m_before_after", "target")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
