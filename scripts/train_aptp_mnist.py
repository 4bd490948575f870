#!/usr/bin/env python
"""A real small text-to-image setting for APTP: prompts -> canvases of real MNIST digits.

Canvases are 16x32 (H x W), 1 channel in [-1, 1]; a digit tile is the 16x16 MNIST image of
``prunekit_diffusion.quality.load_mnist(size=16)`` (2x2 average-pooled 14x14 digit, padded). Three
prompt families of rising difficulty, drawn with equal probability:

- ``single``: "a 3"                                  -> the digit in the centre (cols 8..24)
- ``side``:   "a 3 on the left" / "a 3 on the right" -> the digit at cols 0..16 / 16..32
- ``pair``:   "a 3 on the left and a 7 on the right" -> two digits

Prompts are embedded by the real all-MiniLM-L6-v2 (per-token states, 16 tokens, 384-d) as the
UNet's cross-attention input; the router uses its mean-pooled sentence embedding. Digits 0..7999 of
the MNIST test set train everything; 8000..9999 are held out (same split as the LD-Pruner benchmark).

Outputs (cached under ``.cache/aptp_mnist/``): ``prompts.pt`` (prompt table + embeddings),
``classifier.safetensors`` (the digit classifier of ``scripts/train_mnist_diffusion.py``), ``unet/``
(the trained ``UNet2DConditionModel``, EMA weights) and ``train_log.json``. ``--base NAME`` trains
another base into ``NAME/`` with its log in ``train_log_NAME.json`` (same prompts and classifier).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_aptp_mnist.py --minutes 10
    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_aptp_mnist.py --base unet_4k --steps 4000 --minutes 1e9
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from train_mnist_diffusion import DATA, N_TRAIN, noise_scheduler, sampling_scheduler, train_classifier  # noqa: E402

CACHE = Path(os.environ.get("APTP_MNIST_CACHE", ROOT / ".cache" / "aptp_mnist"))
H, W, TOKENS = 16, 32, 16
FAMILIES = ("single", "side", "pair")
COLS = {"centre": 8, "left": 0, "right": 16}

UNET_CONFIG = dict(
    sample_size=(H, W), in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=384, norm_num_groups=8, attention_head_dim=8,
)


def prompt_table() -> list[dict]:
    """Every prompt: text, family and the digits at each slot."""
    rows = [{"text": f"a {d}", "family": "single", "slots": {"centre": d}} for d in range(10)]
    rows += [{"text": f"a {d} on the {s}", "family": "side", "slots": {s: d}} for d in range(10) for s in ("left", "right")]
    rows += [{"text": f"a {a} on the left and a {b} on the right", "family": "pair", "slots": {"left": a, "right": b}}
             for a in range(10) for b in range(10)]
    return rows


def load_prompts(cache: Path = CACHE) -> dict:
    """Prompt table with MiniLM token states ``tokens`` (P, 16, 384) and sentence embeddings ``emb`` (P, 384)."""
    path = cache / "prompts.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    from prunekit_diffusion.aptp.text import PromptEncoder

    rows = prompt_table()
    enc = PromptEncoder()
    texts = [r["text"] for r in rows]
    tokens, _ = enc.tokens(texts, pad_to=TOKENS)
    out = {"rows": rows, "tokens": tokens, "emb": enc.embed(texts)}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


class Canvases:
    """Random (canvas, prompt index) batches from real MNIST digits of one split."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, table: dict, seed: int = 0):
        self.x, self.y, self.rows = x, y, table["rows"]
        self.by_digit = [torch.nonzero(y == d).flatten() for d in range(10)]
        self.fam = {f: [i for i, r in enumerate(self.rows) if r["family"] == f] for f in FAMILIES}
        self.g = torch.Generator().manual_seed(seed)

    def draw(self, prompt_ids: list[int]) -> torch.Tensor:
        out = torch.full((len(prompt_ids), 1, H, W), -1.0)
        for i, p in enumerate(prompt_ids):
            for slot, d in self.rows[p]["slots"].items():
                pool = self.by_digit[d]
                tile = self.x[pool[torch.randint(len(pool), (1,), generator=self.g)]][0]
                c = COLS[slot]
                out[i, :, :, c : c + 16] = torch.maximum(out[i, :, :, c : c + 16], tile)
        return out

    def prompts(self, n: int) -> list[int]:
        fams = torch.randint(len(FAMILIES), (n,), generator=self.g).tolist()
        return [self.fam[FAMILIES[f]][torch.randint(len(self.fam[FAMILIES[f]]), (1,), generator=self.g).item()]
                for f in fams]

    def batch(self, n: int, table: dict) -> dict[str, torch.Tensor]:
        ids = self.prompts(n)
        return {"images": self.draw(ids), "encoder_hidden_states": table["tokens"][ids], "prompt_emb": table["emb"][ids],
                "ids": torch.tensor(ids)}


