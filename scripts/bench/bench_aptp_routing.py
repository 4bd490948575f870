#!/usr/bin/env python
"""APTP routing overhead: a separate MiniLM pass for the router vs one text-encoder pass shared with the pipeline.

The MNIST-canvas pipeline (``scripts/aptp_pipeline.py``) conditions its UNet on all-MiniLM-L6-v2 token
states, and the router embeds prompts with the same model (mean pooling). ``AptpPipeline(condition=...)``
runs that encoder once: the router reads the pooled embedding, each expert its prompts' token states.
Both modes run the cached K-code bundle of ``bench_aptp.py`` (experts as exported, before fine-tuning)
on the same prompts and seeds in one process; the routes and images must agree. Route fraction =
router CPU time / (encode + route + generate) CPU time, one thread.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/bench_aptp_routing.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_aptp import ROOT, T, eval_prompts, load_base  # noqa: E402


def run(pipe, prompts, seeds, steps, chunk) -> tuple[torch.Tensor, list[int], dict]:
    imgs, codes, t = [], [], {"encode_cpu_s": 0.0, "route_cpu_s": 0.0, "generate_cpu_s": 0.0}
    for s in range(0, len(prompts), chunk):
        gens = [torch.Generator().manual_seed(k) for k in seeds[s : s + chunk]]
        imgs.append(pipe(prompt=prompts[s : s + chunk], generator=gens, num_inference_steps=steps).images)
        codes += pipe.last_timing["codes"]
        for k in t:
            t[k] += pipe.last_timing[k]
    total = sum(t.values())
    return torch.cat(imgs), codes, {**t, "pipeline_cpu_s": total, "route_fraction": t["route_cpu_s"] / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="aptp_k4_p0.6_s200", help="folder under .cache/aptp_mnist")
    ap.add_argument("--n-eval", type=int, default=40, help="prompts per family")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=24, help="prompts per pipeline call")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "aptp_routing.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from prunekit import atomic_write_text, machine_info
    from prunekit_diffusion.aptp.bundle import load_bundle
    from prunekit_diffusion.aptp.pipeline import AptpPipeline
    from prunekit_diffusion.aptp.text import PromptEncoder

    folder = T.CACHE / a.bundle
    if not (folder / "aptp.json").exists():
        raise SystemExit(f"no APTP bundle at {folder}: run scripts/bench/bench_aptp.py first")
    unet = load_base()
    bundle = load_bundle(folder, unet)
    table = T.load_prompts()
    ids = eval_prompts(table, a.n_eval, 1)
    prompts = [table["rows"][i]["text"] for i in ids]
    seeds = [10_000 + i for i in range(len(ids))]
    base = T.make_pipeline(unet)
    base.set_progress_bar_config(disable=True)
    enc = PromptEncoder()

    def condition(ps):
        hidden, mask = enc.tokens(ps, pad_to=16)  # what the pipeline conditions on
        return enc.pool(hidden, mask), {"prompt_embeds": hidden}

    with torch.no_grad():
        sep_img, sep_codes, sep = run(AptpPipeline(base, bundle, enc.embed), prompts, seeds, a.sample_steps, a.chunk)
        sh_img, sh_codes, sh = run(AptpPipeline(base, bundle, condition=condition), prompts, seeds, a.sample_steps, a.chunk)
    agree = sum(x == y for x, y in zip(sep_codes, sh_codes)) / len(prompts)
    same = [i for i in range(len(prompts)) if sep_codes[i] == sh_codes[i]]
    res = {"separate_encoder": sep, "shared_encoder": sh, "route_agreement": agree,
           "max_image_diff_same_route": float((sep_img[same] - sh_img[same]).abs().max()) if same else None,
           "routing_under_2pct": {"separate": sep["route_fraction"] < 0.02, "shared": sh["route_fraction"] < 0.02}}
    out = {"benchmark": "aptp_routing", "machine_info": machine_info(), "args": {k: str(v) for k, v in vars(a).items()},
           "prompts": len(prompts), "results": res}
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(res, indent=1), "->", a.out)


if __name__ == "__main__":
    main()
