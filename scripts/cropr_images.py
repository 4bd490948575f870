#!/usr/bin/env python
"""Attach Token Cropr to a saved transformers ViT classifier, train it, and benchmark it,
on an array or a folder of images.

  train  --model DIR --images SRC [--labels L] --out OUT [Cropr options]
         DIR: a transformers image classifier saved with save_pretrained. Trains the Cropr
         modules and auxiliary heads on the frozen model (or jointly: --train-mode joint),
         removes the heads and writes OUT (save_pretrained-style, see prunekit_tokens.persist).
  bench  --model OUT --images SRC [--labels L] [--json FILE]
         Images/s of the pruned model and of the same model without its Cropr hooks, in
         one run (interleaved, median), and accuracy of both when labels are given.

SRC: a .npy array (N,H,W), (N,H,W,C) or (N,C,H,W); a .npz with 'images' (and 'labels');
or a folder of images (PNG/JPEG; one sub-folder per class gives the labels). Pixels are
scaled to [0, 1], resized to the model's input size and normalised with --mean/--std.
Cropr options (--prune-count, --prune-counts, --llf, --num-queries, ...) are those of the
token-cropr plugin. Bad input: one line on stderr, exit 1 (file) or 2 (option).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from prunekit import parse_options
from prunekit.errors import InputError, PrunekitError, UsageError
from prunekit.fileio import atomic_write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _from_folder(folder: Path):
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(f"{folder}: reading an image folder needs Pillow (pip install pillow)") from None

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, classes.index(c)) for c in classes for f in sorted((folder / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES] if classes else \
        [(f, -1) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images found")
    arrays = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
        except OSError as e:
            raise InputError(f"{f}: not a readable image ({e})") from None
    if len({a.shape for a in arrays}) != 1:
        raise InputError(f"{folder}: images differ in size; resize them first")
    labels = np.array([c for _, c in files]) if classes else None
    return np.stack(arrays).transpose(0, 3, 1, 2), labels


def load_images(src: str, labels: str | None):
    """(images (N, C, H, W) float32 in [0, 1], labels (N,) int64 or None)."""
    path = Path(src)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    lab = None
    if path.is_dir():
        x, lab = _from_folder(path)
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: not a .npy/.npz array ({e})") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            if "images" not in data.files:
                raise InputError(f"{path}: field 'images' missing (has {data.files})")
            x = data["images"]
            lab = data["labels"] if "labels" in data.files else None
        else:
            x = data
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise InputError(f"{path}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C in 1 or 3, got {x.shape}")
        x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if labels is not None:
        try:
            lab = np.load(labels, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{labels}: not a .npy label array ({e})") from None
    if lab is not None:
        lab = np.asarray(lab).astype(np.int64).reshape(-1)
        if len(lab) != len(x):
            raise InputError(f"{labels or path}: {len(lab)} labels for {len(x)} images")
    return x, lab


def prepare(x: np.ndarray, model, mean: float, std: float):
    import torch
    import torch.nn.functional as F

    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
    t = torch.from_numpy(x)
    if t.shape[1] != cfg.num_channels:
        t = t.mean(1, keepdim=True) if cfg.num_channels == 1 else t.expand(-1, cfg.num_channels, -1, -1)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t - mean) / std


def cmd_train(args, rest) -> int:
    import torch
    import transformers

    from prunekit_tokens.attach import attach_cropr
    from prunekit_tokens.config import CroprConfig
    from prunekit_tokens.persist import save_pretrained
    from prunekit_tokens.tasks import ClassificationTask
    from prunekit_tokens.training import batches, train_epoch

    cfg_path = Path(args.model) / "config.json"
    try:
        arch = json.loads(cfg_path.read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{cfg_path}: not a transformers model folder (field 'architectures')") from None
    model = getattr(transformers, arch).from_pretrained(args.model).eval()
    x, y = load_images(args.images, args.labels)
    if y is None or (y < 0).any():
        raise InputError(f"{args.images}: training needs labels (--labels, an .npz 'labels' field, or class folders)")
    n_cls = model.config.num_labels
    if y.max() >= n_cls:
        raise InputError(f"{args.labels or args.images}: label {y.max()} >= the model's {n_cls} classes")
    cfg, _ = parse_options(CroprConfig, rest)
    task = ClassificationTask(n_cls)
    cfg = CroprConfig(**{**cfg.__dict__, "aux_out": task.aux_out})
    red = attach_cropr(model, cfg).train()
    params = list(red.parameters())
    if cfg.train_mode == "joint":
        model.train()
        params += list(model.parameters())
    else:
        model.requires_grad_(False)
    xt = prepare(x, model, args.mean, args.std).numpy()
    opt = torch.optim.AdamW(params, lr=args.lr)
    fwd = lambda xb: model(pixel_values=xb).logits  # noqa: E731
    for epoch in range(args.epochs):
        stats = train_epoch(fwd, params, batches(xt, y, args.batch, shuffle=True, seed=epoch), task, opt, red,
                            cfg.train_mode, cfg.aux_weight)
        print(f"epoch {epoch}: {stats}")
    model.eval()
    red.eval()
    red.remove_aux_heads()
    save_pretrained(model, red, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_bench(args, rest) -> int:
    import torch

    from prunekit.report import machine_info
    from prunekit_tokens.persist import load_pretrained

    if rest:
        raise UsageError(f"unknown options for bench: {' '.join(rest)}")
    model, red = load_pretrained(args.model)
    x, y = load_images(args.images, args.labels)
    xt = prepare(x, model, args.mean, args.std)
    batch = xt[: args.batch]
    out = {"machine": machine_info(), "model": args.model, "images": args.images, "batch": len(batch),
           "reps": args.reps, "config": red.config.__dict__}
    times = {"pruned": [], "unpruned": []}
    with torch.inference_mode():
        model(pixel_values=batch)
        for _ in range(args.reps):
            for name in ("unpruned", "pruned"):
                red.attach() if name == "pruned" else red.remove()
                t0 = time.perf_counter()
                model(pixel_values=batch)
                times[name].append(time.perf_counter() - t0)
        red.attach()
        for name in ("unpruned", "pruned"):
            out[f"{name}_images_per_s"] = len(batch) / statistics.median(times[name])
            if y is not None and (y >= 0).all():
                red.attach() if name == "pruned" else red.remove()
                pred = torch.cat([model(pixel_values=xt[i:i + 256]).logits.argmax(-1) for i in range(0, len(xt), 256)])
                out[f"{name}_accuracy"] = float((pred.numpy() == y).mean())
    red.attach()
    out["speedup"] = out["pruned_images_per_s"] / out["unpruned_images_per_s"]
    out["token_counts"] = red.token_counts
    text = json.dumps(out, indent=2, default=str)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("train", "bench"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--out", help="output folder (train)")
    ap.add_argument("--json", help="write the benchmark JSON here (bench)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mean", type=float, default=0.5)
    ap.add_argument("--std", type=float, default=0.5)
    args, rest = ap.parse_known_args(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if args.command == "train":
            if not args.out:
                raise UsageError("train needs --out FOLDER")
            return cmd_train(args, rest)
        return cmd_bench(args, rest)
    except PrunekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