def mnist_split():
    from prunekit_diffusion.quality import load_mnist

    x, y = load_mnist(DATA, size=16)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def base_log_path(base: str = "unet", cache: Path = CACHE) -> Path:
    """Training log of the base UNet cached as ``cache/base`` (the default one keeps ``train_log.json``)."""
    return cache / ("train_log.json" if base == "unet" else f"train_log_{base}.json")


def make_pipeline(unet, scheduler=None):
    """The text-to-image pipeline (defined in :mod:`aptp_pipeline`, a diffusers ``DiffusionPipeline``)."""
    from aptp_pipeline import MiniLMCanvasPipeline

    return MiniLMCanvasPipeline(unet=unet, scheduler=scheduler or sampling_scheduler(noise_scheduler().config))


def train_unet(minutes: float, steps: int, batch: int, lr: float, seed: int, cache: Path = CACHE,
               base: str = "unet") -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    table = load_prompts(cache)
    (x, y), _ = mnist_split()
    data = Canvases(x, y, table, seed)
    model = UNet2DConditionModel(**UNET_CONFIG)
    ema = copy.deepcopy(model).eval()
    sched = noise_scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.0)
    budget, t0, step, log = minutes * 60.0, time.perf_counter(), 0, []
    done = lambda s: min(1.0, max(s / steps, (time.perf_counter() - t0) / budget))  # noqa: E731
    model.train()
    while done(step) < 1.0:
        b = data.batch(batch, table)
        noise = torch.randn_like(b["images"])
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,))
        pred = model(sched.add_noise(b["images"], noise, t), t, b["encoder_hidden_states"]).sample
        loss = F.mse_loss(pred, noise)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.45 * (1 + math.cos(math.pi * done(step))) + 0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.995, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        if step % 100 == 0:
            log.append({"step": step, "loss": loss.item(), "seconds": round(time.perf_counter() - t0, 1)})
            print(f"unet step {step} loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s (cpu {time.process_time():.0f}s)",
                  flush=True)
        step += 1
    ema.save_pretrained(cache / base)
    info = {"steps": step, "batch": batch, "lr": lr, "minutes": minutes, "train_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time(), "params": sum(p.numel() for p in model.parameters()), "log": log,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()}}
    base_log_path(base, cache).write_text(json.dumps(info, indent=1))
    return info


def ensure_classifier(cache: Path = CACHE, steps: int = 600, seed: int = 0) -> Path:
    path = cache / "classifier.safetensors"
    if not path.exists():
        from prunekit_diffusion.quality import load_mnist

        x, y = load_mnist(DATA, size=16)
        cache.mkdir(parents=True, exist_ok=True)
        print(json.dumps(train_classifier(x, y, cache, steps, seed)))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of the UNet training")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default="unet", help="cache sub-folder of the trained UNet (a new name keeps the old base)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ensure_classifier()
    load_prompts()
    if (CACHE / a.base / "config.json").exists() and not a.force:
        print(f"unet: cached in {CACHE / a.base}")
        return
    info = train_unet(a.minutes, a.steps, a.batch, a.lr, a.seed, base=a.base)
    print(json.dumps({k: v for k, v in info.items() if k != "log"}))


if __name__ == "__main__":
    main()
