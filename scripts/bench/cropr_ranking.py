#!/usr/bin/env python
"""Where do trained Cropr modules look? Ranking AUC of digit patches vs background (cluttered MNIST).

For each Cropr module of a cached classification stage (or of modules trained here on the frozen
classifier, one after every block but the last, dropping nothing, so each sees all 144 patches),
on test canvases with known digit masks it reports the AUC (``prunekit_tokens.diagnostics``)
of the digit patches (>= ``--min-pixels`` digit pixels in the 8x8 patch) against the other
patches for:

- ``score``: the pruning score ``(sum_j q_j) . k_n`` (what ``select`` ranks; top kept);
- ``head_logits``: each head's own logits ``q_h . k_{n,h}`` (their sum is ``score``);
- ``attention``: the auxiliary branch's softmax attention averaged over heads (what it reads);
- ``norm``: the block output's token norm (high-norm "register" tokens, Darcet et al. 2024);

and the auxiliary head's accuracy when its attention may read only the digit patches, only the
background patches, or every token it read in training (where does the class information sit?).
The first row checks the patch / mask alignment: the AUC of the patches' mean brightness.
JSON: ``bench-out/cropr_ranking.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from prunekit.errors import UsageError
from prunekit.report import machine_info
from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.cluttered_mnist import CanvasSpec, normalise
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.diagnostics import patch_relevance, ranking_auc, record_rankings
from prunekit_tokens.experiment import ModelSpec, cache_dir, test_canvases, train_canvases, write_json
from prunekit_tokens.persist import load_pretrained
from prunekit_tokens.tasks import ClassificationTask
from prunekit_tokens.training import batches, train_epoch

REPO = Path(__file__).resolve().parents[2]


def _mean(t: torch.Tensor) -> float:
    return float(t[~torch.isnan(t)].mean())


def aux_accuracy(module, x: torch.Tensor, allowed: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``module``'s auxiliary head when its attention reads only ``allowed`` (B, n) tokens."""
    logits, kin = module.attention_logits(x)
    logits = logits.masked_fill(~allowed[:, None, None, :], float("-inf"))
    pred = module.aux(logits, kin, 0).mean(1).argmax(-1)
    return float((pred == y).float().mean())


