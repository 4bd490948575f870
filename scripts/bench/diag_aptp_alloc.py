#!/usr/bin/env python
"""Why does the APTP router give the two-digit prompts the *smaller* codes? (issue 7 diagnosis)

APTP's premise (Ganjdanesh et al., ICLR 2025, arXiv 2406.12042) is that prompts whose images are
harder get more capacity. No loss term asks for that directly: a code's size settles where the
task-loss gradient of the prompts routed to it (min-SNR denoising + 0.2 distillation to the
unpruned UNet) balances the resource term ``2|log(mean ratio / p)|`` and the spread terms
``0.1(-std) + 0.1(1 - max)`` of the code MAC ratios. So a family gets a big code when *its* loss is
sensitive to pruning. This script measures, on the benchmark of ``bench_aptp.py``:

1. ``loss_matrix``: per prompt family and per code (and the static model's code), on fixed canvases,
   noise and timesteps, the router-training loss terms: min-SNR-weighted denoising error
   ``w(t)||eps_gated - eps||^2`` (w = min(SNR, 5)/SNR), the same for the unpruned UNet, and the
   distillation error ``||eps_gated - eps_full||^2`` (all pixels, split by timestep third).
   ``routed`` = the family's loss under its routed codes; ``swapped`` = under the other families'
   codes (same shares), to see whether the loss prefers the observed allocation.
2. ``pressure``: at the trained router, in training mode (Gumbel noise, Sinkhorn plan), the gradient
   of every loss term on the code logits projected on each code's MAC-ratio gradient:
   ``-<dL/dz_k, d ratio_k/dz_k> / ||d ratio_k/dz_k||`` (> 0: that term pushes code k to grow) and the
   whole gradient's norm ``|term|`` (how strongly the term reshapes code k in any direction), with
   the denoising and distillation terms split by prompt family. Mean over ``--batches`` batches.
3. ``routers``: routers retrained with other seeds and with single loss terms removed (``--variants``),
   each with its code MAC ratios, per-family mean MACs and loss matrix. ``seed0`` retrains the
   cached router's recipe (in a fresh process ``train_router`` reproduces the cached log exactly, checked
   through step 60; after
   the analyses above in the same process it drifts slightly, codes within 0.02 of the MACs).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/diag_aptp_alloc.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import bench_aptp as B  # noqa: E402
import train_aptp_mnist as T  # noqa: E402

OUT = ROOT / "bench-out" / "aptp_alloc_diag.json"


def family_batches(data: "T.Canvases", table: dict, n: int, seed: int) -> dict[str, dict]:
    """``n`` fixed canvases per family with fixed noise and evenly spaced timesteps."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for fam in T.FAMILIES:
        ids = [data.fam[fam][k] for k in torch.randint(len(data.fam[fam]), (n,), generator=g).tolist()]
        x0 = data.draw(ids)
        out[fam] = {"ids": ids, "images": x0, "noise": torch.randn(x0.shape, generator=g),
                    "t": torch.linspace(0, 999, n).round().long()[torch.randperm(n, generator=g)],
                    "cond": table["tokens"][ids], "emb": table["emb"][ids]}
    return out


@torch.no_grad()
def loss_matrix(unet, ctl, gates: torch.Tensor, fams: dict, gamma: float) -> dict:
    """Per family: per-sample weighted denoising and distillation errors of the full model and each code."""
    from prunekit_diffusion.aptp.train import min_snr_weight

    sched = T.noise_scheduler()
    res = {}
    for fam, b in fams.items():
        xt = sched.add_noise(b["images"], b["noise"], b["t"])
        w = min_snr_weight(sched, b["t"], gamma)
        ctl.clear()
        full = unet(xt, b["t"], b["cond"]).sample
        per = {"full_ddpm": (w * (full - b["noise"]).pow(2).mean((1, 2, 3)))}
        for k in range(gates.shape[0]):
            ctl.set(gates[k].expand(len(b["ids"]), -1))
            pred = unet(xt, b["t"], b["cond"]).sample
            ctl.clear()
            per[f"ddpm_{k}"] = w * (pred - b["noise"]).pow(2).mean((1, 2, 3))
            per[f"distill_{k}"] = (pred - full).pow(2).mean((1, 2, 3))
        res[fam] = per
    return res


