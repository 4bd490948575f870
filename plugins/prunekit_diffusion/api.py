"""Python API: prune a diffusers denoiser or pipeline with LD-Pruner (or the random baseline).

    from prunekit_diffusion import prune_pipeline
    pruned, report = prune_pipeline(pipe, keep_macs=0.65, calib=list(range(10)))
    images = pruned(class_labels=[3, 7]).images      # same call as before
    save_pruned(pruned, "out/pruned")                # reload with load_pruned("out/pruned")

Steps: calibration set → operator discovery (costs at the calibration resolution) →
scores (:mod:`~prunekit_diffusion.scoring`) → :func:`prunekit.select` under a MAC
budget (``keep_macs``: fraction of the denoiser's MACs per call) or an operator-count
budget (``keep_ratio``) → physical removal on a copy of the denoiser. ``rounds > 1`` runs
the iterative variant (:mod:`~prunekit_diffusion.iterative`: remove in rounds, re-score the
survivors); ``per_mac=True`` ranks by score per MAC saved; ``keep_per_block=m`` keeps the ``m``
best-scored operators of every denoiser block (:func:`~prunekit_diffusion.scoring.select_operators`;
for the random baseline too); ``granularity="sublayer"`` makes the operators of a DiT-family
transformer the attention / feed-forward sublayers of its blocks instead of whole blocks
(:mod:`~prunekit_diffusion.sublayers`). All four are our own, opt-in, not the paper's.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from prunekit import Budget, Mask, Report, Scores
from prunekit.errors import UsageError

from .bypass import remove_operators
from .iterative import iterative_ld_pruner
from .operators import Operator, discover_operators, total_macs
from .sampling import Calibration
from .scoring import GROUP, ld_pruner_scores, macs_budget, random_scores, removable, select_operators
from .serialization import DENOISER_COMPONENTS

METHODS = ("ld-pruner", "random")


def num_classes(model: torch.nn.Module) -> int | None:
    """Number of class labels a class-conditional denoiser takes (None if unconditional)."""
    cfg = model.config
    if cfg.get("num_class_embeds"):
        return int(cfg["num_class_embeds"])
    if cfg.get("norm_type") == "ada_norm_zero" and cfg.get("num_embeds_ada_norm"):
        return int(cfg["num_embeds_ada_norm"])
    return None


def null_class(model: torch.nn.Module) -> int | None:
    """The label of the unconditional ("null") class used for classifier-free guidance, if the model has one.

    diffusers' ``LabelEmbedding`` (DiT) keeps an extra row for dropped labels (index = number of
    classes); ``UNet2DModel``'s plain class embedding has none.
    """
    k = num_classes(model)
    for m in model.modules():
        table = getattr(m, "embedding_table", None)
        if type(m).__name__ == "LabelEmbedding" and isinstance(table, torch.nn.Embedding) and table.num_embeddings == k + 1:
            return k
    return None


def find_denoiser(pipe: Any) -> tuple[str, torch.nn.Module]:
    comps = getattr(pipe, "components", {})
    for name in DENOISER_COMPONENTS:
        if isinstance(comps.get(name), torch.nn.Module):
            return name, comps[name]
    raise UsageError(f"{type(pipe).__name__}: no denoiser component (looked for {', '.join(DENOISER_COMPONENTS)})")


def encode_prompts(pipe: Any, prompts: Sequence[str], guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompt embeddings via the pipeline's ``encode_prompt`` (Stable-Diffusion signature)."""
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise UsageError("prompts need a pipeline with a tokenizer and a text encoder")
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(list(prompts), torch.device("cpu"), 1, guidance_scale > 1.0)
    return pe, ne


