"""Regenerate the benchmark tables in README.md from bench-out/*.json.

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-out"


def _cell(sub: list[dict], method: str, merge: bool, distill: int, keep: float) -> float | None:
    hit = [r for r in sub if (r["method"], r["merge"], r["distill"], r["keep"]) == (method, merge, distill, keep)]
    return hit[0]["psnr"] if hit else None


def _targets(sub: list[dict], keeps: list[float]) -> list[str]:
    """The issue's targets, checked from the rows (each a line; nothing where data is missing)."""
    out = []
    beats = []
    for k in keeps:
        base = [_cell(sub, m, False, 0, k) for m in ("opacity", "random")]
        ours = [_cell(sub, m, False, 0, k) for m in ("radsplat", "lightgaussian")]
        if None not in base + ours:
            beats.append(f"{k:g}: {'yes' if min(ours) > max(base) else 'no'}")
    if beats:
        out.append("radsplat and lightgaussian (no merge) beat opacity and random — " + ", ".join(beats))
    dec = "splat-transform-decimate"
    for k in (0.1, 0.3):
        d0, dd = _cell(sub, dec, False, 0, k), [r for r in sub if r["method"] == dec and r["distill"] and r["keep"] == k]
        fast = [r["psnr"] for r in sub if r["merge"] and not r["distill"] and r["keep"] == k]
        qual = [r for r in sub if r["merge"] and r["distill"] and r["keep"] == k]
        if d0 is not None and fast:
            out.append(f"keep {k:g}: best fast mode {max(fast):.2f} vs decimate {d0:.2f} dB "
                       f"({'met' if max(fast) >= d0 else 'not met'})")
        if d0 is not None and qual:
            q = qual[0]
            line = f"keep {k:g}: quality mode ({q['method']} + distill {q['distill']}) {q['psnr']:.2f} vs decimate + 3 dB " \
                   f"{d0 + 3:.2f} ({'met' if q['psnr'] >= d0 + 3 else 'not met'})"
            if dd:
                line += f"; vs decimate + distill {dd[0]['psnr']:.2f} ({'met' if q['psnr'] >= dd[0]['psnr'] else 'not met'})"
            out.append(line)
    return out


def quality_table(files: list[dict]) -> str:
    lines = []
    for d in files:
        sub = d["rows"]
        if not sub:
            continue
        keeps = sorted({r["keep"] for r in sub})
        a = d["args"]
        size = f" ({d['gaussians']:,} Gaussians)" if d.get("gaussians") else ""
        views = d.get("views") or (f"synthesised over the sphere, {a['views']} scoring / {a['eval_views']} evaluation "
                                   f"views at {a['resolution']} px")
        lines.append(f"**{d['scene']}**{size} — PSNR (dB) vs the original's renders on held-out views: {views}; "
                     f"distillation {a['distill']} steps")
        tr = d.get("training")
        if tr:
            lines.append(f"(scene trained by `scripts/train_scene.py`: {tr['steps_done']} steps at "
                         f"{tr['resolution'][0]}x{tr['resolution'][1]} in {tr['train_seconds'] / 60:.0f} min; "
                         f"held-out PSNR against the real photos {tr['test_psnr_mean']:.2f} dB)")
        lines.append("")
        lines.append("| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |")
        lines.append("|---|" + "---|" * len(keeps))
        for (m, merge, dist) in dict.fromkeys((r["method"], r["merge"], r["distill"]) for r in sub):
            name = m + (" + merge" if merge and "merge" not in m else "") + (f" + distill {dist}" if dist else "")
            cells = [_cell(sub, m, merge, dist, k) for k in keeps]
            lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.2f}" for c in cells) + " |")
        lines.append("")
        lines += [f"- {t}" for t in _targets(sub, keeps)]
        lines.append(f"\nMachine: {d['machine']['processor']}, {d['machine']['cpus']} CPUs, torch "
                     f"{d['machine'].get('torch')}; peer: {d.get('splat_transform')}; {d['date']}. "
                     f"Source: `bench-out/quality_{d['scene']}.json`.")
        lines.append("")
    return "\n".join(lines).rstrip()


def speed_table(d: dict) -> str:
    nan = float("nan")
    lines = ["| Gaussians | file MB | read MB/s | write MB/s | prune sundae s (CPU s) | peak RSS / file "
             "| prune opacity s (CPU s) | splat-transform decimate s (CPU s) |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['gaussians']:,} | {r['file_mb']:.0f} | {r['read_mb_s']:.0f} | {r['write_mb_s']:.0f} | "
                     f"{r.get('prune_sundae_s', nan):.2f} ({r.get('prune_sundae_cpu_s', nan):.2f}) | "
                     f"{r.get('prune_sundae_peak_over_file', nan):.2f} | "
                     f"{r.get('prune_opacity_s', nan):.2f} ({r.get('prune_opacity_cpu_s', nan):.2f}) | "
                     f"{r.get('splat_transform_decimate_s', nan):.2f} ({r.get('splat_transform_decimate_cpu_s', nan):.2f}) |")
    lines.append(f"\nMachine: {d['machine']['processor']}, {d['machine']['cpus']} CPUs; {d['date']}. "
                 "Source: `bench-out/speed.json`.")
    return "\n".join(lines)


TABLES = {"quality": quality_table, "speed": speed_table}


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, fn in TABLES.items():
        if name == "quality":  # one file per scene
            files = [json.loads(p.read_text()) for p in sorted(OUT.glob("quality_*.json"))]
            order = {"donut": 0, "cow": 1, "fox": 2}
            files.sort(key=lambda d: order.get(d.get("scene"), 9))
            if not files:
                continue
            table = fn(files)
        else:
            path = OUT / f"{name}.json"
            if not path.exists():
                continue
            table = fn(json.loads(path.read_text()))
        pat = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        readme = pat.sub(lambda m: m.group(1) + table + m.group(2), readme)
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
