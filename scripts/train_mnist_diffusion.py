#!/usr/bin/env python
"""Train small class-conditional diffusers denoisers and a digit classifier on the real MNIST test set.

Used by the LD-Pruner benchmark (scripts/bench/bench_ldpruner.py) as a real trained model
(no hub downloads are possible here). Data: ``../shared/data/mnist`` (10,000 real digits),
2x2 average-pooled to 14x14 and padded to 16x16 (CPU budget: a quarter of the 32x32 cost);
images 0..7999 train everything, 8000..9999 are held out as the real reference for the
Fréchet distance and the classifier's accuracy.

Outputs (cached; pass --force to retrain), under ``.cache/mnist16/`` (git-ignored):
  classifier.safetensors, classifier.json     digit classifier (quality meter) + held-out accuracy
  unet/   ClassConditionalPipeline (UNet2DModel + DDIMScheduler), train_log.json
  dit/    ClassConditionalPipeline (DiTTransformer2DModel + DDIMScheduler), train_log.json

    .venv/bin/python scripts/train_mnist_diffusion.py --what classifier
    .venv/bin/python scripts/train_mnist_diffusion.py --what unet --steps 4000 [--cpu-minutes 12]

``--init PIPELINE_DIR`` continues training from that pipeline's (EMA) denoiser with a fresh
optimiser and its own warm-up + cosine schedule (a warm restart), into ``--out`` (which needs the
classifier: train one there or link the original's ``classifier.*`` files).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"
N_TRAIN = 8000
SIZE = 16

UNET_CONFIG = dict(
    sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    num_class_embeds=10, norm_num_groups=8, attention_head_dim=16,
)
DIT_CONFIG = dict(
    sample_size=SIZE, num_layers=8, patch_size=2, attention_head_dim=32, num_attention_heads=2,
    in_channels=1, out_channels=1, norm_type="ada_norm_zero", num_embeds_ada_norm=10,
)


def build_denoiser(kind: str):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return UNet2DModel(**UNET_CONFIG) if kind == "unet" else DiTTransformer2DModel(**DIT_CONFIG)


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def sampling_scheduler(config):
    """DDIM on the training schedule; "trailing" spacing so the first step starts at t = 999."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config, timestep_spacing="trailing")


