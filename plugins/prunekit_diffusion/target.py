"""``FileTarget`` for saved diffusers pipelines and models (directories).

``prunekit prune MODEL_DIR -m ld-pruner --keep 0.65 -o OUT_DIR`` reads a directory
written by ``save_pretrained`` (a pipeline with ``model_index.json`` or a single model
with ``config.json``; pruned ones via their manifest), scores the denoiser's operators
on a calibration set built from the options below, removes the unselected operators
and writes OUT_DIR in the same layout (see :mod:`~prunekit_diffusion.serialization`).

A bare model directory has no scheduler; ``DDIMScheduler()`` with diffusers' default
(linear) training schedule is used for the calibration passes then.

Output paths are directories without a suffix (the core's output check compares
suffixes). OUT_DIR must not exist or be empty: the directory is written beside it under
a temporary name and renamed into place, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from prunekit import option
from prunekit.errors import InputError, UsageError

from . import api
from .operators import candidates, discover_operators, total_macs
from .sampling import Calibration, sample_latents
from .scoring import GROUP, latent_distance, ld_pruner_scores, random_scores, removable, select_operators
from .serialization import MANIFEST, load_pruned, save_model, save_pipeline
from .bypass import remove_operators, removal_history


@dataclass
class DiffusionOptions:
    calib_n: int = option(8, "samples generated per scoring pass (LD-Pruner's n; at least 2)")
    steps: int = option(10, "denoising steps per calibration sample")
    seed: int = option(0, "seed of the calibration noise (sample i uses seed + i)")
    classes: str = option("", "comma-separated class labels to calibrate on (class-conditional models; default: all)")
    calib: str = option("", "text file with one calibration prompt per line (text-conditioned pipelines)")
    guidance_scale: float = option(1.0, "classifier-free guidance scale of the calibration passes")
    batch_size: int = option(16, "samples per denoiser call")
    progress: bool = option(True, "show a progress bar over the scoring passes")
    keep_per_block: int = option(0, "keep at least this many operators in every denoiser block, so no resolution "
                                    "level is emptied (our constraint, not the paper's; 0: off)")
    granularity: Literal["operator", "sublayer"] = option(
        "operator", "operator: the paper's operators (UNet resnets/attentions, whole DiT blocks); sublayer: the "
        "attention / feed-forward sublayers of DiT-family blocks (our extension)")


@dataclass
class DiffusersBundle:
    """A loaded directory: the denoiser, its scheduler and (if any) the whole pipeline."""

    model: torch.nn.Module
    scheduler: Any
    pipeline: Any = None
    component: str | None = None


@dataclass
class DiffusionContext:
    calibration: Calibration
    operators: list
    total_macs: int
    progress: bool = True


def _default_example(b: DiffusersBundle):
    """A probe input for sizes: class 0 / zero text embeddings of the tokenizer's length."""
    m = b.model
    cond: dict[str, torch.Tensor] = {}
    if api.num_classes(m) is not None:
        cond["class_labels"] = torch.zeros(1, dtype=torch.long)
    elif m.config.get("cross_attention_dim"):
        tok = getattr(b.pipeline, "tokenizer", None) if b.pipeline is not None else None
        length = int(getattr(tok, "model_max_length", 77) or 77)
        dim = m.config["cross_attention_dim"]
        cond["encoder_hidden_states"] = torch.zeros(1, min(length, 77), int(dim if isinstance(dim, int) else dim[0]))
    return Calibration(n=1, cond=cond).example(m)


