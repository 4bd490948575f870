#!/usr/bin/env python
"""APTP (K codes, prompt-routed) vs one statically pruned UNet at the same mean MACs, on real MNIST canvases.

Setting (``scripts/train_aptp_mnist.py``): a text-conditioned UNet2DConditionModel trained here on
16x32 canvases of real MNIST digits with prompts of three difficulties ("a 3", "a 3 on the left",
"a 3 on the left and a 7 on the right"), prompts embedded by the real all-MiniLM-L6-v2.

Both methods use the same gates, losses and training steps on the frozen UNet; the static model is
APTP with one code (the router is then irrelevant). Fine-tuning uses noise + distillation loss to
the unpruned UNet (``prunekit_diffusion.recovery.distill_finetune``, weight ``--ft-alpha``) for both
methods, with the same canvases, batches, noise and number of steps:

- ``--ft-mode shared`` (default, APTP's own protocol): the *shared* UNet is fine-tuned with each
  canvas's routed hard code mask applied (``prunekit_diffusion.aptp.finetune.finetune_shared``, one
  optimiser, every step updates the shared weights), then the experts are sliced from it. The static
  model's sliced UNet gets the same steps (with one code the two are the same computation, tested);
  per sample both run their code's MACs (the gated implementation also computes the masked units,
  so its CPU time is that of the full UNet).
- ``--ft-mode separate`` (the earlier protocol): each exported expert is fine-tuned alone on the
  canvases routed to it, with a routed share of the steps (equal total), or, with ``--ft-per-expert``,
  all of them (K x the static model's fine-tune compute). ``--also-separate`` adds these APTP rows to
  a shared run.

Quality: the digit classifier of ``scripts/train_mnist_diffusion.py`` (trained on real digits
0..7999, held-out accuracy in the JSON) reads every digit slot of a generated canvas; a prompt is
correct when every slot is the asked digit (and, for "side" prompts, the other side is blank:
mean pixel < -0.8). Fréchet distance in the classifier's feature space between all generated slots
and held-out real digits. Timing: process CPU time (the machine is shared): routing (MiniLM +
router) vs the whole APTP pipeline call (wall-clock fractions are in the JSON too).

``--base NAME`` benchmarks another cached base UNet (``scripts/train_aptp_mnist.py --base NAME``);
``--seed`` seeds router training, canvases and fine-tune, ``--eval-seed`` the eval prompts (default
seed + 1), so two training seeds can share one eval set. Each row keeps its per-prompt correctness
(``ok``); ``results.aptp_minus_static`` is the paired accuracy difference with its standard error
``std(ok_aptp - ok_static) / sqrt(n)`` (same prompts and sampling noise for both).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/bench_aptp.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import train_aptp_mnist as T  # noqa: E402
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from common import paired_difference  # noqa: E402,F401  (also used by aptp_seeds.py)

OUT = ROOT / "bench-out" / "aptp.json"


def cpu() -> float:
    return time.process_time()


def load_base(base: str = "unet"):
    from diffusers import UNet2DConditionModel

    if not (T.CACHE / base / "config.json").exists():
        raise SystemExit(f"no base model {base}: run scripts/train_aptp_mnist.py --base {base} first")
    return UNet2DConditionModel.from_pretrained(T.CACHE / base).eval()


def train_or_load(name: str, unet, data, table, codes: int, a) -> tuple:
    """Router (cached as a bundle with experts under .cache/aptp_mnist/NAME)."""
    from prunekit_diffusion.aptp.bundle import export_experts, load_bundle
    from prunekit_diffusion.aptp.train import AptpConfig, train_router

    tag = ("" if a.base == "unet" else f"{a.base}_") + f"{name}_k{codes}_p{a.keep}_s{a.steps}"
    if a.w_contrastive != 1.0:  # older caches (contrastive weight 1) keep their names
        tag += f"_wc{a.w_contrastive:g}_lr{a.lr:g}"
    if a.lr_warmup:
        tag += f"_lrw{a.lr_warmup}"
    if a.paper_losses:
        tag += "_paper"
    folder = T.CACHE / (tag + (f"_seed{a.seed}" if a.seed else ""))
    if (folder / "aptp.json").exists() and not a.force:
        b = load_bundle(folder)
        return b.router, b.macs, b.experts, b.manifest.get("log", []), b.manifest.get("train_cpu_s", 0.0)
    cfg = AptpConfig(n_codes=codes, keep_macs=a.keep, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, log_every=20,
                     w_contrastive=a.w_contrastive, paper_losses=a.paper_losses, lr_warmup=a.lr_warmup)
    c0 = cpu()
    show = lambda r: print(f"{name} step {r['step']} loss {r['loss']:.3f} macs {r['mac_ratio']:.3f} codes {r['codes']} "  # noqa: E731
                           f"{r['seconds']:.0f}s", flush=True)
    router, macs, log = train_router(unet, T.noise_scheduler(), lambda s: data.batch(a.batch, table), cfg, progress=show)
    seconds = cpu() - c0
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    experts = export_experts(folder, router, macs, unet, {"log": log, "train_cpu_s": seconds})
    return router, macs, experts, log, seconds


@torch.no_grad()
def noise_free(router, macs, emb: torch.Tensor) -> dict:
    """What noise-free deployment of a router run with ``eval_noise_seed`` gives: code MAC ratios, prompt shares,
    and per code the logits' mean / min and the fraction below ``-offset`` (closed without noise)."""
    seed, router.eval_noise_seed = router.eval_noise_seed, None
    try:
        router.eval()
        counts = torch.bincount(router.route(emb), minlength=router.n_codes).float()
        return {"code_mac_ratio": macs.ratio(router.code_gates()).tolist(), "share": (counts / counts.sum()).tolist(),
                "code_logit_mean": router.codes.mean(1).tolist(), "code_logit_min": router.codes.min(1).values.tolist(),
                "code_logit_frac_closed": (router.codes < -router.offset).float().mean(1).tolist()}
    finally:
        router.eval_noise_seed = seed