def train_classifier(x, y, out: Path, steps: int, seed: int) -> dict:
    from safetensors.torch import save_file

    from prunekit_diffusion.quality import DigitClassifier

    torch.manual_seed(seed)
    clf = DigitClassifier()
    opt = torch.optim.AdamW(clf.parameters(), 2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, N_TRAIN, (128,), generator=g)
        xb = x[idx]
        # small random shifts so generated (slightly off-centre) digits are classified robustly
        dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
        xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(clf(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        acc = float((clf(x[N_TRAIN:]).argmax(1) == y[N_TRAIN:]).float().mean())
    save_file(clf.state_dict(), str(out / "classifier.safetensors"))
    info = {"heldout_accuracy": acc, "steps": steps, "train_seconds": time.perf_counter() - t0, "n_train": N_TRAIN,
            "size": SIZE}
    (out / "classifier.json").write_text(json.dumps(info, indent=2))
    return info


def train_denoiser(kind: str, x, y, out: Path, steps: int, batch: int, lr: float, seed: int,
                   cpu_minutes: float | None = None, ema_decay: float = 0.999, warmup: int = 200,
                   meter=None, eval_every: int = 500, label_dropout: float = 0.1, init: Path | None = None) -> dict:
    """Noise-prediction (epsilon) training with AdamW, linear warm-up + cosine LR (to 0.1 lr), gradient
    clipping and an EMA copy (the saved model). A model with a null class (DiT) is trained with
    ``label_dropout`` of the labels replaced by it, once per sample; diffusers' own DiT dropout
    (independent in every block, so blocks disagree about a sample's class) is switched off.

    ``cpu_minutes`` caps the *process CPU time* (not wall time, which a shared machine inflates):
    training stops at ``steps`` or at the cap, whichever comes first, and the cosine follows the
    larger of the two fractions. ``meter`` = (classifier, real features): every ``eval_every`` steps
    the EMA model generates 100 digits and its classifier accuracy / Fréchet distance are logged.
    ``init``: a saved pipeline whose denoiser (same kind) is the starting point of model and EMA; its
    ``train_log.json`` summary is kept under ``"init"`` in the new log.
    """
    from prunekit_diffusion.api import null_class
    from prunekit_diffusion.pipeline import ClassConditionalPipeline
    from prunekit_diffusion.quality import sample_quality
    from prunekit_diffusion.recovery import no_label_dropout

    torch.manual_seed(seed)
    model = build_denoiser(kind)
    init_log = None
    if init is not None:
        start = ClassConditionalPipeline.from_pretrained(init).denoiser
        if type(start) is not type(model):
            raise SystemExit(f"--init {init}: a {type(start).__name__}, not a {kind} denoiser")
        model.load_state_dict(start.state_dict())  # strict: the same config
        log_file = Path(init) / "train_log.json"
        init_log = {"path": str(init), **({k: v for k, v in json.loads(log_file.read_text()).items() if k != "log"}
                                          if log_file.exists() else {})}
    null = null_class(model)  # DiT's label-dropout row; the UNet2DModel class embedding has none
    ema = copy.deepcopy(model).eval()
    sched = noise_scheduler()
    sampler = sampling_scheduler(sched.config)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    budget = None if cpu_minutes is None else cpu_minutes * 60.0
    c0 = time.process_time()
    done = lambda s: min(1.0, max(s / steps, 0.0 if budget is None else (time.process_time() - c0) / budget))
    lr_at = lambda s: lr * min(1.0, (s + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * done(s))) * 0.9 + 0.1)
    g = torch.Generator().manual_seed(seed)
    log, evals, t0 = [], [], time.perf_counter()
    model.train()
    step = 0
    with no_label_dropout(model):
        while done(step) < 1.0:
            idx = torch.randint(0, N_TRAIN, (batch,), generator=g)
            x0, labels = x[idx], y[idx]
            if null is not None:
                labels = torch.where(torch.rand(batch, generator=g) < label_dropout, null, labels)
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
            xt = sched.add_noise(x0, noise, t)
            if kind == "unet":
                pred = model(xt, t, class_labels=labels).sample
            else:
                pred = model(xt, timestep=t, class_labels=labels).sample
            loss = F.mse_loss(pred, noise)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - decay)
            cpu = time.process_time() - c0
            if step % 100 == 0:
                log.append({"step": step, "loss": loss.item(), "lr": lr_at(step), "cpu_seconds": cpu,
                            "seconds": time.perf_counter() - t0})
                print(f"{kind} step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} cpu {cpu:.0f}s "
                      f"wall {time.perf_counter() - t0:.0f}s", flush=True)
            step += 1
            if meter is not None and step % eval_every == 0:
                evals.append({"step": step, "cpu_seconds": cpu, **sample_quality(ema, sampler, *meter)})
                print(f"{kind} EMA at step {step}: {evals[-1]}", flush=True)
    if meter is not None and (not evals or evals[-1]["step"] != step):
        evals.append({"step": step, "cpu_seconds": time.process_time() - c0, **sample_quality(ema, sampler, *meter)})
        print(f"{kind} EMA at step {step}: {evals[-1]}", flush=True)
    pipe = ClassConditionalPipeline(denoiser=ema, scheduler=sampler)
    pipe.save_pretrained(out / kind)
    log.append({"step": step - 1, "loss": loss.item(), "cpu_seconds": time.process_time() - c0,
                "seconds": time.perf_counter() - t0})
    info = {"kind": kind, "steps": step, "batch": batch, "lr": lr, "warmup": warmup, "ema_decay": ema_decay,
            "label_dropout": label_dropout if null is not None else 0.0,
            "cpu_minutes_cap": cpu_minutes, "cpu_seconds": time.process_time() - c0,
            "wall_seconds": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters()),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                       (UNET_CONFIG if kind == "unet" else DIT_CONFIG).items()},
            "n_train": N_TRAIN, "size": SIZE, "init": init_log, "evals": evals, "log": log}
    (out / kind / "train_log.json").write_text(json.dumps(info, indent=2))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=["classifier", "unet", "dit", "all"], default="all")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "mnist16")
    ap.add_argument("--steps", type=int, default=4000, help="denoiser training steps (at most, with --cpu-minutes)")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="process-CPU-time cap per denoiser (the cosine LR follows the elapsed fraction)")
    ap.add_argument("--clf-steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--eval-every", type=int, default=500, help="log the EMA model's sample accuracy every N steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, help="continue from this saved pipeline's denoiser (with --what unet or dit)")
    ap.add_argument("--force", action="store_true", help="retrain even when cached outputs exist")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not DATA.exists():
        raise SystemExit(f"MNIST not found at {DATA}")
    from prunekit_diffusion.quality import load_classifier, load_mnist

    x, y = load_mnist(DATA, size=SIZE)
    a.out.mkdir(parents=True, exist_ok=True)
    todo = ["classifier", "unet", "dit"] if a.what == "all" else [a.what]
    if a.init is not None and a.what not in ("unet", "dit"):
        raise SystemExit("--init needs --what unet or --what dit")
    for what in todo:
        done = (a.out / "classifier.safetensors").exists() if what == "classifier" else (a.out / what / "model_index.json").exists()
        if done and not a.force:
            print(f"{what}: cached in {a.out}")
            continue
        if what == "classifier":
            print(json.dumps(train_classifier(x, y, a.out, a.clf_steps, a.seed)))
        else:
            clf = load_classifier(a.out / "classifier.safetensors")
            with torch.no_grad():
                meter = (clf, clf.features(x[N_TRAIN:]))
            info = train_denoiser(what, x, y, a.out, a.steps, a.batch, a.lr, a.seed, cpu_minutes=a.cpu_minutes,
                                  ema_decay=a.ema, warmup=a.warmup, meter=meter, eval_every=a.eval_every, init=a.init)
            print(json.dumps({k: v for k, v in info.items() if k != "log"}))


if __name__ == "__main__":
    main()