def summarise(per: dict, n_codes: int, t: torch.Tensor) -> dict:
    """Means; distillation also by timestep third."""
    thirds = [(t < 333), (t >= 333) & (t < 666), (t >= 666)]
    out = {"full_ddpm": per["full_ddpm"].mean().item()}
    for k in range(n_codes):
        d = per[f"distill_{k}"]
        out[f"code{k}"] = {"ddpm": per[f"ddpm_{k}"].mean().item(), "distill": d.mean().item(),
                           "ddpm_increase": (per[f"ddpm_{k}"] - per["full_ddpm"]).mean().item(),
                           "distill_by_t_third": [d[m].mean().item() for m in thirds]}
    return out


def family_routing(router, macs, table) -> dict:
    """Per family (all its prompts in the table): share routed to each code and mean MAC ratio."""
    codes = router.route(table["emb"])
    ratio = macs.ratio(router.eval().code_gates()).detach()
    out = {}
    for fam in T.FAMILIES:
        idx = torch.tensor([i for i, r in enumerate(table["rows"]) if r["family"] == fam])
        c = codes[idx]
        out[fam] = {"share": (torch.bincount(c, minlength=router.n_codes).float() / len(c)).tolist(),
                    "mean_mac_ratio": ratio[c].mean().item()}
    return out


def allocation_losses(mat: dict, routing: dict, w_distill: float) -> dict:
    """The family's task loss (ddpm + w_distill * distill) under its routed codes vs the other families' codes."""
    def cost(fam, share):
        return sum(s * (mat[fam][f"code{k}"]["ddpm"] + w_distill * mat[fam][f"code{k}"]["distill"])
                   for k, s in enumerate(share))

    out = {}
    for fam in T.FAMILIES:
        out[fam] = {"routed": cost(fam, routing[fam]["share"]),
                    **{f"with_{o}_codes": cost(fam, routing[o]["share"]) for o in T.FAMILIES if o != fam}}
    return out


def pressure(router, unet, ctl, macs, data, table, cfg, batches: int, batch: int, seed: int) -> dict:
    """Projected gradient of each loss term on each code's MAC ratio (see module doc)."""
    from prunekit_diffusion.aptp.train import step_losses

    torch.manual_seed(seed)
    router.train()
    acc: dict[str, torch.Tensor] = {}
    fam_of = {i: r["family"] for i, r in enumerate(table["rows"])}
    weights = {"ddpm": 1.0, "distill": cfg.w_distill, "resource": cfg.w_resource, "contrastive": cfg.w_contrastive,
               "assign": cfg.w_assign, "std": cfg.w_std, "max": cfg.w_max}
    for _ in range(batches):
        b = data.batch(batch, table)
        terms, r = step_losses(router, unet, ctl, macs, T.noise_scheduler(), b, cfg, quantise=True)
        fams = [fam_of[i] for i in b["ids"].tolist()]
        for fam in T.FAMILIES:
            m = torch.tensor([f == fam for f in fams], dtype=torch.float)
            terms[f"ddpm[{fam}]"] = (terms["ddpm_each"] * m).sum() / len(fams)
            terms[f"distill[{fam}]"] = (terms["distill_each"] * m).sum() / len(fams)
            weights[f"ddpm[{fam}]"], weights[f"distill[{fam}]"] = 1.0, cfg.w_distill
        (mac_dir,) = torch.autograd.grad(macs.ratio(r["code_bits"]).sum(), router.codes, retain_graph=True)
        unit = mac_dir / mac_dir.norm(dim=1, keepdim=True).clamp_min(1e-12)
        for name, wgt in weights.items():
            (g,) = torch.autograd.grad(wgt * terms[name], router.codes, retain_graph=True, allow_unused=True)
            g = torch.zeros_like(router.codes) if g is None else g
            acc[name] = acc.get(name, 0) + -(g * unit).sum(1) / batches
            acc[f"|{name}|"] = acc.get(f"|{name}|", 0) + g.norm(dim=1) / batches
        acc["routed_per_code"] = acc.get("routed_per_code", 0) + torch.bincount(
            r["index"], minlength=router.n_codes).float() / batches
    router.eval()
    return {k: v.tolist() for k, v in acc.items()}


