#!/usr/bin/env python
"""Pool replicate runs of ``bench_ldpruner.py`` (one run per seed) into means, standard errors and targets.

    python scripts/bench/ldpruner_seeds.py RUN_SEED0.json RUN_SEED1.json ... --out POOLED.json [--table]
    python scripts/bench/ldpruner_seeds.py NEW_S0.json+OLD_S0.json NEW_S1.json+OLD_S1.json --out POOLED.json

``A+B``: one replicate from several result files of the same evaluation (e.g. a run of a new
variant beside an earlier run of the same seed): rows of later files are added where the name is
new; the files must agree on the settings and the evaluation seed, and the unpruned model's
per-digit results must be identical (same digits, same noise), so the rows pair digit by digit.

Variants are grouped per model: ``unpruned`` (no fine-tune), ``control`` (the unpruned model given
the same recovery), each LD-Pruner row by name, ``random`` (rows ``random-S``), ``random-block``
(``random-block-S``) and ``random-sublayer`` (``random-sublayer-S``), several draws of a run being
averaged first. For every group and each run:
accuracy and Fréchet distance after recovery; across the K runs:

- ``mean``, ``sd`` and ``se_seeds = sd / sqrt(K)`` (recovery, calibration, draw and evaluation noise);
- ``se_binomial = sqrt(sum_k p_k (1 - p_k) / n_k) / K`` (evaluation noise alone).

Rows ``magnitude@K`` (magnitude at another MAC budget, e.g. the one matching LD-Pruner's latency)
are compared with every LD-Pruner row too, but are not baselines of the targets, which are at equal MACs.

Comparisons (each LD-Pruner row against each baseline): the per-run difference of accuracy, its mean
and ``se_seeds``, and ``se_paired``: the per-digit differences ``d_i = c_a,i - c_b,i`` of one run
(both models sampled with the same seeds, ``"correct"`` strings) give ``var(d) / n`` per run, pooled
as ``sqrt(sum_k var_k / n_k) / K``. Targets (issue 6) on the pooled means: accuracy after recovery
>= 0.95 x the unpruned model's (and x the control's), and above every baseline (``clear`` when the
difference exceeds twice the larger standard error). The same per run for the Fréchet distance
(``frechet``: ``a - b``, lower is better, ``clear`` when the mean is below minus twice its ``se_seeds``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import across_runs  # noqa: E402

AGREE = ("keep", "ft_steps", "ft_batch", "ft_lr", "ft_modes", "eval_n", "eval_steps", "calib_n", "calib_steps")
BASELINES = ("magnitude", "random", "random-block", "random-sublayer")


def group_of(name: str) -> str:
    """``random-3`` -> ``random``, ``random-block-1`` -> ``random-block``, ``random-sublayer-0`` ->
    ``random-sublayer``; other names unchanged."""
    m = re.fullmatch(r"(random(?:-[a-z]+)*)-\d+", name)
    return m.group(1) if m else name


def merge_runs(runs: list[dict], names: list[str]) -> dict:
    """One replicate from result files of the same evaluation (see the module docstring); raises ValueError."""
    out = json.loads(json.dumps(runs[0]))
    out["merged_from"] = list(names)
    for name, r in zip(names[1:], runs[1:]):
        for key in AGREE + ("eval_seed",):
            if json.dumps(r["inputs"].get(key)) != json.dumps(runs[0]["inputs"].get(key)):
                raise ValueError(f"{name} differs from {names[0]} in {key!r}")
        for model, m in r["models"].items():
            if model not in out["models"]:
                continue
            base = out["models"][model]
            if m["unpruned"]["quality"].get("correct") != base["unpruned"]["quality"].get("correct"):
                raise ValueError(f"{name}: the unpruned {model} scores other digits than in {names[0]} (not the same evaluation)")
            if "finetune_control" in m["unpruned"] and "finetune_control" not in base["unpruned"]:
                base["unpruned"]["finetune_control"] = m["unpruned"]["finetune_control"]
            for row, v in m["pruned"].items():
                base["pruned"].setdefault(row, {**v, "from_file": name})
    return out


def run_groups(model: dict) -> dict[str, list[dict]]:
    """Group name -> the run's quality dicts after recovery (``unpruned``: before; ``control``: the
    unpruned model after the same recovery), plus ``mac_ratio``/``latency_ratio`` per entry."""
    u = model["unpruned"]
    out = {"unpruned": [{**u["quality"], "mac_ratio": 1.0, "latency_ratio": 1.0}]}
    if "finetune_control" in u:
        out["control"] = [{**u["finetune_control"]["quality"], "mac_ratio": 1.0, "latency_ratio": 1.0}]
    for name, v in model["pruned"].items():
        if "finetune" in v:
            out.setdefault(group_of(name), []).append(
                {**v["finetune"]["quality"], "mac_ratio": v["mac_ratio"], "latency_ratio": v["latency_ratio"]})
    return out


def per_digit(entries: list[dict]) -> list[float] | None:
    """Mean correctness per digit over a group's draws (``None`` without ``"correct"`` strings)."""
    if not all("correct" in e for e in entries):
        return None
    return [statistics.mean(int(e["correct"][i]) for e in entries) for i in range(len(entries[0]["correct"]))]


