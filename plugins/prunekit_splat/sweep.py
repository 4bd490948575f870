"""Quality-vs-keep sweep for ``prunekit prune ... --sweep 0.05,0.1,0.3 --report DIR``.

The scores are computed once (by the main prune); each sweep ratio reselects with
:func:`prunekit.select` under the same budget settings, applies the same recovery steps
(``--merge``, ``--distill``, ``--images``), writes ``DIR/<input stem>_keep<R><suffix>``
atomically, and measures PSNR/SSIM against the original's renders from the held-out
evaluation views (the ``prunekit eval`` set, not the scoring views). Results go to
``DIR/sweep.json``, ``report.extra["sweep"]`` and the plot ``DIR/quality_vs_keep.png``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

import prunekit
from prunekit.fileio import atomic_path, atomic_write_text


def parse_ratios(text: str | None) -> list[float]:
    """``"0.05,0.1,0.3"`` -> sorted unique ratios, each in (0, 1]; ValueError otherwise."""
    if not text:
        return []
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--sweep must be comma-separated keep ratios, got {text!r}") from None
    bad = [v for v in vals if not 0.0 < v <= 1.0]
    if bad or not vals:
        raise ValueError(f"--sweep ratios must lie in (0, 1], got {text!r}")
    return sorted(set(vals))


def run_sweep(target, original, ctx, opts, report, folder: Path, scores, budget) -> list[dict]:
    from .metrics import psnr, ssim
    from .render import render

    ratios = parse_ratios(opts.sweep)
    src = Path(report.input)
    suffix = Path(report.output).suffix if report.output else src.suffix
    cams = target.eval_cameras(original, opts)
    with torch.no_grad():
        refs = [render(original, c).image for c in cams]
    quiet = dataclasses.replace(opts, sweep=None)
    rows = []
    for r in ratios:
        b = dataclasses.replace(budget, keep_ratio=r, keep_count=None, threshold=None, cost=None)
        mask = prunekit.select(scores, b)
        sub = prunekit.Report(method=report.method, input=report.input)
        out = target.apply(original, mask, ctx, quiet, sub, scores=scores, budget=b)
        path = folder / f"{src.stem}_keep{r:g}{suffix}"
        with atomic_path(path) as tmp:
            target.save(out, tmp)
        with torch.no_grad():
            imgs = [render(out, c).image for c in cams]
        rows.append({"keep": r, "gaussians": len(out), "file": str(path),
                     "psnr": sum(min(psnr(a, b_), 99.0) for a, b_ in zip(refs, imgs)) / len(cams),
                     "ssim": sum(float(ssim(a, b_)) for a, b_ in zip(refs, imgs)) / len(cams)})
    report.extra["sweep"] = rows
    atomic_write_text(folder / "sweep.json", json.dumps({"method": report.method, "input": report.input,
                                                         "views": len(cams), "rows": rows}, indent=1))
    plot(rows, folder / "quality_vs_keep.png", f"{report.method} on {src.name}")
    report.notes.append(f"sweep over keep {', '.join(f'{r:g}' for r in ratios)}: {folder / 'quality_vs_keep.png'}")
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    """PSNR (dB, held-out views) against keep ratio, log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([r["keep"] for r in rows], [r["psnr"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"{r['psnr']:.1f}", (r["keep"], r["psnr"]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("keep ratio")
    ax.set_ylabel("PSNR vs original (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
