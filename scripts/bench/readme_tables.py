"""Regenerate the benchmark tables in README.md from bench-out/*.json.

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-out"


def quality_table(d: dict) -> str:
    rows = d["rows"]
    lines = []
    for scene in dict.fromkeys(r["scene"] for r in rows):
        sub = [r for r in rows if r["scene"] == scene]
        keeps = sorted({r["keep"] for r in sub})
        lines.append(f"**{scene}** — PSNR (dB) vs the original's renders on held-out views; "
                     f"{d['args']['eval_views']} views at {d['args']['resolution']} px")
        lines.append("")
        lines.append("| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |")
        lines.append("|---|" + "---|" * len(keeps))
        labels = dict.fromkeys((r["method"], r["merge"], r["distill"]) for r in sub)
        for (m, merge, dist) in labels:
            name = m + (" + merge" if merge and "merge" not in m else "") + (f" + distill {dist}" if dist else "")
            cells = []
            for k in keeps:
                hit = [r for r in sub if (r["method"], r["merge"], r["distill"], r["keep"]) == (m, merge, dist, k)]
                cells.append(f"{hit[0]['psnr']:.2f}" if hit else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Machine: {d['machine']['processor']}, {d['machine']['cpus']} CPUs, torch {d['machine'].get('torch')}; "
                 f"peer: splat-transform {d.get('splat_transform')}; {d['date']}. Source: `bench-out/quality.json`.")
    return "\n".join(lines)


def speed_table(d: dict) -> str:
    lines = ["| Gaussians | file MB | read MB/s | write MB/s | prune sundae s | peak RSS / file | prune opacity s "
             "| splat-transform decimate s |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['gaussians']:,} | {r['file_mb']:.0f} | {r['read_mb_s']:.0f} | {r['write_mb_s']:.0f} | "
                     f"{r.get('prune_sundae_s', float('nan')):.2f} | {r.get('prune_sundae_peak_over_file', float('nan')):.2f} | "
                     f"{r.get('prune_opacity_s', float('nan')):.2f} | {r.get('splat_transform_decimate_s', float('nan')):.2f} |")
    lines.append(f"\nMachine: {d['machine']['processor']}, {d['machine']['cpus']} CPUs; {d['date']}. "
                 "Source: `bench-out/speed.json`.")
    return "\n".join(lines)


TABLES = {"quality": quality_table, "speed": speed_table}


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, fn in TABLES.items():
        path = OUT / f"{name}.json"
        if not path.exists():
            continue
        table = fn(json.loads(path.read_text()))
        pat = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        readme = pat.sub(lambda m: m.group(1) + table + m.group(2), readme)
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
