#!/usr/bin/env python
"""Pool training seeds of ``bench_aptp.py`` (one run per ``--seed``, one shared ``--eval-seed``).

    python scripts/bench/aptp_seeds.py RUN_SEED0.json RUN_SEED1.json ... --out POOLED.json

The runs must agree on every setting but ``seed`` and ``out`` and evaluate the same prompts with
the same noise (the unpruned rows' per-prompt ``ok`` must be identical). For the fine-tuned APTP and
static rows, per family and overall: accuracy per run and its mean; the per-run paired difference
``APTP - static`` with ``se = std(d) / sqrt(n)`` over the prompts ``d_i = ok_aptp,i - ok_static,i``;
pooled over the K runs: the mean difference, ``se_paired = sqrt(sum_k se_k^2) / K`` (evaluation
noise) and ``se_seeds = sd(diff_k) / sqrt(K)`` (router / fine-tune seed noise, K >= 2).

    python scripts/bench/aptp_seeds.py NEW.json --against OLD.json --out CMP.json

``--against`` also compares run(s) of another recipe (e.g. a longer router schedule) with one earlier run on
the same eval prompts and noise (identical unpruned rows required): per family, the paired differences
new - old of each model's per-prompt correctness, and of ``APTP - static`` (``d_i = (a - s)_new,i - (a - s)_old,i``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from bench_aptp import paired_difference  # noqa: E402

FAMILIES = ("single", "side", "pair", "all")
IGNORED = ("seed", "eval_seed", "out", "force", "static_from")


def eval_seed(args: dict) -> int:
    """The eval prompt seed a run used (``--eval-seed``, default seed + 1)."""
    return int(args["seed"]) + 1 if args.get("eval_seed", "None") == "None" else int(args["eval_seed"])


def family_ok(run: dict, model: str, fam: str) -> list[int]:
    """Per-prompt correctness of ``model``'s fine-tuned row restricted to ``fam`` (prompts are in family blocks)."""
    ok = run["results"][model]["finetuned"]["ok"]
    if fam == "all":
        return ok
    n = run["eval"]["prompts_per_family"]
    i = run["eval"]["families"].index(fam)
    return ok[i * n : (i + 1) * n]


def pool(runs: list[dict]) -> dict:
    """Per-run and pooled figures (see the module docstring); raises ValueError when runs do not pair."""
    first = runs[0]
    for k, r in enumerate(runs[1:], 1):
        diff = [a for a in set(first["args"]) | set(r["args"])
                if a not in IGNORED and first["args"].get(a) != r["args"].get(a)]
        if eval_seed(r["args"]) != eval_seed(first["args"]):
            diff.append("eval_seed")
        if diff:
            raise ValueError(f"run {k} differs from run 0 in {sorted(diff)}")
        if r["results"]["base"]["ok"] != first["results"]["base"]["ok"]:
            raise ValueError(f"run {k}: the unpruned model's per-prompt results differ (other eval prompts or noise)")
    out = {"seeds": [int(r["args"]["seed"]) for r in runs], "families": {}}
    for fam in FAMILIES:
        per = [paired_difference(family_ok(r, "aptp", fam), family_ok(r, "static", fam)) for r in runs]
        acc = {m: [sum(family_ok(r, m, fam)) / len(family_ok(r, m, fam)) for r in runs] for m in ("aptp", "static")}
        diffs = [p["diff"] for p in per]
        out["families"][fam] = {
            "acc": {m: {"per_run": v, "mean": statistics.fmean(v)} for m, v in acc.items()},
            "diff_per_run": diffs, "se_per_run": [p["se"] for p in per], "diff": statistics.fmean(diffs),
            "se_paired": sum(p["se"] ** 2 for p in per) ** 0.5 / len(per),
            "se_seeds": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None}
    out["frechet"] = {m: [r["results"][m]["finetuned"]["frechet"] for r in runs] for m in ("aptp", "static")}
    out["mean_mac_ratio"] = {m: [r["results"][m]["mean_mac_ratio_eval"] for r in runs] for m in ("aptp", "static")}
    cpu = lambda r, m: r["results"][m]["finetuned"]["generate_cpu_s"] / r["results"]["base"]["generate_cpu_s"]  # noqa: E731
    out["generate_cpu_ratio"] = {m: [cpu(r, m) for r in runs] for m in ("aptp", "static")}
    out["aptp_share"] = [r["results"]["aptp"]["share"] for r in runs]
    return out


def against(new: dict, old: dict) -> dict:
    """Paired per-prompt differences of ``new``'s fine-tuned rows minus ``old``'s (same eval prompts and noise)."""
    ok = [r["results"]["base"].get("ok") for r in (new, old)]
    if None in ok:
        raise ValueError("--against: a run without per-prompt results (ok)")
    if eval_seed(new["args"]) != eval_seed(old["args"]) or ok[0] != ok[1]:
        raise ValueError("--against: the runs do not share eval prompts and noise (unpruned rows differ)")
    out = {}
    for fam in FAMILIES:
        rows = {m: {w: family_ok(r, m, fam) for w, r in (("new", new), ("old", old))} for m in ("aptp", "static")}
        gap = {w: [a - s for a, s in zip(rows["aptp"][w], rows["static"][w])] for w in ("new", "old")}
        out[fam] = {**{m: paired_difference(v["new"], v["old"]) for m, v in rows.items()},
                    "aptp_minus_static": paired_difference(gap["new"], gap["old"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--against", type=Path, help="an earlier run on the same eval prompts to compare with (new - old)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from prunekit import InputError, atomic_write_text

    try:
        runs = [json.loads(p.read_text()) for p in a.runs]
        pooled = pool(runs)
        if a.against:
            old = json.loads(a.against.read_text())
            pooled["against"] = {"run": str(a.against), "per_run": [against(r, old) for r in runs]}
    except KeyError as e:
        raise SystemExit(f"error: {InputError(f'a run lacks the field {e} (written before per-prompt results?)')}") from None
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {InputError(str(e))}") from None
    atomic_write_text(a.out, json.dumps({"benchmark": "aptp_seeds", "inputs": [str(p) for p in a.runs], **pooled},
                                        indent=1) + "\n")
    print(json.dumps(pooled["families"]["all"]), "->", a.out)


if __name__ == "__main__":
    main()