def pool(runs: list[dict], model: str) -> dict:
    """The pooled figures of one model over replicate runs (see the module docstring)."""
    per_run = [run_groups(r["models"][model]) for r in runs]
    names = [g for g in per_run[0] if all(g in pr for pr in per_run)]
    k, groups = len(runs), {}
    for g in names:
        acc = [statistics.mean(e["accuracy"] for e in pr[g]) for pr in per_run]
        n = [len(pr[g]) * r["inputs"]["eval_n"] for pr, r in zip(per_run, runs)]
        s = across_runs(acc)
        groups[g] = {"draws_per_run": [len(pr[g]) for pr in per_run], "accuracy": acc,
                     "frechet": [statistics.mean(e["frechet"] for e in pr[g]) for pr in per_run],
                     "mean": s["mean"], "sd": s["sd"], "se_seeds": s["se"],
                     "se_binomial": sum(p * (1 - p) / m for p, m in zip(acc, n)) ** 0.5 / k,
                     "frechet_mean": statistics.mean(statistics.mean(e["frechet"] for e in pr[g]) for pr in per_run),
                     "mac_ratio": statistics.mean(e["mac_ratio"] for pr in per_run for e in pr[g]),
                     "latency_ratio": statistics.mean(e["latency_ratio"] for pr in per_run for e in pr[g])}
    comparisons = {}
    for a in (g for g in names if g.startswith("ld-pruner")):
        for b in (g for g in names if g in BASELINES or g.startswith("magnitude@")):
            comparisons[f"{a} vs {b}"] = compare(per_run, a, b)
    base, ctl = groups["unpruned"]["mean"], groups.get("control", {}).get("mean")
    targets = {}
    for a in (g for g in names if g.startswith("ld-pruner")):
        m = groups[a]["mean"]
        vs = {c.split(" vs ")[1]: v for c, v in comparisons.items()  # equal-MAC baselines only
              if c.startswith(f"{a} vs ") and "@" not in c}
        targets[a] = {
            "latency_cut_30pct": groups[a]["latency_ratio"] <= 0.70,
            "accuracy_needed": 0.95 * base, "accuracy_within_5pct_of_unpruned": m >= 0.95 * base,
            "accuracy_within_5pct_of_control": m >= 0.95 * ctl if ctl is not None else None,
            "beats_baselines_accuracy": all(v["mean"] > 0 for v in vs.values()) if vs else None,
            "beats_baselines_accuracy_clear": all(v["clear"] for v in vs.values()) if vs else None,
            "beats_baselines_frechet": all(groups[a]["frechet_mean"] < groups[b]["frechet_mean"] for b in vs) if vs else None,
            "beats_baselines_frechet_clear": all(v["frechet"]["clear"] for v in vs.values()) if vs else None,
        }
    return {"runs": k, "groups": groups, "comparisons": comparisons, "targets": targets}