def analyse(reducer, model, x, y, m, spec: ModelSpec, min_pixels: int, batch: int = 250) -> list[dict]:
    relevant = patch_relevance(torch.as_tensor(m), spec.patch_size, min_pixels)
    n_prefix = reducer.host.num_prefix
    relevant = torch.cat([torch.zeros(len(relevant), n_prefix, dtype=torch.bool), relevant], 1)
    y = torch.as_tensor(y)
    with torch.inference_mode(), record_rankings(reducer) as rec:
        for xb, _ in batches(x, y.numpy(), batch, normalise=normalise):
            model(pixel_values=xb)
    # alignment check of patches and digit masks: the digit patches are the bright ones (distractors are bright too)
    brightness = torch.nn.functional.avg_pool2d(torch.as_tensor(x), spec.patch_size).flatten(1)
    out = [{"auc_patch_brightness": _mean(ranking_auc(brightness, relevant[:, n_prefix:]))}]
    print(json.dumps(out[0]), flush=True)
    for k, (block, r) in enumerate(reducer.plan):
        mod = reducer.cropr[k]
        xs, origin = torch.cat(rec.inputs[k]), torch.cat(rec.origin[k])
        valid = origin >= n_prefix
        rel = relevant.gather(1, origin.clamp(min=0)) & valid
        with torch.inference_mode():
            logits, _ = mod.attention_logits(xs)  # B, H, Q, n
            attn = torch.softmax(logits * (xs.shape[-1] // mod.num_heads) ** -0.5, -1).mean((1, 2))
        row = {"module": k, "after_block": block, "drops": r, "tokens_seen": xs.shape[1],
               "digit_patches_seen_per_image": float(rel.sum(1).float().mean()),
               "auc_score": _mean(rec.module_auc(k, relevant)),
               "auc_head_logits": [_mean(ranking_auc(logits[:, h].sum(1), rel, valid)) for h in range(mod.num_heads)],
               "auc_attention": _mean(ranking_auc(attn, rel, valid)),
               "auc_norm": _mean(ranking_auc(xs.norm(dim=-1), rel, valid))}
        if mod.has_aux:
            with torch.inference_mode():
                prefix = ~valid & (origin >= 0)
                readable = valid if mod.exclude_prefix else origin >= 0  # what the branch read in training
                row["aux_accuracy"] = {
                    "all_tokens": aux_accuracy(mod, xs, readable, y),
                    "digit_patches_only": aux_accuracy(mod, xs, rel | (rel.sum(1, keepdim=True) == 0), y),
                    "background_patches_only": aux_accuracy(mod, xs, valid & ~rel, y),
                }
                if not mod.exclude_prefix:
                    row["aux_accuracy"]["prefix_only"] = aux_accuracy(mod, xs, prefix, y)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def train_probe_modules(model, spec: ModelSpec, args) -> object:
    """Cropr modules after every block but the last, dropping nothing, trained on the frozen classifier."""
    task = ClassificationTask(10)
    blocks = tuple(range(spec.num_hidden_layers - 1))
    cfg = CroprConfig(prune_counts=(0,) * len(blocks), prune_after=blocks, aux_out=10, qk_proj=args.proj,
                      v_proj=args.proj, aggregate_prefix=not args.patches_only)
    reducer = attach_cropr(model, cfg)
    model.requires_grad_(False).eval()
    reducer.train()
    opt = torch.optim.AdamW(reducer.parameters(), lr=args.lr, weight_decay=0.05)
    for epoch in range(args.epochs):
        xt, yt, _ = train_canvases(CanvasSpec(size=spec.image_size), epoch, 7, args.n_train)
        stats = train_epoch(lambda xb: model(pixel_values=xb).logits, list(reducer.parameters()),
                            batches(xt, yt, 64, shuffle=True, seed=epoch, normalise=normalise), task, opt, reducer,
                            "frozen", log_every=50)
        print(f"probe epoch {epoch}: {stats}", flush=True)
    return reducer.eval()


def embedding_probe(model, spec: ModelSpec, args, x, y, m) -> dict:
    """A Cropr module trained on the frozen patch embeddings (before block 0: no token has seen
    another yet), scored like :func:`analyse`: row ``after_block = -1``.

    Meant as a control for inverted rankings after the blocks, but it is uninformative: no single
    12x12 / 8x8 patch tells the class, the auxiliary head stays at chance (~10 %), the queries get
    no useful gradient and their ranking is arbitrary (AUC 0.05 with projections, 0.97 without)."""
    from prunekit_tokens.modules import CroprModule

    emb = model.vit.embeddings
    task = ClassificationTask(10)
    mod = CroprModule(spec.hidden_size, spec.num_attention_heads, qk_proj=args.proj, v_proj=args.proj, aux_out=10,
                      exclude_prefix=1 if args.patches_only else 0).train()
    opt = torch.optim.AdamW(mod.parameters(), lr=args.lr, weight_decay=0.05)
    for epoch in range(args.epochs):
        xt, yt, _ = train_canvases(CanvasSpec(size=spec.image_size), epoch, 7, args.n_train)
        for xb, yb in batches(xt, yt, 64, shuffle=True, seed=epoch, normalise=normalise):
            with torch.no_grad():
                tokens = emb(xb)
            loss = task.aux_loss(mod(tokens)[1], yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    relevant = patch_relevance(torch.as_tensor(m), spec.patch_size, args.min_pixels)
    relevant = torch.cat([torch.zeros(len(relevant), 1, dtype=torch.bool), relevant], 1)
    valid = torch.ones_like(relevant)
    valid[:, 0] = False
    y = torch.as_tensor(y)
    with torch.inference_mode():
        tokens = emb(normalise(torch.as_tensor(x)))
        scores = mod.eval()(tokens)[0]
        mod.train()
        row = {"module": "embeddings", "after_block": -1, "drops": 0, "tokens_seen": tokens.shape[1],
               "auc_score": _mean(ranking_auc(scores, relevant, valid)),
               "auc_norm": _mean(ranking_auc(tokens.norm(dim=-1), relevant, valid)),
               "aux_accuracy": {"all_tokens": aux_accuracy(mod, tokens, valid if args.patches_only else valid | ~valid, y),
                                "digit_patches_only": aux_accuracy(mod, tokens, relevant | (relevant.sum(1, keepdim=True) == 0), y),
                                "background_patches_only": aux_accuracy(mod, tokens, valid & ~relevant, y)}}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="", help="cache folder of a trained cls-cropr stage (its own modules and "
                    "schedule); default: train probe modules on the frozen cls-backbone here")
    ap.add_argument("--backbone", default="cls-backbone", help="cache folder of the classifier for the probe modules")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--proj", action="store_true", help="probe modules: learned q/k/v projections")
    ap.add_argument("--patches-only", action="store_true", help="probe modules: aux heads do not read CLS")
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--min-pixels", type=int, default=4, help="digit pixels that make a patch a digit patch")
    ap.add_argument("--label", default="", help="name of this entry in the JSON (default: stage or probe name)")
    ap.add_argument("--out", default=str(REPO / "bench-out" / "cropr_ranking.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from transformers import ViTForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.process_time()
    try:
        if args.stage:
            if not (cache_dir() / args.stage / "cropr_config.json").exists():
                raise UsageError(f"{cache_dir() / args.stage}: no trained Cropr stage")
            model, reducer = load_pretrained(cache_dir() / args.stage)
            model.eval(), reducer.eval()
            spec = ModelSpec.from_config(model.config)
            label = args.label or args.stage
        else:
            src = cache_dir() / args.backbone
            if not (src / "config.json").exists():
                raise UsageError(f"{src}: run scripts/train_cropr_vit.py cls-backbone first")
            model = ViTForImageClassification.from_pretrained(src)
            spec = ModelSpec.from_config(model.config)
            reducer = train_probe_modules(model, spec, args)
            label = args.label or f"probe-{args.backbone}{'-proj' if args.proj else ''}{'-po' if args.patches_only else ''}"
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    x, y, m = test_canvases(CanvasSpec(size=spec.image_size))
    x, y, m = x[: args.n_eval], y[: args.n_eval], m[: args.n_eval]
    rows = analyse(reducer, model, x, y, m, spec, args.min_pixels)
    if not args.stage:  # the control: the same module on unmixed patch embeddings
        reducer.remove()
        rows.insert(1, embedding_probe(model, spec, args, x, y, m))
    out_path = Path(args.out)
    try:
        prev = json.loads(out_path.read_text())
    except (OSError, ValueError):
        prev = {}
    entries = prev.get("entries", {}) if prev.get("format") == "prunekit.bench.cropr_ranking" else {}
    entries[label] = {"modules": rows, "inputs": {**vars(args), "n_eval": min(args.n_eval, len(x))},
                      "config": reducer.config.__dict__, "cpu_s": time.process_time() - t0,
                      "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(out_path, {"format": "prunekit.bench.cropr_ranking", "machine": machine_info(), "entries": entries})
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
