"""Shared helpers for benchmarks: inputs, JSON output, splat-transform location."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import torch

from prunekit.fileio import atomic_write_text
from prunekit.report import machine_info

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PRUNEKIT_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench-out"
WORK = ROOT / ".cache" / "bench"


def splat_transform() -> list[str] | None:
    """Command for PlayCanvas splat-transform (npm), installed into .cache/npm if missing."""
    local = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "splat-transform"
    if not local.exists() and shutil.which("npm"):
        local.parent.parent.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "@playcanvas/splat-transform"], cwd=local.parents[2],
                       capture_output=True, timeout=600)
    if local.exists():
        return [str(local)]
    return [shutil.which("splat-transform")] if shutil.which("splat-transform") else None


def splat_transform_version(cmd: list[str]) -> str:
    r = subprocess.run([*cmd, "--version"], capture_output=True, text=True)
    return (r.stdout or r.stderr).strip()


def decimate(cmd: list[str], src: Path, dst: Path, count: int) -> float:
    """Run splat-transform's merge-based decimation to ``count`` Gaussians; returns seconds."""
    t = time.perf_counter()
    r = subprocess.run([*cmd, "-q", "-w", "-g", "cpu", str(src), "--decimate", str(count), str(dst)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"splat-transform failed: {r.stderr.strip()[-500:]}")
    return time.perf_counter() - t


def write_result(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = OUT / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
    return path


def tile_scene(scene, n: int):
    """A scene of exactly ``n`` Gaussians made by tiling ``scene`` on a grid of offsets."""
    from prunekit_splat.scene import GaussianScene

    reps = -(-n // len(scene))
    lo, hi = scene.bounds()
    step = float((hi - lo).max()) * 1.1
    side = int(round(reps ** (1 / 3))) + 1
    parts = []
    for i in range(reps):
        off = torch.tensor([i % side, (i // side) % side, i // (side * side)], dtype=torch.float32) * step
        parts.append(scene.means + off)
    cat = lambda name: torch.cat([getattr(scene, name)] * reps)[:n]  # noqa: E731
    return GaussianScene(means=torch.cat(parts)[:n], quats=cat("quats"), scales=cat("scales"),
                         opacities=cat("opacities"), sh0=cat("sh0"), shN=cat("shN"),
                         extra={k: torch.cat([v] * reps)[:n] for k, v in scene.extra.items()})


def across_runs(xs) -> dict:
    """Mean, sample SD and SE of the mean ``sd / sqrt(K)`` over K replicate runs (SD and SE None for one run).
    Shared by the replicate-pooling scripts (``ldpruner_seeds.py``, ``tsp3d_runs.py``)."""
    xs = [float(x) for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else None
    return {"mean": statistics.fmean(xs), "sd": sd, "se": sd / len(xs) ** 0.5 if sd is not None else None,
            "runs": len(xs)}


def paired_difference(x, y) -> dict:
    """Paired difference over the same samples: mean of ``d_i = x_i - y_i`` and its standard error
    ``std(d, ddof=1) / sqrt(n)`` (None for one sample). Shared by the APTP and TSP3D benchmarks."""
    d = torch.as_tensor(x, dtype=torch.float64) - torch.as_tensor(y, dtype=torch.float64)
    se = float(d.std() / len(d) ** 0.5) if len(d) > 1 else None
    return {"diff": float(d.mean()), "se": se, "n": len(d)}