def make_calibration(model: torch.nn.Module, calib: Any = None, *, pipe: Any = None, n: int = 8, steps: int = 10,
                     seed: int = 0, guidance_scale: float = 1.0, batch_size: int = 16) -> Calibration:
    """A :class:`Calibration` from ``calib``: None, a Calibration, class labels, or prompts.

    - class-conditional denoisers: labels cycle through ``calib`` (default: every class);
      classifier-free guidance uses the null class of :func:`null_class` (DiT's label-dropout row).
    - text-conditioned UNets: ``calib`` is a list of prompts, encoded by ``pipe``.
    - unconditional denoisers: ``calib`` must be None.
    """
    if isinstance(calib, Calibration):
        return calib
    k = num_classes(model)
    if isinstance(calib, (list, tuple)) and calib and all(isinstance(c, str) for c in calib):
        prompts = [calib[i % len(calib)] for i in range(n)]
        pe, ne = encode_prompts(pipe, prompts, guidance_scale)
        return Calibration(n=n, steps=steps, seed=seed, batch_size=batch_size, guidance_scale=guidance_scale,
                           cond={"encoder_hidden_states": pe},
                           uncond={"encoder_hidden_states": ne} if guidance_scale != 1.0 else None)
    if k is not None:
        labels = list(range(k)) if calib is None else [int(c) for c in torch.as_tensor(calib).reshape(-1).tolist()]
        if not labels or min(labels) < 0 or max(labels) >= k:
            raise UsageError(f"class labels must be in 0..{k - 1}, got {labels}")
        y = torch.tensor([labels[i % len(labels)] for i in range(n)], dtype=torch.long)
        unc = None
        if guidance_scale != 1.0:
            null = null_class(model)
            if null is None:
                raise UsageError(f"guidance scale {guidance_scale:g} needs an unconditional (null) class label; "
                                 f"{type(model).__name__} has none (use guidance scale 1)")
            unc = {"class_labels": torch.full_like(y, null)}
        return Calibration(n=n, steps=steps, seed=seed, batch_size=batch_size, guidance_scale=guidance_scale,
                           cond={"class_labels": y}, uncond=unc)
    if type(model).__name__ == "UNet2DConditionModel" or model.config.get("cross_attention_dim"):
        raise UsageError(f"{type(model).__name__} is text-conditioned: calibrate with prompts (a pipeline with a "
                         "text encoder) or pass a Calibration with encoder_hidden_states")
    if calib is not None:
        raise UsageError(f"{type(model).__name__} is unconditional: calib must be None or a Calibration")
    return Calibration(n=n, steps=steps, seed=seed, batch_size=batch_size)


@dataclass
class PruneResult:
    model: torch.nn.Module  # the pruned denoiser (a copy unless inplace=True)
    operators: list[Operator]  # discovered on the unpruned model
    scores: Scores
    mask: Mask  # over the removable operators, True = kept
    removed: list[dict[str, Any]]
    report: Report
    pipeline: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def score_operators(model: torch.nn.Module, scheduler, calib: Calibration, method: str = "ld-pruner",
                    seed: int = 0, progress: bool = True, per_mac: bool = False,
                    granularity: str = "operator") -> tuple[list[Operator], Scores, int]:
    """(operators, scores over the removable ones, total MACs per sample)."""
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    example = calib.example(model)
    ops = discover_operators(model, example, granularity=granularity)
    total = total_macs(model, example)
    if method == "ld-pruner":
        scores = ld_pruner_scores(model, scheduler, ops, calib, progress=progress, per_mac=per_mac)
    else:
        scores = random_scores(ops, seed)
    return ops, scores, total


