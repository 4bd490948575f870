"""``prunekit prune/info/eval`` for Gaussian-splat scene files (the splat domain's FileTarget)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from prunekit import UsageError, option

from .scene import GaussianScene


@dataclass
class SplatPruneOptions:
    cameras: Optional[str] = option(None, "cameras.json (INRIA) or transforms.json; default: views synthesised over the sphere")
    views: int = option(64, "number of synthesised views when --cameras is not given")
    resolution: int = option(256, "long side (pixels) of scoring, distillation and evaluation renders")
    merge: bool = option(False, "fold pruned Gaussians into their nearest kept neighbours (moment matching)")
    merge_rounds: int = option(5, "reach the budget in this many select-and-merge rounds (with --merge)")
    drop_unseen: bool = option(True, "with --merge, remove Gaussians no scoring view sees instead of merging them")
    distill: int = option(0, "Adam steps fitting the kept Gaussians to the original scene's own renders")
    images: Optional[str] = option(None, "transforms.json with real images: fine-tune against those instead")
    eval_views: int = option(32, "views for `prunekit eval` (a different set from the scoring views)")
    compensate: int = option(0, "train SUNDAE's image-space compensation net this many steps after pruning; "
                                "saved beside the output as NAME.compensation.safetensors, applied by eval")
    compensation_channels: int = option(16, "width of the compensation UNet's first level (SUNDAE: 64)")
    sweep: Optional[str] = option(None, "keep ratios, e.g. 0.05,0.1,0.3: with --report DIR also prune to each "
                                        "(same scores), write DIR/NAME_keepR.EXT and plot PSNR vs keep there")
    seed: int = option(0, "seed of view synthesis and distillation")
    progress: bool = option(True, "progress bars on stderr")

    def __post_init__(self) -> None:
        for name in ("views", "resolution", "eval_views", "merge_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.distill < 0:
            raise ValueError(f"--distill must be >= 0, got {self.distill}")
        from .sweep import parse_ratios

        parse_ratios(self.sweep)
        if self.compensate < 0 or self.compensation_channels < 1:
            raise ValueError(f"--compensate must be >= 0 and --compensation-channels >= 1, got {self.compensate}, "
                             f"{self.compensation_channels}")


SWEEP_NEEDS_REPORT = "--sweep was not run: it writes into the --report DIR, and none was given"


def _cameras(scene: GaussianScene, opts: SplatPruneOptions, n: int, seed: int):
    from .cameras import load_cameras, synthesize_cameras

    if opts.cameras:
        cams = load_cameras(opts.cameras)
        if not cams:
            raise UsageError(f"{opts.cameras}: no usable cameras")
    else:
        cams = synthesize_cameras(scene, n=n, width=opts.resolution, height=opts.resolution, seed=seed)
    out = []
    for c in cams:
        f = opts.resolution / max(c.width, c.height)
        out.append(c.scaled(f) if abs(f - 1) > 1e-6 else c)
    return out


class SplatFiles:
    domain = "splat"
    options = SplatPruneOptions

    @property
    def suffixes(self) -> tuple[str, ...]:
        from .formats import SUFFIXES

        return tuple(SUFFIXES)

    @property
    def writable(self) -> tuple[str, ...]:
        from .formats import WRITE_SUFFIXES

        return tuple(WRITE_SUFFIXES)

    def can_read(self, path) -> bool:
        name = Path(path).name.lower()
        return any(name.endswith(s) for s in self.suffixes)

    def load(self, path) -> GaussianScene:
        from .compensation import attach_sidecar
        from .formats import read_scene

        return attach_sidecar(read_scene(path), path)

    def save(self, scene: GaussianScene, path) -> None:
        from .compensation import write_sidecar
        from .formats import write_scene

        write_scene(scene, path)
        write_sidecar(scene)

    def size(self, scene: GaussianScene) -> dict[str, float]:
        return {"gaussians": len(scene), "bytes": len(scene) * scene.bytes_per_gaussian()}

    def info(self, scene: GaussianScene, path) -> dict[str, Any]:
        lo, hi = scene.bounds()
        rlo, rhi = scene.bounds(0.01)
        d: dict[str, Any] = {
            "file": str(path),
            "format": scene.meta.get("format", Path(path).suffix.lstrip(".")),
            "gaussians": len(scene),
            "sh_degree": scene.sh_degree,
            "file_bytes": Path(path).stat().st_size,
            "bytes_per_gaussian": scene.bytes_per_gaussian(),
            "bounds_min": [round(float(v), 4) for v in lo],
            "bounds_max": [round(float(v), 4) for v in hi],
            "robust_bounds_1_99": [[round(float(v), 4) for v in rlo], [round(float(v), 4) for v in rhi]],
            "extra_properties": sorted(scene.extra),
        }
        if len(scene):
            d["opacity_histogram"] = _histogram(scene.opacity, torch.linspace(0, 1, 11))
            s = scene.scales.max(dim=1).values
            d["log_max_scale_histogram"] = _histogram(s, torch.linspace(float(s.min()), float(s.max()) + 1e-6, 9))
        if scene.meta.get("repairs"):
            d["repairs"] = scene.meta["repairs"]
        return d

    def context(self, scene: GaussianScene, opts: SplatPruneOptions, path):
        from .context import LazyViews, SplatContext

        views = LazyViews(lambda: _cameras(scene, opts, opts.views, opts.seed))
        if opts.cameras:
            views.resolve()  # a bad --cameras file is an error whatever the method
        return SplatContext(scene, views, progress=opts.progress)

    def apply(self, scene: GaussianScene, mask, ctx, opts: SplatPruneOptions, report, scores=None,
              budget=None) -> GaussianScene:
        if scores is not None:
            ctx.info["scores_budget"] = (scores, budget)  # for --sweep
            if opts.sweep:
                report.notes.append(SWEEP_NEEDS_REPORT)  # removed by write_report when --report runs it
        if opts.merge and scores is not None:
            from .merge import merge_progressive

            drop = ctx.stats()["hits"] == 0 if opts.drop_unseen else None
            out = merge_progressive(scene, scores.groups["units"], budget, rounds=opts.merge_rounds, drop=drop)
            report.notes.append(f"merge: {out.meta['merged_parts']} pruned Gaussians folded into kept ones "
                                f"in {out.meta['merge_rounds']} rounds"
                                + (f"; {out.meta['dropped_unseen']} unseen from every scoring view removed"
                                   if out.meta.get("dropped_unseen") else ""))
        else:
            out = scene.subset(mask.only)
        if opts.images:
            from .distill import finetune_on_images

            steps = opts.distill or 400
            out = finetune_on_images(out, opts.images, steps=steps, resolution=opts.resolution, seed=opts.seed,
                                     progress=opts.progress)
            report.notes.append(f"fine-tuned {steps} steps on the images of {opts.images}")
        elif opts.distill:
            from .distill import distill

            out = distill(out, scene, ctx.cameras, steps=opts.distill, seed=opts.seed, progress=opts.progress)
            report.notes.append(f"distilled {opts.distill} steps against the original scene's renders "
                                f"({len(ctx.cameras)} views at {opts.resolution} px)")
        from .compensation import compensate_after_prune

        return compensate_after_prune(out, scene, ctx.cameras, opts, report)

    def evaluate(self, ref: GaussianScene, cand: GaussianScene, opts: SplatPruneOptions, report) -> dict[str, float]:
        cams = self.eval_cameras(ref, opts)
        ps, ss, _ = _compare(ref, cand, cams)
        finite = [p for p in ps if math.isfinite(p)]
        out = {"psnr": sum(finite) / len(finite) if finite else float("inf"), "ssim": sum(ss) / len(ss),
               "views": len(cams)}
        if cand.meta.get("compensation") is not None:
            from .compensation import cost_ms

            out.update(cost_ms(cand, cams))
        return out

    def eval_cameras(self, scene: GaussianScene, opts: SplatPruneOptions):
        """Held-out views of ``prunekit eval`` and ``--sweep`` (not the scoring views)."""
        return _cameras(scene, opts, opts.eval_views, opts.seed + 1000)

    def write_report(self, original: GaussianScene, pruned: GaussianScene, ctx, opts: SplatPruneOptions, report,
                      folder) -> None:
        """before/after side-by-side PNG from three held-out views, with PSNR in the report."""
        import numpy as np
        from PIL import Image

        cams = _cameras(original, opts, 3, opts.seed + 1000)[:3]
        ps, _, pairs = _compare(original, pruned, cams)
        rows = [torch.cat([a, torch.ones(a.shape[0], 4, 3), b], dim=1) for a, b in pairs]
        grid = torch.cat([torch.cat([r, torch.ones(4, r.shape[1], 3)]) for r in rows])[:-4]
        img = (grid.clamp(0, 1).numpy() * 255).astype(np.uint8)
        Image.fromarray(img).save(Path(folder) / "before_after.png")
        report.metrics["report_views_psnr"] = sum(ps) / len(ps)
        report.notes.append(f"before/after image: {Path(folder) / 'before_after.png'} (left original, right pruned)")
        if opts.sweep and "scores_budget" in ctx.info:
            from .sweep import run_sweep

            if SWEEP_NEEDS_REPORT in report.notes:
                report.notes.remove(SWEEP_NEEDS_REPORT)
            run_sweep(self, original, ctx, opts, report, Path(folder), *ctx.info["scores_budget"])


def _compare(ref: GaussianScene, cand: GaussianScene, cams) -> tuple[list[float], list[float], list]:
    """PSNR and SSIM of ``cand``'s renders against ``ref``'s from each camera, and the image pairs."""
    from .compensation import apply as compensate
    from .metrics import psnr, ssim
    from .render import render

    ps, ss, pairs = [], [], []
    with torch.no_grad():
        for cam in cams:  # each scene with its SUNDAE compensation net, if it has one
            a = compensate(ref.meta.get("compensation"), render(ref, cam).image)
            b = compensate(cand.meta.get("compensation"), render(cand, cam).image)
            ps.append(psnr(a, b))
            ss.append(float(ssim(a, b)))
            pairs.append((a, b))
    return ps, ss, pairs


def _histogram(values: torch.Tensor, edges: torch.Tensor) -> dict[str, int]:
    counts = torch.histogram(values.float().clamp(float(edges[0]), float(edges[-1])), bins=edges.float()).hist
    return {f"{float(a):.3g}..{float(b):.3g}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts)}


SPLAT_FILES = SplatFiles()