def analyse(router, macs, unet, fams, table, cfg) -> dict:
    from prunekit_diffusion.aptp.finetune import hard_code_gates
    from prunekit_diffusion.aptp.gating import install

    gates = hard_code_gates(router)
    ctl = install(unet, router.layout)
    try:
        per = loss_matrix(unet, ctl, gates, fams, cfg.snr_gamma)
    finally:
        ctl.remove()
    mat = {fam: summarise(per[fam], router.n_codes, fams[fam]["t"]) for fam in T.FAMILIES}
    routing = family_routing(router, macs, table)
    return {"code_mac_ratio": macs.ratio(gates).tolist(), "family_routing": routing, "loss_matrix": mat,
            "allocation_task_loss": allocation_losses(mat, routing, cfg.w_distill)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--router", type=Path, default=T.CACHE / "aptp_k4_p0.6_s200", help="cached APTP bundle")
    ap.add_argument("--static", type=Path, default=T.CACHE / "static_k1_p0.6_s200", help="cached static bundle")
    ap.add_argument("--n", type=int, default=96, help="fixed canvases per family for the loss matrix")
    ap.add_argument("--batches", type=int, default=8, help="batches for the gradient pressure")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--w-contrastive", type=float, default=1.0, help="contrastive weight the routers were trained with")
    ap.add_argument("--base", default="unet", help="cached base UNet the routers were trained on (e.g. unet_4k)")
    ap.add_argument("--variants", default="seed0,seed1,seed2",
                    help="routers to retrain: seedN, or FIELD=VALUE[+FIELD=VALUE] AptpConfig overrides (seed 0)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from prunekit import atomic_write_text, machine_info
    from prunekit_diffusion.aptp.bundle import load_bundle
    from prunekit_diffusion.aptp.train import AptpConfig, train_router

    c0 = time.process_time()
    unet = B.load_base(a.base).requires_grad_(False)
    table = T.load_prompts()
    (xtr, ytr), _ = T.mnist_split()
    fams = family_batches(T.Canvases(xtr, ytr, table, 7), table, a.n, 11)
    base = AptpConfig(n_codes=4, keep_macs=0.6, steps=a.steps, batch=a.batch, lr=a.lr, seed=0, log_every=50,
                      w_contrastive=a.w_contrastive)
    res: dict = {"cached": {}, "routers": {}}

    def save() -> None:
        out = {"benchmark": "aptp_alloc_diag", "machine_info": machine_info(), "args": {k: str(x) for k, x in vars(a).items()},
               "results": res, "total_cpu_s": time.process_time() - c0}
        atomic_write_text(a.out, json.dumps(out, indent=1, default=float) + "\n")

    for name, folder in (("aptp", a.router), ("static", a.static)):
        bundle = load_bundle(folder)
        cfg = dataclasses.replace(base, n_codes=bundle.router.n_codes)
        res["cached"][name] = analyse(bundle.router, bundle.macs, unet, fams, table, cfg)
        print(name, json.dumps(res["cached"][name]["family_routing"]), flush=True)
    b = load_bundle(a.router)
    from prunekit_diffusion.aptp.gating import install

    ctl = install(unet, b.router.layout)
    try:
        res["cached"]["aptp"]["pressure"] = pressure(b.router, unet, ctl, b.macs, T.Canvases(xtr, ytr, table, 5),
                                                     table, base, a.batches, a.batch, 3)
    finally:
        ctl.remove()
    print("pressure", json.dumps(res["cached"]["aptp"]["pressure"]), flush=True)
    for v in filter(None, a.variants.split(",")):
        if v.startswith("seed"):
            cfg = dataclasses.replace(base, seed=int(v[4:]))
        else:
            over = dict(kv.split("=") for kv in v.split("+"))
            cast = lambda k, x: x.lower() == "true" if isinstance(getattr(base, k), bool) else type(getattr(base, k))(x)  # noqa: E731
            cfg = dataclasses.replace(base, **{k: cast(k, x) for k, x in over.items()})
        c1 = time.process_time()
        data = T.Canvases(xtr, ytr, table, cfg.seed)
        router, macs, log = train_router(unet, T.noise_scheduler(), lambda s: data.batch(cfg.batch, table), cfg)
        entry = analyse(router, macs, unet, fams, table, cfg) | {"config": dataclasses.asdict(cfg),
                                                                "train_cpu_s": time.process_time() - c1,
                                                                "last_log": log[-1]}
        res["routers"][v] = entry
        print(v, json.dumps(entry["code_mac_ratio"]), json.dumps(entry["family_routing"]), flush=True)
        save()  # after every router, so a stopped run keeps what it finished
    save()
    print("->", a.out)


if __name__ == "__main__":
    main()
