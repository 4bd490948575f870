"""``prunekit prune scan.ply -m tsp3d --text "..." --checkpoint CKPT -o kept.ply`` (the voxel domain's FileTarget).

Pipeline (``prunekit.api.prune_file``): ``load`` reads the points (``io.read_points``: ``.npy``/``.npz``,
the ScanNet ``*_vert_all.npy`` layout included, ``.ply``/``.pcd``/``.obj`` through open3d); ``context``
loads the checkpoint and encodes the text (frozen all-MiniLM-L6-v2); the scorer voxelises the points at
the checkpoint's voxel size, runs the encoder, the scene-level TGP (its own ``select`` by
``--scene-threshold``) and the neck up to the target-level TGP, and returns the target-level keep scores
of the stride-4 voxels (group ``s4``). The core ``select`` turns those into the mask under the budget
(the config's ``budget_option(given)``: ``--keep/--count/--threshold`` when given, else ``--target-keep/--target-count``, else ``threshold = --target-threshold`` as in the paper); ``apply``
continues the network from that mask (upsampling to stride 2, CBA, head) and keeps the input points that
lie in the stride-2 voxels of the last level. The staged run is the same computation as
``Tsp3dNet.forward`` (tested). The predicted box goes into ``report.extra["tsp3d"]`` and, when an output
is written, into ``OUT_STEM.box.json`` beside it; ``--report DIR`` also draws ``DIR/topdown.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from prunekit import InputError, Scores, UsageError, option

SUFFIXES = (".ply", ".pcd", ".npy", ".npz")


@dataclass
class VoxelPruneOptions:
    text: Optional[str] = option(None, "the referring expression, e.g. \"the chair by the table\" (required)")
    checkpoint: Optional[str] = option(None, "TSP3D checkpoint (.safetensors from scripts/train_tsp3d.py) (required)")
    write: Literal["points", "voxels"] = option("points", "write the input points inside the kept stride-2 voxels, "
                                                          "or the kept stride-2 voxel centres")
    threads: int = option(1, "torch threads (the small sparse ops are far faster single-threaded)")
    plot_points: int = option(200_000, "at most this many points drawn in --report DIR/topdown.png")

    def __post_init__(self) -> None:
        if self.threads < 1 or self.plot_points < 1:
            raise ValueError("--threads and --plot-points must be >= 1")


@dataclass
class PointCloud:
    points: np.ndarray              # N x 3 float64
    colors: np.ndarray | None       # N x 3 in [0, 1]
    meta: dict = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> "PointCloud":
        return PointCloud(self.points[keep], None if self.colors is None else self.colors[keep], dict(self.meta))


@dataclass
class Tsp3dContext:
    net: Any
    voxel_size: float
    info: dict
    text: str
    tokens: Any
    pad: Any
    checkpoint: str
    threads: int = 1
    state: dict = field(default_factory=dict)   # filled by the scorer for apply


@contextlib.contextmanager
def _threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


_ENCODER = None


def _encoder():
    """The frozen text encoder, loaded once per process."""
    global _ENCODER
    if _ENCODER is None:
        with contextlib.suppress(Exception):  # no "Loading weights" bar on the CLI's stderr
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        from .text import TextEncoder

        _ENCODER = TextEncoder()
    return _ENCODER


def box_sidecar(output) -> Path:
    """``kept.ply`` -> ``kept.box.json``."""
    p = Path(output)
    return p.with_name(p.stem + ".box.json")


def _features(pc: PointCloud, cin: int) -> np.ndarray:
    """Per-point input features as in training (``data.scan_voxels``): rgb + occupancy (cin 4), occupancy (cin 1)."""
    n = len(pc.points)
    if cin == 4:
        rgb = pc.colors if pc.colors is not None else np.full((n, 3), 0.5)
        return np.hstack([rgb, np.ones((n, 1))])
    if cin == 1:
        return np.ones((n, 1))
    raise InputError(f"checkpoint expects {cin} input features per voxel; this command supplies 4 (rgb + 1) or 1")


def stage_to_target_level(net, vox, tokens, pad, *, voxel_size: float, prune: bool, scene_threshold: float,
                          min_keep: int, scene_keep: float | None = None) -> dict:
    """``Tsp3dNet.forward`` up to the target-level TGP: returns the text-fused stride-4 voxels after the
    scene-level TGP (keep score >= ``scene_threshold``, or the top ``scene_keep`` fraction when given) and the
    neck, their target-level keep scores (all 1 with ``prune=False``) and what the rest needs."""
    import torch

    from .tgp import keep_scores, tgp_keep

    levels = net.encode(vox)
    t = net.text(tokens)
    counts = {"enc_s1": len(vox), **{f"enc_s{v.stride}": len(v) for v in levels}}
    logits, x = net.fuse(0, levels[2], t, pad, voxel_size)
    ctx = net.context(x, voxel_size)
    if prune:
        budget = {"threshold": scene_threshold} if scene_keep is None else {"keep_ratio": scene_keep}
        x = x.select(tgp_keep(logits, min_keep=min_keep, level=f"s{x.stride}", **budget))
    counts[f"neck_s{x.stride}"] = len(x)
    logits, x = net.fuse(1, net.upsample(0, x, levels[1]), t, pad, voxel_size, ctx)
    scores = keep_scores(logits) if prune else torch.ones(len(x))
    return {"levels": levels, "t": t, "x": x, "scores": scores.detach(), "counts": counts, "context": ctx}


def finish_from_mask(net, st: dict, keep, pad, *, voxel_size: float, prune: bool, cba: bool,
                     cba_threshold: float) -> dict:
    """The rest of ``Tsp3dNet.forward`` after the target-level TGP mask ``keep`` (bool over ``st["x"]``)."""
    levels, t, x, counts = st["levels"], st["t"], st["x"], dict(st["counts"])
    if prune:
        x = x.select(keep)
    counts[f"neck_s{x.stride}"] = len(x)
    x = net.upsample(1, x, levels[0])
    added = 0
    if prune and cba:
        res = net.cba(levels[0], x, voxel_size * levels[0].stride, t, pad, threshold=cba_threshold)
        added = len(res["voxels"]) - len(x)
        x = res["voxels"]
    counts[f"head_s{x.stride}"] = len(x)
    obj, boxes = net.predict_boxes(x, t, pad, voxel_size, context=st["context"])
    best = int(obj.argmax())
    return {"voxels": x, "box": boxes[best].detach(), "objectness": float(obj[best]),
            "counts": counts, "cba_added": added}


def tsp3d_scorer(pc: PointCloud, ctx: Tsp3dContext, cfg) -> Scores:
    """Target-level TGP keep scores of the stride-4 voxels that survive the scene-level TGP (group ``s4``)."""
    import torch

    from .voxelize import voxelize

    vs = float(cfg.voxel_size) if cfg.voxel_size is not None else ctx.voxel_size
    feats = _features(pc, _cin(ctx.net))
    with _threads(ctx.threads), torch.no_grad():
        try:
            vox, inv = voxelize(pc.points, vs, feats)
        except ValueError as e:
            raise InputError(f"cannot voxelise the points: {e}") from None
        st = stage_to_target_level(ctx.net, vox, ctx.tokens, ctx.pad, voxel_size=vs, prune=cfg.tgp,
                                   scene_threshold=cfg.scene_threshold, min_keep=cfg.min_keep,
                                   scene_keep=cfg.scene_keep)
    st.update(vox=vox, inv=inv, voxel_size=vs, cfg=cfg)
    ctx.state = st
    return Scores({"s4": st["scores"]})


def _cin(net) -> int:
    """Input feature width of the network (stem weights are ``(27, cin, d)``)."""
    return int(net.stem.weight.shape[1])


class VoxelFiles:
    domain = "sparse-voxels"
    suffixes = SUFFIXES
    options = VoxelPruneOptions

    def can_read(self, path) -> bool:
        return Path(path).suffix.lower() in SUFFIXES

    def load(self, path) -> PointCloud:
        from .io import read_points

        pts, col = read_points(path)
        if len(pts) == 0:
            raise InputError(f"{path}: no points")
        return PointCloud(pts, col, {"source": str(path)})

    def save(self, pc: PointCloud, path) -> None:
        from prunekit import atomic_write_text

        from .io import write_points

        path = Path(path)
        if path.suffix.lower() == ".npz":
            with open(path, "wb") as f:
                np.savez(f, points=pc.points if pc.colors is None else np.hstack([pc.points, pc.colors]))
        else:
            write_points(path, pc.points, pc.colors)
        box = pc.meta.get("box_json")
        if box is not None and pc.meta.get("box_file"):
            atomic_write_text(pc.meta["box_file"], json.dumps(box, indent=2) + "\n")

    def size(self, pc: PointCloud) -> dict[str, float]:
        return {"points": len(pc.points)}

    def info(self, pc: PointCloud, path) -> dict[str, Any]:
        lo, hi = pc.points.min(0), pc.points.max(0)
        return {"file": str(path), "points": len(pc.points), "colors": pc.colors is not None,
                "file_bytes": Path(path).stat().st_size,
                "bounds_min": [round(float(v), 4) for v in lo], "bounds_max": [round(float(v), 4) for v in hi]}

    def context(self, pc: PointCloud, opts: VoxelPruneOptions, path) -> Tsp3dContext:
        from .checkpoint import load_checkpoint

        if opts.text is None or not opts.text.strip():
            raise UsageError("--text is required: the referring expression to ground, e.g. --text \"the chair by the table\"")
        if not opts.checkpoint:
            raise UsageError("--checkpoint is required: a TSP3D checkpoint (.safetensors from scripts/train_tsp3d.py)")
        net, vs, info = load_checkpoint(opts.checkpoint)
        enc = _encoder()
        if net.text[0].in_features != enc.dim:
            raise InputError(f"{opts.checkpoint}: checkpoint takes {net.text[0].in_features}-d text features, "
                             f"the text encoder (all-MiniLM-L6-v2) gives {enc.dim}-d")
        _features(pc, _cin(net))  # wrong input width: fail before any work
        with _threads(opts.threads):
            tok, pad = enc.encode([opts.text])
        return Tsp3dContext(net, vs, info, opts.text, tok[0], pad[0], str(opts.checkpoint), opts.threads)

    def apply(self, pc: PointCloud, mask, ctx: Tsp3dContext, opts: VoxelPruneOptions, report) -> PointCloud:
        import torch

        from .sparse import parents

        st, cfg = ctx.state, ctx.state["cfg"]
        with _threads(ctx.threads), torch.no_grad():
            res = finish_from_mask(ctx.net, st, mask["s4"], ctx.pad, voxel_size=st["voxel_size"], prune=cfg.tgp,
                                   cba=cfg.cba, cba_threshold=cfg.cba_threshold)
        head = res["voxels"]
        vs = st["voxel_size"]
        point_s2 = parents(st["vox"].coords)[st["inv"]]
        keep_pts = head.contains(point_s2).numpy()
        if opts.write == "points":
            out = pc.subset(keep_pts)
        else:
            ctr = ((head.coords.to(torch.float64) + 0.5) * (vs * head.stride)).numpy()
            out = PointCloud(ctr, None, dict(pc.meta))
        box = [round(float(v), 5) for v in res["box"]]
        counts = {k: int(v) for k, v in res["counts"].items()}
        d = {"text": ctx.text, "box": {"center": box[:3], "size": box[3:]}, "objectness_logit": round(res["objectness"], 5),
             "voxel_size": vs, "voxel_counts": counts, "cba_added": int(res["cba_added"]),
             "points_in": int(len(pc.points)), "points_kept": int(keep_pts.sum()),
             "tgp": bool(cfg.tgp), "cba": bool(cfg.cba), "checkpoint": ctx.checkpoint, "checkpoint_info": ctx.info}
        report.extra["tsp3d"] = d
        report.notes.append(f"TSP3D box centre {box[:3]} size {box[3:]} (m); voxels per level: "
                            + ", ".join(f"{k} {v:,}" for k, v in counts.items())
                            + (f"; CBA added {res['cba_added']}" if cfg.tgp and cfg.cba else ""))
        out.meta["box_json"] = d
        if report.output:
            out.meta["box_file"] = str(box_sidecar(report.output))
            report.extra["box_file"] = out.meta["box_file"]
        ctx.state["kept_points"] = keep_pts
        ctx.state["box"] = box
        return out

    def write_report(self, pc: PointCloud, pruned: PointCloud, ctx: Tsp3dContext, opts: VoxelPruneOptions,
                     report, folder) -> None:
        try:
            import matplotlib
        except ImportError:
            report.notes.append("topdown.png not drawn: matplotlib is not installed")
            return
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        keep = ctx.state["kept_points"]
        box = ctx.state["box"]
        idx = np.arange(len(pc.points))
        if len(idx) > opts.plot_points:
            idx = np.sort(np.random.default_rng(0).choice(len(idx), opts.plot_points, replace=False))
        p, k = pc.points[idx], keep[idx]
        fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
        ax.scatter(p[~k, 0], p[~k, 1], s=0.5, c="0.75", label=f"pruned ({int((~keep).sum()):,})", rasterized=True)
        ax.scatter(p[k, 0], p[k, 1], s=0.8, c="tab:blue", label=f"kept ({int(keep.sum()):,})", rasterized=True)
        cx, cy, _, dx, dy, _ = box
        ax.add_patch(Rectangle((cx - dx / 2, cy - dy / 2), dx, dy, fill=False, ec="tab:red", lw=2,
                               label="predicted box"))
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        title = ctx.text if len(ctx.text) <= 60 else ctx.text[:57] + "..."
        ax.set_title(f"TSP3D top-down: \"{title}\"", fontsize=10)
        ax.legend(loc="upper right", fontsize=8, markerscale=8)
        fig.tight_layout()
        from prunekit import atomic_path

        with atomic_path(Path(folder) / "topdown.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        report.extra["topdown_png"] = str(Path(folder) / "topdown.png")

    def evaluate(self, ref: PointCloud, cand: PointCloud, opts, report) -> dict[str, float]:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(cand.points).query(ref.points, k=1) if len(cand.points) else (np.full(len(ref.points), math.inf), None)
        return {"kept_fraction": len(cand.points) / max(1, len(ref.points)),
                "mean_distance_to_kept_m": float(np.mean(d)) if len(d) else 0.0}


TARGET = VoxelFiles()
