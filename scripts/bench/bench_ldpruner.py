#!/usr/bin/env python
"""LD-Pruner benchmark on real MNIST-trained diffusers denoisers (UNet2DModel and DiT).

Needs the cached models of ``scripts/train_mnist_diffusion.py`` (.cache/mnist16/). For each
denoiser, in one run on one machine:

- LD-Pruner (``prune_denoiser``) and the random-operator baseline (several seeds) under
  the same MAC budget ``--keep`` (fraction of the denoiser's MACs per call);
- parameters and MACs (measured with the FLOP counter), and denoiser latency
  (batch ``--latency-batch``, median of interleaved repeats, process CPU time of the
  single-threaded call, wall time beside it) as a ratio to the unpruned model measured
  in the same loop;
- quality: class accuracy of generated digits (DDIM, ``--eval-steps`` steps, labels
  0..9 in turn) judged by the digit classifier, and the Fréchet distance between the
  classifier's features of generated and held-out real digits (images 8000..9999);
- the magnitude (L1) channel-pruning baseline (Torch-Pruning; UNet and DiT) at the same
  MAC target;
- a real-data reference row: held-out accuracy of the classifier on real digits and the
  Fréchet distance of real training digits to the held-out ones (the meter's floor);
- the same quality after a short recovery fine-tune (noise loss + output distillation
  from the unpruned model, ``--ft-steps`` steps) for every pruned variant, and the same
  fine-tune applied to the unpruned model itself (control: what the extra steps alone do);
  ``--ft-modes distill,denoise,mixed`` gives every variant each recovery recipe
  (``recovery.RECOVERY_MODES``; ``finetune_by_mode`` and ``summary_by_mode`` in the JSON);
- optional variants: ``--ld-variants`` (rounds, ``m`` score per MAC, ``b`` one operator kept per
  block), ``--random-block-seeds`` (the random baseline under the same per-block floor), and
  ``--score-check`` (one-shot scores again with another calibration: rank correlation, removed set);
- every quality figure keeps its per-digit correctness (``"correct"``); ``--eval-seed`` and
  ``--random-first-seed`` move the evaluation noise and the random draws for replicate runs
  (``scripts/bench/ldpruner_seeds.py`` pools replicates);
- a ``summary`` per model with the issue-6 targets evaluated (see :func:`summarize`);
- ``--granularity sublayer`` (our extension, DiT only): the LD-Pruner and random rows use the DiT
  blocks' attention / feed-forward sublayers as operators (rows ``ld-pruner-sublayer``,
  ``random-sublayer-S``); ``--no-control`` skips the control fine-tune of the unpruned model (for a
  run paired with an earlier one that has it); ``--no-oneshot`` runs only the ``--ld-variants`` rows.

Writes ``bench-out/ldpruner.json`` (with ``machine_info()``). ``--combine A.json B.json``
merges per-model result files of parallel runs into ``--out`` instead of benchmarking.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "mnist"
N_TRAIN = 8000


def quality(model, scheduler, clf, real_feats, n: int, steps: int, seed: int = 10_000) -> dict:
    """Sample quality of ``n`` digits, per-sample seeds ``seed + i`` (the same for every model of a run),
    with the per-sample correctness string (``"correct"``) for paired comparisons."""
    from prunekit_diffusion.quality import sample_quality

    return sample_quality(model, scheduler, clf, real_feats, n, steps, seed=seed, per_sample=True)


@torch.no_grad()
def latencies(models: dict, batch: int, repeats: int, size: int) -> dict:
    """Median time of one denoiser call per model, interleaved; process CPU time (single thread:
    robust to other jobs on a shared machine) and wall time."""
    from prunekit_diffusion.sampling import denoise

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g)
    kw = {"class_labels": torch.arange(batch) % 10}
    t = torch.tensor(500)
    cpu = {k: [] for k in models}
    wall = {k: [] for k in models}
    for m in models.values():  # warm-up
        denoise(m.eval(), x, t, kw)
    for _ in range(repeats):
        for k, m in models.items():
            c0, t0 = time.process_time(), time.perf_counter()
            denoise(m, x, t, kw)
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - t0)
    return {"cpu": {k: statistics.median(v) for k, v in cpu.items()},
            "wall": {k: statistics.median(v) for k, v in wall.items()}}


def sizes(model, calib) -> dict:
    from prunekit_diffusion.operators import total_macs

    return {"params": sum(p.numel() for p in model.parameters()), "macs": total_macs(model, calib.example(model))}


def recover(model, base, sched, a, clf, real_feats, train_x, train_y, mode: str = "mixed") -> dict:
    """Recovery fine-tune of a copy of ``model`` against ``base`` (recipe ``mode``, see
    ``recovery.RECOVERY_MODES``) and the quality afterwards."""
    from prunekit_diffusion.recovery import RECOVERY_MODES, distill_finetune

    w, alpha = RECOVERY_MODES[mode]
    student = copy.deepcopy(model)
    t1 = time.perf_counter()
    log = distill_finetune(student, base, sched, train_x, {"class_labels": train_y}, steps=a.ft_steps,
                           batch_size=a.ft_batch, lr=a.ft_lr, seed=a.seed, task_weight=w, alpha=alpha)
    return {"mode": mode, "task_weight": w, "alpha": alpha, "steps": a.ft_steps,
            "seconds": time.perf_counter() - t1, "log": log,
            "quality": quality(student, sched, clf, real_feats, a.eval_n, a.eval_steps, a.eval_seed)}


def recover_modes(model, base, sched, a, clf, real_feats, train_x, train_y) -> dict:
    """``finetune`` (the first of ``--ft-modes``, what the summary and table read) and ``finetune_by_mode``."""
    by = {m: recover(model, base, sched, a, clf, real_feats, train_x, train_y, m) for m in ft_modes(a)}
    return {"finetune": by[ft_modes(a)[0]], "finetune_by_mode": by}


def ft_modes(a) -> list[str]:
    return [m.strip() for m in a.ft_modes.split(",") if m.strip()]


def bench_model(kind: str, a, clf, real_feats, train_x, train_y) -> dict:
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.pipeline import ClassConditionalPipeline
    from prunekit_diffusion.sampling import Calibration

    folder = a.models_dir / kind
    pipe = ClassConditionalPipeline.from_pretrained(folder)
    base, sched = pipe.denoiser.eval(), pipe.scheduler
    calib = Calibration(n=a.calib_n, steps=a.calib_steps, seed=a.seed, batch_size=a.calib_n,
                        cond={"class_labels": torch.arange(a.calib_n) % 10})
    out = {"model": kind, "train_log": json.loads((folder / "train_log.json").read_text()) if (folder / "train_log.json").exists() else None}
    out["train_log"] = {k: v for k, v in (out["train_log"] or {}).items() if k != "log"}
    print(f"[{kind}] quality of the unpruned model", flush=True)
    out["unpruned"] = {**sizes(base, calib), "quality": quality(base, sched, clf, real_feats, a.eval_n, a.eval_steps, a.eval_seed)}

    variants: dict[str, tuple] = {}  # name -> (pruned model, removed operators, extra info)
    sfx, gran = suffix(a), {"granularity": a.granularity}
    out["granularity"] = a.granularity
    if a.oneshot:
        t0 = time.perf_counter()
        ld = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="ld-pruner", progress=a.progress, **gran)
        out["ld_scoring_seconds"] = time.perf_counter() - t0
        out["operators"] = ld.report.extra["operators"]
        variants["ld-pruner" + sfx] = (ld.model, [x["name"] for x in ld.removed], {})
    if a.score_check and a.oneshot:
        out["score_check"] = score_check(base, sched, calib, ld, a)
    for rounds, per_mac, per_block in ld_variants(a.ld_variants):  # our own variants (re-scoring, per MAC, per block)
        t0 = time.perf_counter()
        v = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="ld-pruner", progress=a.progress,
                           rounds=rounds, per_mac=per_mac, keep_per_block=per_block, **gran)
        info = {"rounds": rounds, "per_mac": per_mac, "keep_per_block": per_block,
                "scoring_seconds": time.perf_counter() - t0, "rounds_log": v.report.extra.get("rounds_log"),
                "scores": {o["name"]: o["score"] for o in v.report.extra["operators"] if o["score"] is not None}}
        variants[variant_name(rounds, per_mac, per_block) + sfx] = (v.model, [x["name"] for x in v.removed], info)
    for s in range(a.random_first_seed, a.random_first_seed + a.random_seeds):
        r = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="random", seed=s, **gran)
        variants[f"random{sfx}-{s}"] = (r.model, [x["name"] for x in r.removed], {})
    for s in range(a.random_first_seed, a.random_first_seed + a.random_block_seeds):  # random under the same floor
        r = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="random", seed=s, keep_per_block=1, **gran)
        variants[f"random-block{sfx}-{s}"] = (r.model, [x["name"] for x in r.removed], {"keep_per_block": 1})
    if a.magnitude:
        from prunekit_diffusion.magnitude import magnitude_prune

        t0 = time.perf_counter()
        mag, info = magnitude_prune(base, calib.example(base), a.keep)
        variants["magnitude"] = (mag, [], {**info, "search_seconds": time.perf_counter() - t0})
    for k in magnitude_keeps(a.magnitude_keeps):  # magnitude at other MAC budgets, e.g. LD-Pruner's latency
        from prunekit_diffusion.magnitude import magnitude_prune

        t0 = time.perf_counter()
        mag, info = magnitude_prune(base, calib.example(base), k)
        variants[f"magnitude@{k:g}"] = (mag, [], {**info, "search_seconds": time.perf_counter() - t0})

    lat = latencies({"unpruned": base, **{k: v[0] for k, v in variants.items()}}, a.latency_batch,
                    a.latency_repeats, base.config.sample_size)
    out["latency_seconds"] = lat
    if a.ft_steps > 0 and a.control:  # control: the same fine-tune on the unpruned model (student = a copy of the teacher)
        print(f"[{kind}] unpruned: the same recovery fine-tune (control)", flush=True)
        ctl = recover_modes(base, base, sched, a, clf, real_feats, train_x, train_y)
        out["unpruned"]["finetune_control"] = ctl["finetune"]
        out["unpruned"]["finetune_control_by_mode"] = ctl["finetune_by_mode"]
    res = {}
    for name, (model, removed, info) in variants.items():
        print(f"[{kind}] {name}: removed {len(removed)} operators; quality before fine-tune", flush=True)
        sz = sizes(model, calib)
        entry = {
            **sz, "mac_ratio": sz["macs"] / out["unpruned"]["macs"], "param_ratio": sz["params"] / out["unpruned"]["params"],
            "latency_ratio": lat["cpu"][name] / lat["cpu"]["unpruned"],
            "latency_ratio_wall": lat["wall"][name] / lat["wall"]["unpruned"], "removed": removed, **info,
            "quality": quality(model, sched, clf, real_feats, a.eval_n, a.eval_steps, a.eval_seed),
        }
        if a.ft_steps > 0:
            print(f"[{kind}] {name}: recovery fine-tune ({a.ft_steps} steps, {a.ft_modes})", flush=True)
            entry.update(recover_modes(model, base, sched, a, clf, real_feats, train_x, train_y))
        res[name] = entry
    out["pruned"] = res
    out["summary"] = summarize(out, a)
    if a.ft_steps > 0:
        out["summary_by_mode"] = {m: summarize(with_mode(out, m), a) for m in ft_modes(a)}
    return out


def with_mode(out: dict, mode: str) -> dict:
    """``out`` with every ``finetune`` (and the control's) replaced by recovery recipe ``mode``'s."""
    u = out["unpruned"]
    unpruned = {**u, **({"finetune_control": u["finetune_control_by_mode"][mode]} if "finetune_control_by_mode" in u else {})}
    pruned = {k: {**v, "finetune": v["finetune_by_mode"][mode]} for k, v in out["pruned"].items()}
    return {**out, "unpruned": unpruned, "pruned": pruned}


def score_check(base, sched, calib, ld, a) -> dict:
    """Scoring sanity check: one-shot scores again with another calibration (2x samples, other
    seeds, 2x steps); Spearman rank correlation with the main scores, and the set it would remove."""
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.sampling import Calibration

    n = 2 * a.calib_n
    alt = Calibration(n=n, steps=2 * a.calib_steps, seed=a.seed + 1000, batch_size=n,
                      cond={"class_labels": torch.arange(n) % 10})
    t0 = time.perf_counter()
    v = prune_denoiser(base, sched, keep_macs=a.keep, calib=alt, method="ld-pruner", progress=False,
                       granularity=a.granularity)
    main_s = [o["score"] for o in ld.report.extra["operators"] if o["score"] is not None]
    alt_s = [o["score"] for o in v.report.extra["operators"] if o["score"] is not None]
    rank = lambda xs: torch.tensor(xs).argsort().argsort().double()
    r1, r2 = rank(main_s), rank(alt_s)
    rho = float(((r1 - r1.mean()) * (r2 - r2.mean())).sum() / ((r1 - r1.mean()).norm() * (r2 - r2.mean()).norm()))
    return {"calibration": {"n": n, "steps": 2 * a.calib_steps, "seed": a.seed + 1000}, "spearman": rho,
            "seconds": time.perf_counter() - t0, "removed": [x["name"] for x in v.removed],
            "same_removed_set": sorted(x["name"] for x in v.removed) == sorted(x["name"] for x in ld.removed),
            "scores": dict(zip([o["name"] for o in v.report.extra["operators"] if o["score"] is not None], alt_s))}


def ld_variants(spec: str) -> list[tuple[int, bool, int]]:
    """``"4,4m,1b"`` -> [(4, False, 0), (4, True, 0), (1, False, 1)]: rounds, ``m`` = score per MAC,
    ``b`` = keep one operator per block."""
    out = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        out.append((int(tok.rstrip("mb")), "m" in tok, int("b" in tok)))
    return out


def magnitude_keeps(spec: str) -> list[float]:
    """``"0.5,0.55"`` -> [0.5, 0.55]: extra MAC budgets of the magnitude baseline (rows ``magnitude@K``)."""
    out = [float(t) for t in spec.split(",") if t.strip()]
    if any(not 0.0 < k <= 1.0 for k in out):
        raise SystemExit(f"error: --magnitude-keeps must be fractions in (0, 1], got {spec!r}")
    return out


def suffix(a) -> str:
    """Row-name suffix of the operator granularity: ``""`` (the paper's operators) or ``"-sublayer"``."""
    g = getattr(a, "granularity", "operator")
    return "" if g == "operator" else f"-{g}"


def variant_name(rounds: int, per_mac: bool, per_block: int = 0) -> str:
    return ("ld-pruner" + (f"-iter{rounds}" if rounds > 1 else "") + ("-permac" if per_mac else "")
            + ("-block" if per_block else ""))


def summarize(out: dict, a) -> dict:
    """Headline figures and the issue-6 targets, from one model's results.

    Targets: latency ratio <= 0.70 (>= 30 % cut); LD-Pruner's accuracy after recovery within 5 %
    (relative) of the unpruned model's, judged against both the original unpruned model and the
    unpruned model given the same fine-tune; LD-Pruner above random (mean over seeds) and magnitude
    at equal MACs, in accuracy (higher) and Fréchet distance (lower), after recovery.
    """
    res = out["pruned"]
    acc = lambda v, ft: (v.get("finetune", {}).get("quality", {}) if ft else v["quality"]).get("accuracy")
    fd = lambda v, ft: (v.get("finetune", {}).get("quality", {}) if ft else v["quality"]).get("frechet")
    mean = lambda xs: statistics.mean(xs) if xs and None not in xs else None
    sfx = suffix(a)
    rnd = [v for k, v in res.items() if re.fullmatch(rf"random{sfx}-\d+", k)]
    rnd_block = [v for k, v in res.items() if re.fullmatch(rf"random-block{sfx}-\d+", k)]
    lds = [k for k in res if k.startswith("ld-pruner")]
    if not lds:  # a baselines-only run, to be pooled beside an earlier run (ldpruner_seeds.py A+B)
        return {"keep_macs": a.keep, "eval_n": a.eval_n, "note": "no LD-Pruner row in this run"}
    main = "ld-pruner" + sfx if "ld-pruner" + sfx in res else min(lds)
    ld, mag = res[main], res.get("magnitude")
    base = out["unpruned"]
    ctl = base.get("finetune_control")
    s = {"keep_macs": a.keep, "eval_n": a.eval_n,
         "accuracy_standard_error": (lambda p: (p * (1 - p) / a.eval_n) ** 0.5)(base["quality"]["accuracy"]),
         "unpruned_accuracy": base["quality"]["accuracy"], "unpruned_frechet": base["quality"]["frechet"],
         "unpruned_accuracy_after_same_ft": ctl["quality"]["accuracy"] if ctl else None,
         "unpruned_frechet_after_same_ft": ctl["quality"]["frechet"] if ctl else None}
    extra_ld = {k: [v] for k, v in res.items() if k.startswith("ld-pruner-") and k != main}
    rows = {"ld": [ld], **({"random_mean": rnd} if rnd else {}), **({"magnitude": [mag]} if mag else {}),
            **({"random_block_mean": rnd_block} if rnd_block else {}), **extra_ld}
    for key, vs in rows.items():
        s[f"{key}_mac_ratio"] = mean([v["mac_ratio"] for v in vs])
        s[f"{key}_latency_ratio"] = mean([v["latency_ratio"] for v in vs])
        for ft, tag in ((False, "before_ft"), (True, "after_ft")):
            s[f"{key}_accuracy_{tag}"] = mean([acc(v, ft) for v in vs])
            s[f"{key}_frechet_{tag}"] = mean([fd(v, ft) for v in vs])
    if s["ld_accuracy_after_ft"] is not None:
        after = s["ld_accuracy_after_ft"]
        others = [k for k in ("random_mean", "magnitude") if k in rows]
        for k in extra_ld:  # each LD-Pruner variant against the same baselines, after recovery
            s[f"{k}_beats_baselines_accuracy_after_ft"] = all(s[f"{k}_accuracy_after_ft"] > s[f"{o}_accuracy_after_ft"] for o in others)
            if rnd_block:  # and against random removal under the same per-block constraint
                s[f"{k}_beats_random_block_accuracy_after_ft"] = (s[f"{k}_accuracy_after_ft"]
                                                                  > s["random_block_mean_accuracy_after_ft"])
            s[f"{k}_accuracy_within_5pct_of_unpruned_same_ft"] = (
                s[f"{k}_accuracy_after_ft"] >= 0.95 * s["unpruned_accuracy_after_same_ft"] if ctl else None)
        s["targets"] = {
            "latency_cut_30pct": s["ld_latency_ratio"] <= 0.70,
            "accuracy_within_5pct_of_unpruned": after >= 0.95 * s["unpruned_accuracy"],
            "accuracy_within_5pct_of_unpruned_same_ft": after >= 0.95 * s["unpruned_accuracy_after_same_ft"] if ctl else None,
            "beats_baselines_accuracy_after_ft": all(after > s[f"{k}_accuracy_after_ft"] for k in others),
            "beats_baselines_frechet_after_ft": all(s["ld_frechet_after_ft"] < s[f"{k}_frechet_after_ft"] for k in others),
            "beats_baselines_accuracy_before_ft": all(s["ld_accuracy_before_ft"] > s[f"{k}_accuracy_before_ft"] for k in others),
            "beats_baselines_frechet_before_ft": all(s["ld_frechet_before_ft"] < s[f"{k}_frechet_before_ft"] for k in others),
        }
    return s


def table(result: dict, mode: str | None = None) -> str:
    """The README table (markdown) of a result file: one row per variant, before / after recovery
    (``mode``: that recovery recipe of a ``--ft-modes`` run; default the first)."""
    f = lambda q, k, d: "-" if q is None else f"{q[k]:.{d}f}"
    rows = ["| model | variant | MACs | params | latency (CPU) | acc before FT | FD before | acc after FT | FD after |",
            "|---|---|---|---|---|---|---|---|---|"]
    for kind, m in result["models"].items():
        if mode is not None:
            m = with_mode(m, mode)
        u = m["unpruned"]
        ctl = u.get("finetune_control", {}).get("quality")
        rows.append(f"| {kind} | unpruned (after: same fine-tune, control) | 1.00 | 1.00 | 1.00 | "
                    f"{f(u['quality'], 'accuracy', 3)} | {f(u['quality'], 'frechet', 1)} | {f(ctl, 'accuracy', 3)} | "
                    f"{f(ctl, 'frechet', 1)} |")
        for name, v in m["pruned"].items():
            ft = v.get("finetune", {}).get("quality")
            rows.append(f"| {kind} | {name} | {v['mac_ratio']:.2f} | {v['param_ratio']:.2f} | {v['latency_ratio']:.2f} | "
                        f"{f(v['quality'], 'accuracy', 3)} | {f(v['quality'], 'frechet', 1)} | {f(ft, 'accuracy', 3)} | "
                        f"{f(ft, 'frechet', 1)} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="unet,dit", help="comma-separated: unet, dit")
    ap.add_argument("--models-dir", type=Path, default=ROOT / ".cache" / "mnist16")
    ap.add_argument("--keep", type=float, default=0.65, help="fraction of the denoiser's MACs to keep")
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--random-block-seeds", type=int, default=0,
                    help="random baseline under the keep-one-operator-per-block constraint, this many seeds")
    ap.add_argument("--random-first-seed", type=int, default=0,
                    help="the random baselines draw seeds FIRST, FIRST+1, ... (names random-S, random-block-S)")
    ap.add_argument("--calib-n", type=int, default=20)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--eval-seed", type=int, default=10_000,
                    help="generated digit i uses seed EVAL_SEED + i (the same for every model of the run)")
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--ft-modes", default="mixed", help="recovery recipes, comma-separated (mixed, distill, "
                    "denoise; recovery.RECOVERY_MODES), each run on every variant; the first one fills 'finetune'")
    ap.add_argument("--score-check", action="store_true",
                    help="re-score one-shot with another calibration (2x samples/steps, other seeds) and compare")
    ap.add_argument("--latency-batch", type=int, default=64)
    ap.add_argument("--latency-repeats", type=int, default=15)
    ap.add_argument("--ld-variants", default="", help="extra LD-Pruner variants, comma-separated: rounds, with "
                    "'m' for score per MAC, 'b' for one operator kept per block (e.g. '4,4m,1b'); the one-shot "
                    "'ld-pruner' row is always run")
    ap.add_argument("--granularity", choices=("operator", "sublayer"), default="operator",
                    help="LD-Pruner / random operators: the paper's (UNet resnets/attentions, DiT blocks) or the DiT "
                         "blocks' attention / feed-forward sublayers (ours; rows named *-sublayer)")
    ap.add_argument("--no-oneshot", dest="oneshot", action="store_false",
                    help="skip the one-shot LD-Pruner row (run only --ld-variants; the summary reads the first of them)")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control (the recovery fine-tune applied to the unpruned model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-magnitude", dest="magnitude", action="store_false",
                    help="skip the Torch-Pruning magnitude channel baseline")
    ap.add_argument("--magnitude-keeps", default="",
                    help="extra magnitude rows at these MAC fractions, comma-separated (rows magnitude@K; e.g. the "
                         "budget at which magnitude matches LD-Pruner's latency)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ldpruner.json")
    ap.add_argument("--merge", action="store_true", help="keep results of models not benchmarked in this run")
    ap.add_argument("--table", action="store_true", help="print --out as a markdown table and exit")
    ap.add_argument("--table-mode", help="with --table: the recovery recipe to show (a --ft-modes run)")
    ap.add_argument("--combine", type=Path, nargs="+", help="merge these result files into --out and exit")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from prunekit.fileio import atomic_write_text

    if a.table:
        print(table(json.loads(a.out.read_text()), a.table_mode))
        return
    if a.combine:
        runs = [json.loads(f.read_text()) for f in a.combine]
        merged = {**runs[0], "models": {}, "runs": [{k: r.get(k) for k in ("machine", "inputs", "wall_seconds")} for r in runs]}
        for f, r in zip(a.combine, runs):
            for k, v in r["models"].items():
                merged["models"][k] = {**v, "run": str(f.name)}
        atomic_write_text(a.out, json.dumps(merged, indent=2, default=float) + "\n")
        print(f"wrote {a.out} ({', '.join(merged['models'])})")
        return
    from prunekit.report import machine_info
    from prunekit_diffusion.quality import classifier_metrics, load_classifier, load_mnist

    if not (a.models_dir / "classifier.safetensors").exists():
        sys.exit(f"no trained models in {a.models_dir}: run scripts/train_mnist_diffusion.py first")
    clf_info = json.loads((a.models_dir / "classifier.json").read_text())
    x, y = load_mnist(DATA, size=clf_info.get("size", 32))
    clf = load_classifier(a.models_dir / "classifier.safetensors")
    with torch.no_grad():
        real_feats = clf.features(x[N_TRAIN:])
        real = x[:a.eval_n]  # real training digits, as many as generated per model
        real_ref = classifier_metrics(clf, real, y[:a.eval_n], real_feats)
    result = {"benchmark": "ld-pruner on MNIST-trained diffusers denoisers", "machine": machine_info(),
              "inputs": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "classifier": clf_info, "real_reference": {**real_ref, "n": a.eval_n,
                                                         "what": "real training digits vs the held-out set"},
              "models": {}}
    if a.merge and a.out.exists():  # keep other models' results from an earlier run (each has its own machine info)
        earlier = json.loads(a.out.read_text())
        for k, v in earlier.get("models", {}).items():
            result["models"][k] = {**v, "from_earlier_run": {"machine": earlier.get("machine"), "inputs": earlier.get("inputs")}}
    t0 = time.perf_counter()
    for kind in [k.strip() for k in a.models.split(",") if k.strip()]:
        if not (a.models_dir / kind / "model_index.json").exists():
            print(f"[{kind}] not trained; skipped", flush=True)
            continue
        result["models"][kind] = bench_model(kind, a, clf, real_feats, x[:N_TRAIN], y[:N_TRAIN])
        result["wall_seconds"] = time.perf_counter() - t0
        atomic_write_text(a.out, json.dumps(result, indent=2, default=float) + "\n")  # partial results survive
        print(json.dumps(result["models"][kind]["summary"], indent=2), flush=True)
    result["wall_seconds"] = time.perf_counter() - t0
    atomic_write_text(a.out, json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
