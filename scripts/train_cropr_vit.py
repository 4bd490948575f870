#!/usr/bin/env python
"""Train the small ViTs and Token Cropr modules of the cluttered-MNIST experiment (cached).

Stages (each skipped when its cache folder exists, unless --force):

  cls-backbone   ViTForImageClassification on cluttered canvases (digit class)
  cls-cropr      Cropr modules + auxiliary heads on the frozen (or jointly trained) classifier,
                 then the heads are removed and the pruned model saved (save_pretrained)
  cls-finetune   control for joint Cropr training: the cached classifier trained for the same
                 epochs, learning rate and canvases as a joint cls-cropr run, without pruning
  cls-random-ft  the same, fine-tuned with random pruning at the Cropr schedule (--prune-counts ...)
  cls-merge-ft   the same, fine-tuned with ToMe-style merging at the Cropr schedule
  seg-backbone   ViTModel + linear patch decoder for the digit's pixel mask
  seg-cropr      Cropr modules with Last Layer Fusion (one query per patch) on the segmenter

Data: the real MNIST test set (../shared/data/mnist), split 8,000 train / 2,000 test;
training canvases are re-drawn every epoch, test canvases are fixed. Outputs go to
.cache/prunekit_tokens/<stage-name>/ with a metrics.json. Example:

  .venv/bin/python scripts/train_cropr_vit.py cls-backbone cls-cropr --prune-count 20
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from prunekit.errors import PrunekitError, UsageError
from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.cluttered_mnist import CanvasSpec, normalise
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.experiment import ModelSpec, cache_dir, test_canvases, train_canvases, write_json
from prunekit_tokens.experiment import schedule_name as experiment_schedule_name
from prunekit_tokens.persist import load_pretrained, save_pretrained
from prunekit_tokens.tasks import ClassificationTask, MaskTask, ViTSegmenter
from prunekit_tokens.training import batches, evaluate_classification, evaluate_mask, train_epoch

STAGES = ("cls-backbone", "cls-cropr", "cls-finetune", "cls-random-ft", "cls-merge-ft", "seg-backbone", "seg-cropr")


def cosine_lr(opt, total_steps: int, warmup: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def fit(forward, params, task, reducer, mode, args, stream, target_of, label):
    groups = [{"params": params}]
    if mode == "joint" and args.cropr_lr:  # the Cropr modules at their own learning rate
        own = {id(p) for p in reducer.parameters()}
        groups = [{"params": [p for p in params if id(p) not in own]},
                  {"params": list(reducer.parameters()), "lr": args.cropr_lr}]
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(args.n_train / args.batch_size)
    sched = cosine_lr(opt, args.epochs * steps_per_epoch, warmup=min(args.warmup, steps_per_epoch))
    history = []
    stream, order = data_seeds(stream, args.seed)
    for epoch in range(args.epochs):
        easy = label.endswith("backbone") and epoch < args.easy_epochs  # curriculum: no distractors first
        canvas = CanvasSpec(size=args.image_size, clutter=0) if easy else CanvasSpec(size=args.image_size)
        x, y, m = train_canvases(canvas, epoch, stream, args.n_train)
        data = batches(x, target_of(y, m), args.batch_size, shuffle=True, seed=order + epoch, normalise=normalise)

        class Stepper:  # step the LR schedule after each optimiser step
            def __iter__(self):
                for item in data:
                    yield item
                    sched.step()

        stats = train_epoch(forward, params, Stepper(), task, opt, reducer, mode, args.aux_weight, log_every=25)
        history.append(stats)
        print(f"{label} epoch {epoch}: {stats}", flush=True)
    return history


def data_seeds(stream: int, seed: int) -> tuple[int, int]:
    """(canvas stream, first shuffle seed) of a training run: ``--seed 0`` keeps the streams of the
    cached runs (and their batch order, seed = epoch); ``--seed N`` draws other canvases and orders."""
    return stream + 100 * seed, 1000 * seed


def test_data(args, dense: bool):
    x, y, m = test_canvases(CanvasSpec(size=args.image_size))
    return lambda: batches(x, m.astype("int64") if dense else y, 256, normalise=normalise)


def stage_cls_backbone(args, spec: ModelSpec, out: Path):
    from transformers import ViTForImageClassification

    torch.manual_seed(args.seed)
    if args.resume:
        if not (out / "config.json").exists():
            raise UsageError(f"{out}: nothing to resume")
        model = ViTForImageClassification.from_pretrained(out)
        previous = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    else:
        model = ViTForImageClassification(spec.vit_config(num_labels=10))
        previous = {}
    task = ClassificationTask(10)
    fwd = lambda x: model(pixel_values=x).logits  # noqa: E731
    model.train()
    runs = previous.get("runs", [{"history": previous.get("history"), "args": previous.get("args")}] if previous else [])
    stream = 1 + 10 * len(runs)  # fresh canvases for every resumed run
    hist = fit(fwd, list(model.parameters()), task, None, "backbone", args, stream, lambda y, m: y, "cls-backbone")
    model.eval()
    acc = evaluate_classification(fwd, test_data(args, False)())
    print(f"cls-backbone test accuracy {acc:.4f}")
    model.save_pretrained(out)
    runs.append({"history": hist, "args": vars(args), "test_accuracy": acc})
    write_json(out / "metrics.json", {"test_accuracy": acc, "runs": runs, "spec": spec})


def load_classifier(args):
    """The cached ``--backbone`` classifier (seeded) and its :class:`ModelSpec`."""
    from transformers import ViTForImageClassification

    src = cache_dir() / args.backbone
    if not (src / "config.json").exists():
        raise UsageError(f"{src}: run the cls-backbone stage first")
    torch.manual_seed(args.seed)
    model = ViTForImageClassification.from_pretrained(src)
    return model, ModelSpec.from_config(model.config)


def stage_cls_cropr(args, spec: ModelSpec, out: Path):
    model, spec = load_classifier(args)
    task = ClassificationTask(10)
    cfg = CroprConfig(**schedule(args), aux_out=task.aux_out, num_queries=task.num_queries,
                      aux_weight=args.aux_weight, train_mode=args.mode, qk_proj=args.proj, v_proj=args.proj,
                      aggregate_prefix=not args.patches_only)
    reducer = attach_cropr(model, cfg)
    fwd = lambda x: model(pixel_values=x).logits  # noqa: E731
    if args.mode == "frozen":
        model.requires_grad_(False)
        model.eval()
        params = list(reducer.parameters())
    else:
        model.train()
        params = list(model.parameters()) + list(reducer.parameters())
    reducer.train()
    hist = fit(fwd, params, task, reducer, args.mode, args, 2, lambda y, m: y, f"cls-cropr-{args.mode}")
    model.eval()
    reducer.eval()
    reducer.remove_aux_heads()
    acc = evaluate_classification(fwd, test_data(args, False)())
    print(f"cls-cropr test accuracy (pruned, {schedule_name(args)}) {acc:.4f}")
    save_pretrained(model, reducer, out)
    write_json(out / "metrics.json", {"test_accuracy": acc, "history": hist, "spec": spec, "args": vars(args),
                                      "token_counts": reducer.token_counts})


def stage_cls_finetune(args, spec: ModelSpec, out: Path):
    model, spec = load_classifier(args)
    model.train()
    fwd = lambda x: model(pixel_values=x).logits  # noqa: E731
    # stream 2: the canvases a cls-cropr run sees
    hist = fit(fwd, list(model.parameters()), ClassificationTask(10), None, "backbone", args, 2, lambda y, m: y,
               "cls-finetune")
    model.eval()
    acc = evaluate_classification(fwd, test_data(args, False)())
    print(f"cls-finetune test accuracy {acc:.4f}")
    model.save_pretrained(out)
    write_json(out / "metrics.json", {"test_accuracy": acc, "history": hist, "spec": spec, "args": vars(args)})


def stage_cls_baseline_ft(args, spec: ModelSpec, out: Path):
    """cls-random-ft / cls-merge-ft: the classifier fine-tuned *with* random pruning or ToMe-style merging
    at the Cropr schedule, for the same epochs, learning rate and canvases as a joint cls-cropr run
    (the baselines' equal-training counterpart of joint Cropr)."""
    from prunekit_tokens.attach import attach_merge, attach_random

    model, spec = load_classifier(args)
    model.train()
    cfg = CroprConfig(**schedule(args))
    method = args.stage_name.split("-")[1]
    red = attach_random(model, config=cfg, seed=args.seed) if method == "random" else attach_merge(model, config=cfg)
    fwd = lambda x: model(pixel_values=x).logits  # noqa: E731
    hist = fit(fwd, list(model.parameters()), ClassificationTask(10), None, "backbone", args, 2, lambda y, m: y,
               args.stage_name)
    model.eval()
    acc = evaluate_classification(fwd, test_data(args, False)())
    print(f"{args.stage_name} test accuracy (pruned, {schedule_name(args)}) {acc:.4f}")
    red.remove()
    model.save_pretrained(out)
    write_json(out / "metrics.json", {"test_accuracy": acc, "history": hist, "spec": spec, "args": vars(args)})


def _segmenter(spec: ModelSpec, aux_grid: int = 1) -> ViTSegmenter:
    from transformers import ViTModel

    task = MaskTask(2, spec.grid, spec.patch_size, class_weights=(1.0, 4.0), aux_grid=(aux_grid, aux_grid))
    return ViTSegmenter(ViTModel(spec.vit_config(), add_pooling_layer=False), task)


def stage_seg_backbone(args, spec: ModelSpec, out: Path):
    from prunekit_tokens.persist import BACKBONE_NAME
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    seg = _segmenter(spec)
    seg.train()
    hist = fit(seg, list(seg.parameters()), seg.task, None, "backbone", args, 3, lambda y, m: m.astype("int64"),
               "seg-backbone")
    seg.eval()
    res = evaluate_mask(seg, test_data(args, True)(), 2)
    print(f"seg-backbone test {res}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in seg.state_dict().items()}, str(out / BACKBONE_NAME))
    write_json(out / "metrics.json", {"test": res, "history": hist, "spec": spec, "args": vars(args)})


def load_segmenter(spec: ModelSpec, folder: Path, aux_grid: int = 1) -> ViTSegmenter:
    from prunekit_tokens.persist import BACKBONE_NAME
    from safetensors.torch import load_file

    seg = _segmenter(spec, aux_grid)
    seg.load_state_dict(load_file(str(folder / BACKBONE_NAME)))
    return seg.eval()


def stage_seg_cropr(args, spec: ModelSpec, out: Path):
    src = cache_dir() / "seg-backbone"
    if not (src / "backbone.safetensors").exists():
        raise UsageError(f"{src}: run the seg-backbone stage first")
    torch.manual_seed(args.seed)
    seg = load_segmenter(spec, src, args.aux_grid)
    task = seg.task
    cfg = CroprConfig(**schedule(args), llf=True, aux_out=task.aux_out, num_queries=task.num_queries,
                      aux_weight=args.aux_weight, train_mode=args.mode, qk_proj=args.proj, v_proj=args.proj,
                      aggregate_prefix=not args.patches_only)
    reducer = attach_cropr(seg, cfg)
    if args.mode == "frozen":
        seg.requires_grad_(False)
        params = list(reducer.parameters())
    else:
        seg.train()
        params = list(seg.parameters()) + list(reducer.parameters())
    reducer.train()
    hist = fit(seg, params, task, reducer, args.mode, args, 4, lambda y, m: m.astype("int64"), f"seg-cropr-{args.mode}")
    seg.eval()
    reducer.eval()
    reducer.remove_aux_heads()
    res = evaluate_mask(seg, test_data(args, True)(), 2)
    print(f"seg-cropr test (LLF, {schedule_name(args)}) {res}")
    save_pretrained(seg, reducer, out)
    write_json(out / "metrics.json", {"test": res, "history": hist, "spec": spec, "args": vars(args),
                                      "token_counts": reducer.token_counts})


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"expected comma-separated integers, got {text!r}") from None


def schedule(args) -> dict:
    """The token schedule options of :class:`CroprConfig` given on the command line."""
    return {"prune_count": args.prune_count, "prune_counts": _ints(args.prune_counts),
            "prune_after": _ints(args.prune_after)}


def schedule_name(args) -> str:
    return experiment_schedule_name(**schedule(args))


def stage_dir(stage: str, args) -> Path:
    """Cache folder of a stage; classification stages on another backbone than ``cls-backbone``
    (``--backbone cls-backbone-p12``) carry its suffix (``cls-cropr-...-p12``)."""
    suffix = args.backbone[len("cls-backbone"):] if stage.startswith("cls") else ""
    if args.seed and not stage.endswith("backbone"):  # replicates: ...-p12-seed1
        suffix += f"-seed{args.seed}"
    if stage.endswith("cropr"):
        return cache_dir() / f"{stage}-{schedule_name(args)}-{args.mode}{args.tag}{suffix}"
    if stage in ("cls-random-ft", "cls-merge-ft"):
        return cache_dir() / f"{stage}-{schedule_name(args)}-e{args.epochs}{suffix}"
    if stage == "cls-finetune":
        return cache_dir() / f"{stage}-e{args.epochs}{args.tag}{suffix}"
    return cache_dir() / (args.backbone if stage == "cls-backbone" else stage)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+", choices=STAGES)
    ap.add_argument("--epochs", type=int, default=None, help="default: 8 (cls-backbone), 3 (seg-backbone), 2 (Cropr)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default: 5e-4 (backbones), 1e-3 (frozen Cropr), 2e-4 (joint)")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--prune-count", type=int, default=16, help="tokens dropped by every Cropr module")
    ap.add_argument("--prune-counts", default="", help="tokens dropped per module, e.g. 96,16,8,4 (overrides --prune-count)")
    ap.add_argument("--prune-after", default="", help="blocks followed by a module, e.g. 1,2,3,4 (default: 0, 1, ...)")
    ap.add_argument("--mode", choices=("frozen", "joint"), default="frozen")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--cropr-lr", type=float, default=0.0, help="joint mode: learning rate of the Cropr modules "
                    "(default: --lr, like the backbone)")
    ap.add_argument("--proj", action="store_true", help="Cropr stages: learned q/k/v projections (as in the "
                    "reference classification setup) instead of identities")
    ap.add_argument("--patches-only", action="store_true", help="Cropr stages: auxiliary heads do not read the CLS token")
    ap.add_argument("--tag", default="", help="suffix of the Cropr stage's cache folder")
    ap.add_argument("--aux-grid", type=int, default=1, help="seg-cropr: auxiliary queries on an N x N output grid")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--backbone", default="cls-backbone", help="classification stages: cache folder of the "
                    "classifier (written by cls-backbone, read by cls-cropr and cls-finetune); must start with "
                    "cls-backbone, the rest is appended to the other stages' folders")
    ap.add_argument("--patch-size", type=int, default=8, help="cls-backbone: ViT patch size (96 px / 12 = 8x8 tokens)")
    ap.add_argument("--width", type=int, default=96, help="cls-backbone: ViT hidden size")
    ap.add_argument("--heads", type=int, default=3, help="cls-backbone: attention heads")
    ap.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps (at most one epoch), then cosine")
    ap.add_argument("--n-train", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation, training canvases and batch order; "
                    "N > 0 also suffixes the cache folders of the stages trained from a backbone with -seedN")
    ap.add_argument("--force", action="store_true", help="retrain even when cached")
    ap.add_argument("--resume", action="store_true", help="cls-backbone: continue training the cached model")
    ap.add_argument("--easy-epochs", type=int, default=0, help="backbone stages: the first N epochs on canvases "
                    "without distractors (a curriculum; test canvases always have them)")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.backbone.startswith("cls-backbone"):
        print(f"error: --backbone {args.backbone!r} must start with cls-backbone", file=sys.stderr)
        return 2
    spec = ModelSpec(image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.width,
                     num_attention_heads=args.heads)
    runners = {"cls-backbone": stage_cls_backbone, "cls-cropr": stage_cls_cropr, "cls-finetune": stage_cls_finetune,
               "cls-random-ft": stage_cls_baseline_ft, "cls-merge-ft": stage_cls_baseline_ft,
               "seg-backbone": stage_seg_backbone, "seg-cropr": stage_seg_cropr}
    epochs, lr = args.epochs, args.lr
    try:
        try:
            CroprConfig(**schedule(args))
        except ValueError as e:
            raise UsageError(str(e)) from None
        for stage in args.stages:
            args.epochs = epochs or {"cls-backbone": 8, "seg-backbone": 3}.get(stage, 2)
            args.stage_name = stage
            joint_lr = 2e-4 if args.mode == "joint" or stage.startswith("cls-") and stage != "cls-cropr" else 1e-3
            args.lr = lr or (5e-4 if stage.endswith("backbone") else joint_lr)
            out = stage_dir(stage, args)
            resume = args.resume and stage == "cls-backbone"
            if (out / "metrics.json").exists() and not (args.force or resume):
                print(f"{stage}: cached in {out}")
                continue
            t0 = time.perf_counter()
            runners[stage](args, spec, out)
            print(f"{stage}: done in {time.perf_counter() - t0:.0f} s -> {out}")
    except PrunekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