def eval_prompts(table, n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for fam in T.FAMILIES:
        ids = [i for i, r in enumerate(table["rows"]) if r["family"] == fam]
        out += [ids[k] for k in torch.randint(len(ids), (n,), generator=g).tolist()]
    return out


def crops(images: torch.Tensor, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Every asked digit slot as a 16x16 crop, its label and its prompt index; blank-side checks."""
    xs, ys, owner, blank_ok = [], [], [], []
    for i, r in enumerate(rows):
        for slot, d in r["slots"].items():
            c = T.COLS[slot]
            xs.append(images[i, :, :, c : c + 16])
            ys.append(d)
            owner.append(i)
        if r["family"] == "side":
            other = "right" if "left" in r["slots"] else "left"
            c = T.COLS[other]
            blank_ok.append(int(images[i, :, :, c : c + 16].mean() < -0.8))
        else:
            blank_ok.append(1)
    return torch.stack(xs), torch.tensor(ys), owner, blank_ok


@torch.no_grad()
def quality(images, ids, table, clf, real_feats) -> dict:
    from prunekit_diffusion.quality import frechet_distance

    rows = [table["rows"][i] for i in ids]
    x, y, owner, blank_ok = crops(images, rows)
    feats = clf.features(x)
    hit = (clf.head(feats).argmax(1) == y).tolist()
    ok = [blank_ok[i] for i in range(len(rows))]
    for h, o in zip(hit, owner):
        ok[o] = ok[o] and h
    res = {"frechet": frechet_distance(feats, real_feats), "digit_accuracy": sum(hit) / len(hit)}
    for fam in T.FAMILIES:
        sel = [i for i, r in enumerate(rows) if r["family"] == fam]
        res[f"acc_{fam}"] = sum(ok[i] for i in sel) / len(sel)
    res["acc_all"] = sum(ok) / len(ok)
    res["ok"] = [int(o) for o in ok]
    return res


def generate(pipe, prompts: list[str], seeds: list[int], steps: int, chunk: int = 96) -> torch.Tensor:
    outs = []
    for s in range(0, len(prompts), chunk):
        gens = [torch.Generator().manual_seed(k) for k in seeds[s : s + chunk]]
        outs.append(pipe(prompt=prompts[s : s + chunk], generator=gens, num_inference_steps=steps).images)
    return torch.cat(outs)


def expert_steps(steps: int, n_routed: int, n_total: int, per_expert: bool) -> int:
    """Fine-tune steps of one expert: ``round(steps * n_routed / n_total)`` (equal total compute; at least 10
    unless that rounds to 0), or ``steps`` for every used expert with ``per_expert`` (equal steps per model)."""
    if n_routed == 0:
        return 0
    if per_expert:
        return steps
    n = int(round(steps * n_routed / n_total))
    return max(n, 10) if n else 0


def finetune(experts, routed: torch.Tensor, unet, pool: dict, steps: int, a) -> list[dict]:
    """Fine-tune expert k on the pool canvases routed to k for ``expert_steps(...)`` steps."""
    from prunekit_diffusion.recovery import distill_finetune

    info = []
    for k, ex in enumerate(experts):
        idx = torch.nonzero(routed == k).flatten()
        n = expert_steps(steps, len(idx), len(routed), a.ft_per_expert)
        if n == 0:
            info.append({"code": k, "examples": len(idx), "steps": 0})
            continue
        ex.requires_grad_(True)
        log = distill_finetune(ex, unet, T.noise_scheduler(), pool["images"][idx],
                               {"encoder_hidden_states": pool["encoder_hidden_states"][idx]}, steps=n,
                               batch_size=a.batch, lr=a.ft_lr, alpha=a.ft_alpha, seed=a.seed + k, log_every=50)
        ex.eval()
        info.append({"code": k, "examples": len(idx), "steps": n, "last_loss": log[-1] if log else None})
    return info


def finetune_shared(router, unet, pool: dict, a) -> tuple[list, dict]:
    """APTP's shared fine-tune (routed code masks on one UNet, ``a.ft_steps`` steps), then the sliced experts."""
    import copy

    from prunekit_diffusion.aptp.finetune import experts_from, finetune_shared as shared_ft

    shared = copy.deepcopy(unet)
    log = shared_ft(shared, router, unet, T.noise_scheduler(), pool["images"],
                    {"encoder_hidden_states": pool["encoder_hidden_states"]}, pool["prompt_emb"], steps=a.ft_steps,
                    batch_size=a.batch, lr=a.ft_lr, alpha=a.ft_alpha, seed=a.seed, log_every=50)
    counts = torch.bincount(router.route(pool["prompt_emb"]), minlength=router.n_codes).tolist()
    info = {"mode": "shared", "examples_per_code": counts, "steps": a.ft_steps, "last_loss": log[-1]}
    return experts_from(router, shared), info


def evaluate(pipe_base, enc, router, macs, experts, prompts, seeds, ids, table, clf, real_feats, a) -> dict:
    """Generate every eval prompt through the routed pipeline; quality and routing time."""
    from prunekit_diffusion.aptp.bundle import AptpBundle
    from prunekit_diffusion.aptp.pipeline import AptpPipeline

    pipe = AptpPipeline(pipe_base, AptpBundle(router, macs, experts, {}), enc.embed)
    c0, route_s, gen_s, route_c, gen_c = cpu(), 0.0, 0.0, 0.0, 0.0
    imgs = []
    for s in range(0, len(prompts), 96):
        gens = [torch.Generator().manual_seed(k) for k in seeds[s : s + 96]]
        imgs.append(pipe(prompt=prompts[s : s + 96], generator=gens, num_inference_steps=a.sample_steps).images)
        route_s += pipe.last_timing["route_s"]
        gen_s += pipe.last_timing["generate_s"]
        route_c += pipe.last_timing["route_cpu_s"]
        gen_c += pipe.last_timing["generate_cpu_s"]
    return {**quality(torch.cat(imgs), ids, table, clf, real_feats), "generate_cpu_s": cpu() - c0,
            "route_wall_s": route_s, "pipeline_wall_s": route_s + gen_s,
            "route_fraction_wall": route_s / (route_s + gen_s), "route_cpu_s": route_c,
            "route_fraction": route_c / (route_c + gen_c)}


SAME_ARGS = ("base", "steps", "keep", "batch", "lr", "lr_warmup", "w_contrastive", "eval_noise_seed", "ft_steps", "ft_lr",
             "ft_alpha", "n_eval", "sample_steps", "seed", "eval_seed")


def reused_rows(path: Path, a) -> dict:
    """The unpruned and static rows of an earlier run with the same settings (their code path is deterministic)."""
    old = json.loads(path.read_text())
    mine = {k: str(v) for k, v in vars(a).items()}
    absent = {"ft_alpha": "1.0", "base": "unet", "eval_seed": "None", "w_contrastive": "1.0",
              "lr_warmup": "0", "eval_noise_seed": "None"}  # arguments older runs did not record
    diff = [k for k in SAME_ARGS if old["args"].get(k, absent.get(k)) != mine[k]]
    if diff:
        raise SystemExit(f"--static-from {path}: different settings {diff}")
    return {"base": old["results"]["base"], "static": old["results"]["static"] | {"reused_from": str(path)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codes", type=int, default=4)
    ap.add_argument("--keep", type=float, default=0.6, help="target mean MAC fraction p")
    ap.add_argument("--steps", type=int, default=200, help="router training steps (both methods)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=5e-2, help="router LR (the paper: 2e-4 x sqrt(batch) for 5000 steps)")
    ap.add_argument("--lr-warmup", type=int, default=0,
                    help="linear router-LR warm-up steps (the reference: 100, then constant; 0: constant from step 0)")
    ap.add_argument("--w-contrastive", type=float, default=1.0, help="contrastive loss weight (the paper: 100)")
    ap.add_argument("--paper-losses", action="store_true",
                    help="router losses of the reference code: no assignment term, L_std/L_max over the per-sample "
                         "MAC ratios (AptpConfig.paper_losses; no effect with one code, so --static-from may reuse "
                         "a static run without it)")
    ap.add_argument("--eval-noise-seed", type=int,
                    help="deploy (route, slice, fine-tune, evaluate) the gates of one fixed noise sample, as the "
                         "reference code does (AptpRouter.eval_noise_seed); the router training and cache are unchanged")
    ap.add_argument("--ft-steps", type=int, default=150, help="total fine-tune steps per method (0: none)")
    ap.add_argument("--ft-per-expert", action="store_true",
                    help="every APTP expert gets --ft-steps (equal steps per deployed model, K x the total fine-tune "
                         "compute of the static model) instead of a routed share of them")
    ap.add_argument("--ft-mode", choices=("shared", "separate"), default="shared",
                    help="APTP fine-tune: the shared UNet with routed code masks (then export), or each expert alone")
    ap.add_argument("--also-separate", action="store_true", help="with --ft-mode shared: also the separate APTP rows")
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--ft-alpha", type=float, default=1.0, help="distillation weight to the unpruned UNet (both methods)")
    ap.add_argument("--n-eval", type=int, default=100, help="eval prompts per family")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--static-from", type=Path, help="reuse the unpruned and static rows of this earlier JSON "
                    "(same settings required) instead of recomputing them")
    ap.add_argument("--base", default="unet", help="cached base UNet (sub-folder of .cache/aptp_mnist)")
    ap.add_argument("--seed", type=int, default=0, help="router training, canvases and fine-tune")
    ap.add_argument("--eval-seed", type=int, help="eval prompt draw (default: seed + 1)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from prunekit import machine_info
    from prunekit_diffusion.aptp.text import PromptEncoder
    from prunekit_diffusion.quality import DigitClassifier

    c_start = cpu()
    unet = load_base(a.base)
    table = T.load_prompts()
    (xtr, ytr), (xte, yte) = T.mnist_split()
    data = T.Canvases(xtr, ytr, table, a.seed)
    clf = DigitClassifier()
    clf.load_state_dict(load_file(str(T.ensure_classifier())))
    clf.eval()
    with torch.no_grad():
        real_feats = clf.features(xte[:1000])
    enc = PromptEncoder()

    reuse = reused_rows(a.static_from, a) if a.static_from else None
    runs = {}
    for name, k in (("aptp", a.codes),) + ((("static", 1),) if reuse is None else ()):
        router, macs, experts, log, secs = train_or_load(name, unet, data, table, k, a)
        if a.eval_noise_seed is not None:  # the reference's sampled deployed gates: re-slice the experts with them
            from prunekit_diffusion.aptp.finetune import experts_from

            router.eval_noise_seed = a.eval_noise_seed
            experts = experts_from(router, unet)
        runs[name] = {"router": router, "macs": macs, "experts": experts, "log": log, "train_cpu_s": secs}

    ids = eval_prompts(table, a.n_eval, a.seed + 1 if a.eval_seed is None else a.eval_seed)
    prompts = [table["rows"][i]["text"] for i in ids]
    seeds = [10_000 + i for i in range(len(ids))]
    fams = [table["rows"][i]["family"] for i in ids]
    pool = T.Canvases(xtr, ytr, table, a.seed + 3).batch(2048, table)

    base_pipe = T.make_pipeline(unet)
    base_pipe.set_progress_bar_config(disable=True)
    if reuse is None:
        c0 = cpu()
        base_imgs = generate(base_pipe, prompts, seeds, a.sample_steps)
        base_cpu = cpu() - c0
        result = {"base": {**quality(base_imgs, ids, table, clf, real_feats), "mac_ratio": 1.0,
                           "generate_cpu_s": base_cpu}}
    else:
        result = {"base": reuse["base"]}

    for name, r in runs.items():
        router, macs = r["router"], r["macs"]
        codes_eval = router.route(table["emb"][ids])
        code_ratio = macs.ratio(router.eval().code_gates()).detach()
        entry = {"codes": r["router"].n_codes, "code_mac_ratio": code_ratio.tolist(),
                 "mean_mac_ratio_eval": float(code_ratio[codes_eval].mean()), "train_cpu_s": r["train_cpu_s"],
                 "train_log": r["log"], "params": [sum(p.numel() for p in e.parameters()) for e in r["experts"]],
                 "spread": {fam: torch.bincount(codes_eval[[i for i, f in enumerate(fams) if f == fam]],
                                                minlength=router.n_codes).tolist() for fam in T.FAMILIES}}
        counts = torch.bincount(codes_eval, minlength=router.n_codes).float()
        entry["share"] = (counts / counts.sum()).tolist()
        if a.eval_noise_seed is not None:
            entry["noise_free"] = noise_free(router, macs, table["emb"][ids])
        evaluate_ = lambda experts: evaluate(base_pipe, enc, router, macs, experts, prompts, seeds, ids, table,  # noqa: E731
                                             clf, real_feats, a)
        entry["pruned"] = evaluate_(r["experts"])
        shared = a.ft_mode == "shared" and router.n_codes > 1  # one code: shared == separate (tested)
        if a.ft_steps > 0 and shared:
            c0 = cpu()
            experts, entry["finetune"] = finetune_shared(router, unet, pool, a)
            entry["finetune_cpu_s"] = cpu() - c0
            entry["finetuned"] = evaluate_(experts)
        if a.ft_steps > 0 and (not shared or a.also_separate):
            routed = router.route(table["emb"][pool["ids"]])
            c0 = cpu()
            info = finetune(r["experts"], routed, unet, pool, a.ft_steps, a)
            key = "_separate" if shared else ""
            entry["finetune" + key], entry["finetune_cpu_s" + key] = info, cpu() - c0
            entry["finetuned" + key] = evaluate_(r["experts"])
        result[name] = entry
        brief = {k: ({m: x for m, x in v.items() if m != "ok"} if isinstance(v, dict) else v)
                 for k, v in entry.items() if k not in ("train_log", "finetune")}
        print(name, json.dumps(brief), flush=True)

    if reuse is not None:
        result["static"] = reuse["static"]
    shares = result["aptp"]["share"]
    aptp_key = "finetuned" if a.ft_steps > 0 else "pruned"
    result["targets"] = {
        "aptp_beats_static_acc": result["aptp"][aptp_key]["acc_all"] > result["static"][aptp_key]["acc_all"],
        "aptp_beats_static_frechet": result["aptp"][aptp_key]["frechet"] < result["static"][aptp_key]["frechet"],
        "aptp_beats_static_acc_per_family": {f: result["aptp"][aptp_key][f"acc_{f}"] > result["static"][aptp_key][f"acc_{f}"]
                                             for f in T.FAMILIES},
        "mean_mac_ratio_aptp_vs_static": [result["aptp"]["mean_mac_ratio_eval"], result["static"]["mean_mac_ratio_eval"]],
        "code_share_within_5_60pct": min(shares) >= 0.05 and max(shares) <= 0.60,
        "routing_under_2pct": result["aptp"][aptp_key]["route_fraction"] < 0.02,
    }
    if "ok" in result["static"][aptp_key]:
        result["aptp_minus_static"] = {fam: paired_difference(*[[o for o, f in zip(result[m][aptp_key]["ok"], fams)
                                                                  if fam in ("all", f)] for m in ("aptp", "static")])
                                       for fam in T.FAMILIES + ("all",)}
    out = {"benchmark": "aptp", "machine_info": machine_info(), "args": {k: str(v) for k, v in vars(a).items()},
           "base_train": json.loads(T.base_log_path(a.base).read_text()) | {"log": None},
           "classifier": json.loads((T.CACHE / "classifier.json").read_text()),
           "eval": {"prompts_per_family": a.n_eval, "families": list(T.FAMILIES), "sample_steps": a.sample_steps},
           "results": result, "total_cpu_s": cpu() - c_start}
    from prunekit import atomic_write_text

    atomic_write_text(a.out, json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps(result["targets"]), "->", a.out)


if __name__ == "__main__":
    main()
