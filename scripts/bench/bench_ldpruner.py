#!/usr/bin/env python
"""LD-Pruner benchmark on real MNIST-trained diffusers denoisers (UNet2DModel and DiT).

Needs the cached models of ``scripts/train_mnist_diffusion.py`` (out/mnist16/). For each
denoiser, in one run on one machine:

- LD-Pruner (``prune_denoiser``) and the random-operator baseline (several seeds) under
  the same MAC budget ``--keep`` (fraction of the denoiser's MACs per call);
- parameters and MACs (measured with the FLOP counter), and denoiser latency
  (batch ``--latency-batch``, median of interleaved repeats) as a ratio to the
  unpruned model measured in the same loop;
- quality: class accuracy of generated digits (DDIM, ``--eval-steps`` steps, labels
  0..9 in turn) judged by the digit classifier, and the Fréchet distance between the
  classifier's features of generated and held-out real digits (images 8000..9999);
- the magnitude (L1) channel-pruning baseline (Torch-Pruning; UNet and DiT) at the same
  MAC target;
- a real-data reference row: held-out accuracy of the classifier on real digits and the
  Fréchet distance of real training digits to the held-out ones (the meter's floor);
- the same quality after a short recovery fine-tune (noise loss + output distillation
  from the unpruned model, ``--ft-steps`` steps) for LD-Pruner, random seed 0 and magnitude.

Writes ``bench-out/ldpruner.json`` (with ``machine_info()``). ``--combine A.json B.json``
merges per-model result files of parallel runs into ``--out`` instead of benchmarking.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "mnist"
N_TRAIN = 8000


def load_classifier(folder: Path):
    from safetensors.torch import load_file

    from prunekit_diffusion.quality import DigitClassifier

    clf = DigitClassifier()
    clf.load_state_dict(load_file(str(folder / "classifier.safetensors")))
    return clf.eval()


@torch.no_grad()
def quality(model, scheduler, clf, real_feats, n: int, steps: int, seed: int = 10_000) -> dict:
    from prunekit_diffusion.quality import classifier_metrics
    from prunekit_diffusion.sampling import Calibration, sample_latents

    labels = torch.arange(n) % 10
    calib = Calibration(n=n, steps=steps, seed=seed, batch_size=100, cond={"class_labels": labels})
    t0 = time.perf_counter()
    x = sample_latents(model.eval(), scheduler, calib).clamp(-1, 1)
    m = classifier_metrics(clf, x, labels, real_feats)
    m["sampling_seconds"] = time.perf_counter() - t0
    return m


@torch.no_grad()
def latencies(models: dict, batch: int, repeats: int, size: int) -> dict:
    from prunekit_diffusion.sampling import denoise

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g)
    kw = {"class_labels": torch.arange(batch) % 10}
    t = torch.tensor(500)
    times = {k: [] for k in models}
    for m in models.values():  # warm-up
        denoise(m.eval(), x, t, kw)
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            denoise(m, x, t, kw)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def sizes(model, calib) -> dict:
    from prunekit_diffusion.operators import total_macs

    return {"params": sum(p.numel() for p in model.parameters()), "macs": total_macs(model, calib.example(model))}


def recover(model, base, sched, a, clf, real_feats, train_x, train_y) -> dict:
    """Recovery fine-tune of a copy of ``model`` against ``base`` and the quality afterwards."""
    from prunekit_diffusion.recovery import distill_finetune

    student = copy.deepcopy(model)
    t1 = time.perf_counter()
    log = distill_finetune(student, base, sched, train_x, {"class_labels": train_y}, steps=a.ft_steps,
                           batch_size=a.ft_batch, lr=a.ft_lr, seed=a.seed)
    return {"steps": a.ft_steps, "seconds": time.perf_counter() - t1, "log": log,
            "quality": quality(student, sched, clf, real_feats, a.eval_n, a.eval_steps)}


def finetune_control(kind: str, a, clf, real_feats, train_x, train_y) -> dict:
    """The same recovery fine-tune applied to the *unpruned* model (student = a copy of the teacher).

    Separates what the extra training steps do from what recovering from pruning does: on an
    undertrained model, fine-tuning alone can raise quality.
    """
    from prunekit_diffusion.pipeline import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained(a.models_dir / kind)
    base = pipe.denoiser.eval()
    return recover(base, base, pipe.scheduler, a, clf, real_feats, train_x, train_y)


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
    out["unpruned"] = {**sizes(base, calib), "quality": quality(base, sched, clf, real_feats, a.eval_n, a.eval_steps)}

    variants: dict[str, tuple] = {}  # name -> (pruned model, removed operators, extra info)
    t0 = time.perf_counter()
    ld = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="ld-pruner", progress=a.progress)
    out["ld_scoring_seconds"] = time.perf_counter() - t0
    out["operators"] = ld.report.extra["operators"]
    variants["ld-pruner"] = (ld.model, [x["name"] for x in ld.removed], {})
    for s in range(a.random_seeds):
        r = prune_denoiser(base, sched, keep_macs=a.keep, calib=calib, method="random", seed=s)
        variants[f"random-{s}"] = (r.model, [x["name"] for x in r.removed], {})
    if a.magnitude:
        from prunekit_diffusion.magnitude import magnitude_prune

        t0 = time.perf_counter()
        mag, info = magnitude_prune(base, calib.example(base), a.keep)
        variants["magnitude"] = (mag, [], {**info, "search_seconds": time.perf_counter() - t0})

    lat = latencies({"unpruned": base, **{k: v[0] for k, v in variants.items()}}, a.latency_batch,
                    a.latency_repeats, base.config.sample_size)
    out["latency_seconds"] = lat
    res = {}
    for name, (model, removed, info) in variants.items():
        print(f"[{kind}] {name}: removed {len(removed)} operators; quality before fine-tune", flush=True)
        sz = sizes(model, calib)
        entry = {
            **sz, "mac_ratio": sz["macs"] / out["unpruned"]["macs"], "param_ratio": sz["params"] / out["unpruned"]["params"],
            "latency_ratio": lat[name] / lat["unpruned"], "removed": removed, **info,
            "quality": quality(model, sched, clf, real_feats, a.eval_n, a.eval_steps),
        }
        if name in ("ld-pruner", "random-0", "magnitude") and a.ft_steps > 0:
            print(f"[{kind}] {name}: recovery fine-tune ({a.ft_steps} steps)", flush=True)
            entry["finetune"] = recover(model, base, sched, a, clf, real_feats, train_x, train_y)
        res[name] = entry
    out["pruned"] = res
    base_acc = out["unpruned"]["quality"]["accuracy"]
    ldq = res["ld-pruner"]
    rnd = [v for k, v in res.items() if k.startswith("random-")]
    out["summary"] = {
        "keep_macs": a.keep,
        "ld_mac_ratio": ldq["mac_ratio"], "ld_latency_ratio": ldq["latency_ratio"],
        "ld_accuracy_before_ft": ldq["quality"]["accuracy"], "ld_frechet_before_ft": ldq["quality"]["frechet"],
        "ld_accuracy_after_ft": ldq.get("finetune", {}).get("quality", {}).get("accuracy"),
        "ld_frechet_after_ft": ldq.get("finetune", {}).get("quality", {}).get("frechet"),
        "unpruned_accuracy": base_acc, "unpruned_frechet": out["unpruned"]["quality"]["frechet"],
        "random_mean_mac_ratio": statistics.mean(v["mac_ratio"] for v in rnd) if rnd else None,
        "random_mean_accuracy_before_ft": statistics.mean(v["quality"]["accuracy"] for v in rnd) if rnd else None,
        "random_mean_frechet_before_ft": statistics.mean(v["quality"]["frechet"] for v in rnd) if rnd else None,
        "random0_accuracy_after_ft": res.get("random-0", {}).get("finetune", {}).get("quality", {}).get("accuracy"),
        "random0_frechet_after_ft": res.get("random-0", {}).get("finetune", {}).get("quality", {}).get("frechet"),
    }
    if "magnitude" in res:
        mq = res["magnitude"]
        out["summary"].update({
            "magnitude_mac_ratio": mq["mac_ratio"], "magnitude_latency_ratio": mq["latency_ratio"],
            "magnitude_accuracy_before_ft": mq["quality"]["accuracy"], "magnitude_frechet_before_ft": mq["quality"]["frechet"],
            "magnitude_accuracy_after_ft": mq.get("finetune", {}).get("quality", {}).get("accuracy"),
            "magnitude_frechet_after_ft": mq.get("finetune", {}).get("quality", {}).get("frechet"),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="unet,dit", help="comma-separated: unet, dit")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "out" / "mnist16")
    ap.add_argument("--keep", type=float, default=0.65, help="fraction of the denoiser's MACs to keep")
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--calib-n", type=int, default=20)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--latency-batch", type=int, default=64)
    ap.add_argument("--latency-repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-magnitude", dest="magnitude", action="store_false",
                    help="skip the Torch-Pruning magnitude channel baseline")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ldpruner.json")
    ap.add_argument("--merge", action="store_true", help="keep results of models not benchmarked in this run")
    ap.add_argument("--combine", type=Path, nargs="+", help="merge these result files into --out and exit")
    ap.add_argument("--control-only", action="store_true",
                    help="only fine-tune the unpruned models (same recipe) and add that to --out's results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from prunekit.fileio import atomic_write_text

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
    from prunekit_diffusion.quality import classifier_metrics, load_mnist

    if not (a.models_dir / "classifier.safetensors").exists():
        sys.exit(f"no trained models in {a.models_dir}: run scripts/train_mnist_diffusion.py first")
    clf_info = json.loads((a.models_dir / "classifier.json").read_text())
    x, y = load_mnist(DATA, size=clf_info.get("size", 32))
    clf = load_classifier(a.models_dir)
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
    if a.control_only:
        result = json.loads(a.out.read_text())
        for kind in [k.strip() for k in a.models.split(",") if k.strip()]:
            ctl = finetune_control(kind, a, clf, real_feats, x[:N_TRAIN], y[:N_TRAIN])
            ctl["machine"], ctl["inputs"] = machine_info(), {k: str(v) for k, v in vars(a).items()}
            result["models"][kind]["unpruned"]["finetune_control"] = ctl
            result["models"][kind]["summary"]["unpruned_accuracy_after_same_ft"] = ctl["quality"]["accuracy"]
            result["models"][kind]["summary"]["unpruned_frechet_after_same_ft"] = ctl["quality"]["frechet"]
            atomic_write_text(a.out, json.dumps(result, indent=2, default=float) + "\n")
            print(kind, json.dumps(ctl["quality"]), flush=True)
        return
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