def make_budget(ops: Sequence[Operator], total: int, keep_macs: float | None, keep_ratio: float | None,
                budget: Budget | None) -> Budget:
    given = [x for x in (keep_macs, keep_ratio, budget) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of keep_macs, keep_ratio, budget")
    if budget is not None:
        return budget
    if keep_macs is not None:
        return macs_budget(ops, total, keep_macs)
    try:
        return Budget(keep_ratio=keep_ratio)
    except ValueError as e:
        raise UsageError(str(e)) from None


def size_of(model: torch.nn.Module, example) -> dict[str, float]:
    from .operators import candidates

    return {"params": float(sum(p.numel() for p in model.parameters())),
            "macs": float(total_macs(model, example)),
            "operators": float(sum(1 for _, _, k in candidates(model) if not k.startswith("other:")))}


def prune_denoiser(model: torch.nn.Module, scheduler, *, keep_macs: float | None = None,
                   keep_ratio: float | None = None, budget: Budget | None = None, calib: Any = None,
                   method: str = "ld-pruner", seed: int = 0, progress: bool = True, inplace: bool = False,
                   pipe: Any = None, rounds: int = 1, per_mac: bool = False, keep_per_block: int = 0,
                   granularity: str = "operator", **calib_kw: Any) -> PruneResult:
    """Score, select and remove operators of ``model``; see the module docstring."""
    t0 = time.perf_counter()
    model.eval()
    calib = make_calibration(model, calib, pipe=pipe, seed=seed, **calib_kw)
    example = calib.example(model)
    report = Report(method=method)
    report.before = size_of(model, example)
    if rounds != 1 and method != "ld-pruner":
        raise UsageError(f"rounds={rounds} (iterative re-scoring) needs method 'ld-pruner', got {method!r}")
    rounds_log = None
    if rounds == 1:
        with report.time("score"):
            ops, scores, total = score_operators(model, scheduler, calib, method, seed, progress, per_mac, granularity)
        bud = make_budget(ops, total, keep_macs, keep_ratio, budget)
        with report.time("select"):
            mask = select_operators(scores, removable(ops), bud, keep_per_block)
    else:
        ops, total = discover_operators(model, example, granularity=granularity), total_macs(model, example)
        bud = make_budget(ops, total, keep_macs, keep_ratio, budget)
        with report.time("score"):
            scores, mask, rounds_log = iterative_ld_pruner(model, scheduler, ops, calib, bud, rounds, per_mac, progress,
                                                             keep_per_block)
    report.budget = (f"keep_macs={keep_macs:g} -> " if keep_macs is not None else "") + bud.describe()
    units = removable(ops)
    drop = [op for op, keep in zip(units, mask[GROUP].tolist()) if not keep]
    with report.time("apply"):
        pruned = model if inplace else copy.deepcopy(model)
        removed = remove_operators(pruned, drop)
        pruned.eval()
    report.after = size_of(pruned, example)
    report.timings["total"] = time.perf_counter() - t0
    vals = scores[GROUP].tolist()
    report.extra = {
        "calibration": {"n": calib.n, "steps": calib.steps, "seed": calib.seed, "guidance_scale": calib.guidance_scale,
                        "cond": sorted(calib.cond)},
        "operators": [{**op.to_dict(), "score": (vals[units.index(op)] if op in units else None),
                       "kept": (op not in drop)} for op in ops],
        "removed": removed, "rounds": rounds, "per_mac": per_mac, "keep_per_block": keep_per_block,
        "granularity": granularity,
        **({"rounds_log": rounds_log} if rounds_log is not None else {}),
    }
    report.notes.append(f"removed {len(drop)} of {len(units)} removable operators "
                        f"({len(ops) - len(units)} not removable)")
    return PruneResult(pruned, ops, scores, mask, removed, report)


def prune_pipeline(pipe: Any, keep_macs: float | None = 0.65, calib: Any = None, *, keep_ratio: float | None = None,
                   method: str = "ld-pruner", seed: int = 0, progress: bool = True, **kw: Any) -> tuple[Any, Report]:
    """A new pipeline sharing every component of ``pipe`` except a pruned copy of its denoiser, and the report.

    ``keep_macs`` is the fraction of the denoiser's MACs per call to keep (pass
    ``keep_macs=None, keep_ratio=r`` to keep a fraction of the removable operators instead).
    """
    name, model = find_denoiser(pipe)
    if keep_ratio is not None:
        keep_macs = None
    res = prune_denoiser(model, pipe.scheduler, keep_macs=keep_macs, keep_ratio=keep_ratio, calib=calib,
                         method=method, seed=seed, progress=progress, pipe=pipe, **kw)
    pruned = type(pipe)(**{**pipe.components, name: res.model})
    res.report.extra["component"] = name
    return pruned, res.report
