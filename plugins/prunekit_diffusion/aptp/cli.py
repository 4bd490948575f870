"""``prunekit aptp train|finetune|export|info`` (typer), mounted by the core CLI from the ``aptp`` plugin.

    prunekit aptp train UNET_DIR --data DATA.npz -o CKPT_DIR [--codes 4 --keep-macs 0.6 --steps 300]
        [--lr-warmup 100 --paper-losses --w-contrastive 100 --eval-noise-seed S]   # the reference's recipe
    prunekit aptp finetune CKPT_DIR --unet UNET_DIR --data DATA.npz -o BUNDLE_DIR [--steps 600 --alpha 1]
    prunekit aptp export CKPT_DIR --unet UNET_DIR -o BUNDLE_DIR          # no fine-tune
    prunekit aptp info BUNDLE_DIR

``DATA.npz``: ``images`` (N, C, H, W) in [-1, 1] and ``prompts`` (N strings); optional
``encoder_hidden_states`` (N, L, cross_attention_dim) — otherwise the UNet must take 384-d
all-MiniLM-L6-v2 token states — and optional ``prompt_emb`` (N, D) — otherwise the router embeds the
prompts with all-MiniLM-L6-v2. Bad input: one line on stderr, exit 1 (files) or 2 (options).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prunekit.errors import InputError, PrunekitError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="APTP prompt-routed pruning of diffusers UNets.")


@app.callback()
def _main() -> None:
    """APTP: train a prompt router over K pruned codes, export one sliced expert per code."""


def _fail(e: PrunekitError) -> None:
    typer.echo(f"prunekit aptp: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _load_unet(path: Path):
    from diffusers import UNet2DConditionModel

    if not (path / "config.json").exists():
        raise InputError(f"{path}: not a diffusers UNet2DConditionModel folder (no config.json)")
    try:
        return UNet2DConditionModel.from_pretrained(path).eval()
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for bad folders
        raise InputError(f"{path}: cannot load the UNet ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _load_data(path: Path, unet) -> dict:
    import numpy as np
    import torch

    try:
        z = np.load(path, allow_pickle=False)
        images, prompts = torch.from_numpy(z["images"]).float(), [str(p) for p in z["prompts"]]
        cond = torch.from_numpy(z["encoder_hidden_states"]).float() if "encoder_hidden_states" in z else None
        emb = torch.from_numpy(z["prompt_emb"]).float() if "prompt_emb" in z else None
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not an APTP data file (images + prompts npz): {type(e).__name__}: {e}") from None
    if images.dim() != 4 or len(prompts) != images.shape[0]:
        raise InputError(f"{path}: images must be (N, C, H, W) with one prompt each")
    if cond is None or emb is None:
        from .text import PromptEncoder

        enc = PromptEncoder()
        if cond is None:
            if unet.config.cross_attention_dim != enc.dim:
                raise UsageError(f"the UNet's cross_attention_dim is {unet.config.cross_attention_dim}: "
                                 "give encoder_hidden_states in the data file")
            cond = enc.tokens(prompts, pad_to=16)[0]
        if emb is None:
            emb = enc.embed(prompts)
    return {"images": images, "encoder_hidden_states": cond, "prompt_emb": emb}


@app.command()
def train(
    unet_dir: Path = typer.Argument(..., help="diffusers UNet2DConditionModel folder (frozen)"),
    data: Path = typer.Option(..., "--data", help="npz with images and prompts (see module help)"),
    out: Path = typer.Option(..., "-o", "--out", help="router checkpoint folder"),
    codes: int = typer.Option(4, "--codes", help="number of architecture codes E"),
    keep_macs: float = typer.Option(0.6, "--keep-macs", help="target mean fraction of the UNet's MACs"),
    steps: int = typer.Option(300, "--steps"),
    batch: int = typer.Option(32, "--batch"),
    lr: float = typer.Option(5e-2, "--lr", help="router LR (the paper: 2e-4 x sqrt(batch) for 5000 steps)"),
    w_contrastive: float = typer.Option(1.0, "--w-contrastive", help="contrastive loss weight (the paper: 100)"),
    lr_warmup: int = typer.Option(0, "--lr-warmup", help="linear LR warm-up steps (the reference: 100; 0: none)"),
    paper_losses: bool = typer.Option(False, "--paper-losses", help="the reference code's loss terms (no assignment "
                                      "term; per-sample L_std / L_max); see the package README"),
    eval_noise_seed: Optional[int] = typer.Option(None, "--eval-noise-seed", help="deploy the codes with this fixed "
                                                  "logistic-noise sample, as the reference does (default: noise-free)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the prompt router on a frozen UNet (progress on stderr, checkpoints in OUT)."""
    try:
        import torch

        if not 0 < keep_macs <= 1:
            raise UsageError(f"--keep-macs must be in (0, 1], got {keep_macs}")
        if codes < 1 or steps < 1 or batch < 1:
            raise UsageError("--codes, --steps and --batch must be positive")
        if w_contrastive < 0:
            raise UsageError(f"--w-contrastive must be >= 0, got {w_contrastive}")
        if lr_warmup < 0:
            raise UsageError(f"--lr-warmup must be >= 0, got {lr_warmup}")
        from .train import AptpConfig, train_router

        unet = _load_unet(unet_dir)
        d = _load_data(data, unet)
        n = d["images"].shape[0]
        g = torch.Generator().manual_seed(seed)

        def batches(step: int) -> dict:
            idx = torch.randint(0, n, (min(batch, n),), generator=g)
            return {k: v[idx] for k, v in d.items()}

        cfg = AptpConfig(n_codes=codes, keep_macs=keep_macs, steps=steps, batch=batch, lr=lr, seed=seed,
                         w_contrastive=w_contrastive, lr_warmup=lr_warmup, paper_losses=paper_losses,
                         checkpoint_every=max(1, steps // 5))
        out.mkdir(parents=True, exist_ok=True)
        show = lambda r: typer.echo(f"step {r['step']}/{steps} loss {r['loss']:.4f} macs {r['mac_ratio']:.3f} "  # noqa: E731
                                    f"codes {r['codes']}", err=True)
        router, macs, log = train_router(unet, _noise_scheduler(unet_dir), batches, cfg, checkpoint=out, progress=show)
        router.eval_noise_seed = eval_noise_seed  # deployment only: training gates are noisy either way
        from .bundle import save_router

        save_router(out, router, macs, {"config": cfg.__dict__, "step": steps, "log": log, "base": str(unet_dir)},
                    base_config=json.loads(unet.to_json_string()))
        typer.echo(str(out))
    except PrunekitError as e:
        _fail(e)


def _noise_scheduler(unet_dir: Path):
    """The training noise schedule: a ``scheduler/`` folder beside the UNet when there is one, else DDPM."""
    from diffusers import DDPMScheduler

    for cand in (unet_dir.parent / "scheduler", unet_dir / "scheduler"):
        if (cand / "scheduler_config.json").exists():
            return DDPMScheduler.from_pretrained(cand)
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


@app.command()
def export(
    ckpt: Path = typer.Argument(..., help="router checkpoint folder (from 'train')"),
    unet_dir: Path = typer.Option(..., "--unet", help="the base UNet folder the router was trained on"),
    out: Path = typer.Option(..., "-o", "--out", help="bundle folder (must not exist or be empty)"),
) -> None:
    """Slice one expert per code and write the bundle (router + experts + manifest)."""
    try:
        from .bundle import export_experts, load_bundle

        unet = _load_unet(unet_dir)
        b = load_bundle(ckpt, unet)
        export_experts(out, b.router, b.macs, unet, {k: b.manifest[k] for k in ("config", "step") if k in b.manifest})
        for c in load_bundle(out).manifest["codes"]:
            typer.echo(f"code {c['index']}: MACs {c['mac_ratio']:.3f}, params {c['params']}, "
                       f"removed blocks {len(c['spec']['removed'])}")
    except PrunekitError as e:
        _fail(e)


@app.command()
def finetune(
    ckpt: Path = typer.Argument(..., help="router checkpoint folder (from 'train')"),
    unet_dir: Path = typer.Option(..., "--unet", help="the base UNet folder the router was trained on (the teacher)"),
    data: Path = typer.Option(..., "--data", help="npz with images and prompts (see module help)"),
    out: Path = typer.Option(..., "-o", "--out", help="bundle folder (must not exist or be empty)"),
    steps: int = typer.Option(600, "--steps"),
    batch: int = typer.Option(32, "--batch"),
    lr: float = typer.Option(2e-4, "--lr"),
    alpha: float = typer.Option(1.0, "--alpha", help="weight of the distillation term against the unpruned UNet"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fine-tune the shared UNet under each prompt's routed code, then slice and write the experts."""
    try:
        import copy

        if steps < 1 or batch < 1 or lr <= 0 or alpha < 0:
            raise UsageError("--steps, --batch and --lr must be positive and --alpha non-negative")
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out}: exists and is not empty")
        from .bundle import export_experts, load_bundle
        from .finetune import finetune_shared

        teacher = _load_unet(unet_dir)
        b = load_bundle(ckpt, teacher)
        d = _load_data(data, teacher)
        shared = copy.deepcopy(teacher)
        log = finetune_shared(shared, b.router, teacher, _noise_scheduler(unet_dir), d["images"],
                              {"encoder_hidden_states": d["encoder_hidden_states"]}, d["prompt_emb"], steps=steps,
                              batch_size=batch, lr=lr, alpha=alpha, seed=seed, log_every=max(1, steps // 10))
        for r in log:
            typer.echo(f"step {r['step']}/{steps} task {r['task']:.4f} distill {r['distill']:.4f}", err=True)
        info = {k: b.manifest[k] for k in ("config", "step") if k in b.manifest}
        info["finetune"] = {"steps": steps, "batch": batch, "lr": lr, "alpha": alpha, "seed": seed, "data": str(data)}
        export_experts(out, b.router, b.macs, shared, info)
        typer.echo(str(out))
    except PrunekitError as e:
        _fail(e)


@app.command()
def info(bundle: Path = typer.Argument(..., help="router checkpoint or exported bundle")) -> None:
    """Codes, their MAC ratios and what each removes (JSON)."""
    try:
        from .bundle import read_manifest

        m = read_manifest(bundle)
        typer.echo(json.dumps({"router": m["router"], "codes": [{k: c[k] for k in c if k != "spec"} | {
            "removed": c["spec"]["removed"]} for c in m["codes"]]}, indent=1))
    except PrunekitError as e:
        _fail(e)