def compare(per_run: list[dict], a: str, b: str) -> dict:
    """Accuracy difference ``a - b`` per run, its mean, and the across-run and paired standard errors."""
    k = len(per_run)
    diff = [statistics.mean(e["accuracy"] for e in pr[a]) - statistics.mean(e["accuracy"] for e in pr[b])
            for pr in per_run]
    var = []
    for pr in per_run:
        ca, cb = per_digit(pr[a]), per_digit(pr[b])
        if ca is None or cb is None or len(ca) != len(cb):
            var = None
            break
        d = [x - y for x, y in zip(ca, cb)]
        var.append(statistics.pvariance(d) / len(d))
    acc = across_runs(diff)
    se_paired = sum(var) ** 0.5 / k if var is not None else None
    se = max(x for x in (acc["se"], se_paired, 0.0) if x is not None)
    fd = [statistics.mean(e["frechet"] for e in pr[a]) - statistics.mean(e["frechet"] for e in pr[b]) for pr in per_run]
    f = across_runs(fd)
    return {"per_run": diff, "mean": acc["mean"], "se_seeds": acc["se"], "se_paired": se_paired,
            "clear": acc["mean"] > 2 * se if se > 0 else None,
            "frechet": {"per_run": fd, "mean": f["mean"], "se_seeds": f["se"],  # lower is better
                        "clear": f["mean"] < -2 * f["se"] if f["se"] is not None else None}}


def table(pooled: dict) -> str:
    """Markdown: one row per group with per-run accuracy, mean ± standard errors, FD, MACs, latency."""
    rows = []
    for model, p in pooled["models"].items():
        k = p["runs"]
        rows += [f"| {model} ({k} runs) | MACs | latency | " + " | ".join(f"acc run {i}" for i in range(k))
                 + " | mean acc | SE seeds / binom. | FD mean |",
                 "|---" * (k + 6) + "|"]
        for g, v in p["groups"].items():
            se = lambda x: "-" if x is None else f"{x:.3f}"
            rows.append(f"| {g} | {v['mac_ratio']:.2f} | {v['latency_ratio']:.2f} | "
                        + " | ".join(f"{x:.3f}" for x in v["accuracy"])
                        + f" | {v['mean']:.3f} | {se(v['se_seeds'])} / {v['se_binomial']:.3f} | {v['frechet_mean']:.1f} |")
        rows.append("")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="bench_ldpruner.py result files, one per seed (A+B: several files of one seed)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--table", action="store_true", help="print the pooled table")
    a = ap.parse_args(argv)
    from prunekit.fileio import atomic_write_text

    try:
        runs = [merge_runs([json.loads(Path(f).read_text()) for f in spec.split("+")], [Path(f).name for f in spec.split("+")])
                for spec in a.runs]
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read or merge the run files: {e}")
    for key in AGREE:
        if len({json.dumps(r["inputs"].get(key)) for r in runs}) > 1:
            sys.exit(f"error: the runs differ in {key!r}; pool only replicates of one setting")
    models = [m for m in runs[0]["models"] if all(m in r["models"] for r in runs)]
    if not models:
        sys.exit("error: no model is in every run")
    pooled = {"benchmark": "ld-pruner replicates pooled (scripts/bench/ldpruner_seeds.py)",
              "runs": [{"file": "+".join(r["merged_from"]), "seed": r["inputs"].get("seed"), "eval_seed": r["inputs"].get("eval_seed"),
                        "machine": r.get("machine"), "wall_seconds": r.get("wall_seconds")} for f, r in zip(a.runs, runs)],
              "inputs": {k: runs[0]["inputs"].get(k) for k in AGREE},
              "models": {m: pool(runs, m) for m in models}}
    atomic_write_text(a.out, json.dumps(pooled, indent=2) + "\n")
    if a.table:
        print(table(pooled))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