class DiffusersTarget:
    domain = "diffusion"
    suffixes = ("",)
    reads = "diffusers pipeline or model folders (with model_index.json or config.json)"
    options = DiffusionOptions

    def can_read(self, path) -> bool:
        p = Path(path)
        return p.is_dir() and ((p / "model_index.json").exists() or (p / "config.json").exists())

    def load(self, path) -> DiffusersBundle:
        p = Path(path)
        if not self.can_read(p):
            raise InputError(f"{p}: not a diffusers pipeline or model directory (no model_index.json or config.json)")
        obj = load_pruned(p)
        if isinstance(obj, torch.nn.Module):
            if not candidates(obj):
                raise InputError(f"{p}: {type(obj).__name__} is not a denoiser with prunable operators")
            from diffusers import DDIMScheduler

            return DiffusersBundle(obj.eval(), DDIMScheduler())
        try:
            name, model = api.find_denoiser(obj)
        except UsageError as e:
            raise InputError(f"{p}: {e}") from None
        return DiffusersBundle(model.eval(), obj.scheduler, obj, name)

    def save(self, obj: DiffusersBundle, path) -> None:
        tmp = Path(path)
        # the core hands over a temporary *file* beside the destination and renames it
        # onto the destination afterwards; a directory takes its place here.
        dest = tmp.parent / tmp.name[1:].rsplit(".part", 1)[0].rsplit(".", 1)[0] if tmp.name.startswith(".") else None
        if dest is not None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UsageError(f"{dest}: output exists and is not an empty directory")
        tmp.unlink(missing_ok=True)
        try:
            if obj.pipeline is not None:
                save_pipeline(obj.pipeline, tmp)
            else:
                save_model(obj.model, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.touch()  # the core removes its temporary file on failure
            raise

    def size(self, obj: DiffusersBundle) -> dict[str, float]:
        return api.size_of(obj.model, _default_example(obj))

    def info(self, obj: DiffusersBundle, path) -> dict[str, Any]:
        ops = discover_operators(obj.model, _default_example(obj))
        d: dict[str, Any] = {
            "path": str(path), "denoiser": type(obj.model).__name__,
            "pipeline": type(obj.pipeline).__name__ if obj.pipeline is not None else "-",
            **{k: int(v) for k, v in self.size(obj).items()},
            "removable operators": sum(op.removable for op in ops),
            "already removed": len(removal_history(obj.model)),
            "operators": {op.name: f"{op.kind} macs={op.macs:,} params={op.params:,}"
                          + ("" if op.removable else f" (kept: {op.reason})") for op in ops},
        }
        return d

    def _calibration(self, obj: DiffusersBundle, o: DiffusionOptions) -> Calibration:
        calib: Any = None
        if o.classes and o.calib:
            raise UsageError("give --classes (class-conditional models) or --calib (prompts), not both")
        if o.classes:
            try:
                calib = [int(c) for c in o.classes.split(",") if c.strip()]
            except ValueError:
                raise UsageError(f"--classes: expected comma-separated integers, got {o.classes!r}") from None
        if o.calib:
            p = Path(o.calib)
            if not p.is_file():
                raise InputError(f"{p}: no such prompt file")
            calib = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            if not calib:
                raise InputError(f"{p}: no prompts (one per line expected)")
        try:
            return api.make_calibration(obj.model, calib, pipe=obj.pipeline, n=o.calib_n, steps=o.steps, seed=o.seed,
                                        guidance_scale=o.guidance_scale, batch_size=o.batch_size)
        except ValueError as e:
            raise UsageError(str(e)) from None

    def context(self, obj: DiffusersBundle, options: DiffusionOptions, path) -> DiffusionContext:
        calib = self._calibration(obj, options)
        example = calib.example(obj.model)
        return DiffusionContext(calib, discover_operators(obj.model, example, granularity=options.granularity),
                                total_macs(obj.model, example), options.progress)

    def apply(self, obj: DiffusersBundle, mask, context: DiffusionContext, options, report,
              scores=None, budget=None) -> DiffusersBundle:
        units = removable(context.operators)
        if options.keep_per_block:  # the core's mask has no block groups: select again with them and the floor
            mask = select_operators(scores, units, budget, options.keep_per_block)
            report.notes.append(f"keep_per_block={options.keep_per_block}: selected with one group per denoiser "
                                "block and that floor (scoring.select_operators)")
        keep = mask[GROUP].tolist()
        drop = [op for op, k in zip(units, keep) if not k]
        records = remove_operators(obj.model, drop)
        obj.model.eval()
        report.extra["removed"] = records
        report.notes.append(f"removed {len(drop)} of {len(units)} removable operators: "
                            + (", ".join(op.name for op in drop) or "none"))
        if obj.pipeline is not None:
            obj.pipeline = type(obj.pipeline)(**{**obj.pipeline.components, obj.component: obj.model})
        return obj

    def evaluate(self, ref: DiffusersBundle, cand: DiffusersBundle, options: DiffusionOptions, report) -> dict[str, float]:
        """LD-Pruner's latent-statistics distance between the two denoisers on the calibration set."""
        calib = self._calibration(ref, options)
        a = sample_latents(ref.model.eval(), ref.scheduler, calib)
        b = sample_latents(cand.model.eval(), ref.scheduler, calib)
        return {"latent_distance": latent_distance(a, b), "latent_mse": float((a - b).pow(2).mean()),
                "reference_latent_std": float(a.std())}


TARGET = DiffusersTarget()


def _stash_budget(cfg, ctx: DiffusionContext) -> None:
    if cfg is not None and hasattr(cfg, "_total_macs"):
        cfg._total_macs = float(ctx.total_macs)
        cfg._fixed_macs = float(ctx.total_macs - sum(max(op.saved_macs, 0) for op in removable(ctx.operators)))


def ld_pruner_scorer(obj: DiffusersBundle, ctx: DiffusionContext, cfg=None):
    """Plugin scorer: LD-Pruner scores of the removable operators (see :mod:`~prunekit_diffusion.scoring`)."""
    _stash_budget(cfg, ctx)
    return ld_pruner_scores(obj.model, obj.scheduler, ctx.operators, ctx.calibration,
                            progress=ctx.progress)


def random_operator_scorer(obj: DiffusersBundle, ctx: DiffusionContext, cfg=None):
    """Plugin scorer: random scores (baseline) with the same MAC costs."""
    _stash_budget(cfg, ctx)
    return random_scores(ctx.operators, getattr(cfg, "random_seed", 0))
