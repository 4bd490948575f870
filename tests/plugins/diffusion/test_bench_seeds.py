"""scripts/bench/ldpruner_seeds.py: pooling replicate benchmark runs (means, standard errors, targets)."""

import json

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def seeds():
    return load_script("bench/ldpruner_seeds.py")


def _q(correct: str, fd: float) -> dict:
    return {"accuracy": correct.count("1") / len(correct), "frechet": fd, "correct": correct}


def _pruned(correct: str, fd: float, macs=0.63, lat=0.6) -> dict:
    return {"mac_ratio": macs, "latency_ratio": lat, "quality": _q("0000", 900.0), "finetune": {"quality": _q(correct, fd)}}


def _run(seed: int, ld: str, mag: str, rb: list[str]) -> dict:
    pruned = {"ld-pruner-block": _pruned(ld, 40.0), "magnitude": _pruned(mag, 50.0, lat=0.85)}
    pruned.update({f"random-block-{seed + i}": _pruned(c, 60.0) for i, c in enumerate(rb)})
    return {"inputs": {"seed": seed, "eval_n": 4, "ft_steps": 900, "keep": 0.65},
            "models": {"unet": {"unpruned": {"quality": _q("1111", 20.0), "finetune_control": {"quality": _q("1110", 25.0)}},
                                "pruned": pruned}}}


def test_pool_means_standard_errors_and_targets(seeds):
    runs = [_run(0, "1110", "1100", ["1000", "0000"]), _run(1, "1111", "1101", ["1100", "1000"])]
    p = seeds.pool(runs, "unet")
    ld, rb = p["groups"]["ld-pruner-block"], p["groups"]["random-block"]
    assert ld["accuracy"] == [0.75, 1.0] and ld["mean"] == pytest.approx(0.875)
    assert ld["se_seeds"] == pytest.approx(0.125)  # sd of (0.75, 1.0) / sqrt(2)
    assert ld["se_binomial"] == pytest.approx((0.75 * 0.25 / 4) ** 0.5 / 2)
    assert rb["draws_per_run"] == [2, 2] and rb["accuracy"] == [0.125, 0.375]  # draws averaged within a run
    c = p["comparisons"]["ld-pruner-block vs magnitude"]
    assert c["per_run"] == pytest.approx([0.25, 0.25]) and c["se_seeds"] == 0.0
    # per-digit differences: run 0 (0,0,1,0), run 1 (0,0,1,0): variance 3/16 over 4 digits each
    assert c["se_paired"] == pytest.approx((2 * 3 / 16 / 4) ** 0.5 / 2)
    assert c["clear"] is False  # 0.25 < 2 x 0.153
    t = p["targets"]["ld-pruner-block"]
    assert t["accuracy_needed"] == pytest.approx(0.95) and not t["accuracy_within_5pct_of_unpruned"]
    assert t["accuracy_within_5pct_of_control"]  # 0.875 >= 0.95 x 0.75
    assert t["beats_baselines_accuracy"] and t["beats_baselines_frechet"] and t["latency_cut_30pct"]


def test_cli_refuses_runs_of_different_settings(seeds, tmp_path):
    a, b = _run(0, "1110", "1100", ["1000"]), _run(1, "1111", "1101", ["1100"])
    b["inputs"]["ft_steps"] = 300
    for name, r in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(r))
    with pytest.raises(SystemExit, match="differ in 'ft_steps'"):
        seeds.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "p.json")])
    assert not (tmp_path / "p.json").exists()
    b["inputs"]["ft_steps"] = 900
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert seeds.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["models"]["unet"]["runs"] == 2


def test_group_names(seeds):
    assert [seeds.group_of(n) for n in ("random-3", "random-block-1", "random-sublayer-0", "ld-pruner-sublayer")] == [
        "random", "random-block", "random-sublayer", "ld-pruner-sublayer"]


def test_merge_files_of_one_seed(seeds, tmp_path):
    """``NEW+OLD``: a new variant's run joins an earlier run of the same evaluation; rows pair per digit;
    a file whose unpruned model scored other digits is refused."""
    files = []
    for seed, (sub, rs) in enumerate((("1111", "1000"), ("1101", "1100"))):
        old = _run(seed, "1110", "1100", ["1000"])
        new = _run(seed, "0000", "1100", [])
        new["models"]["unet"]["pruned"] = {"ld-pruner-sublayer": _pruned(sub, 30.0), "random-sublayer-0": _pruned(rs, 70.0),
                                           "magnitude": _pruned("1100", 50.0, lat=0.85)}
        del new["models"]["unet"]["unpruned"]["finetune_control"]
        for name, r in (("new", new), ("old", old)):
            (tmp_path / f"{name}{seed}.json").write_text(json.dumps(r))
        files.append(f"{tmp_path / f'new{seed}.json'}+{tmp_path / f'old{seed}.json'}")
    out = tmp_path / "p.json"
    assert seeds.main([*files, "--out", str(out)]) == 0
    p = json.loads(out.read_text())["models"]["unet"]
    assert set(p["groups"]) == {"unpruned", "control", "ld-pruner-sublayer", "random-sublayer", "ld-pruner-block",
                                "magnitude", "random-block"}
    c = p["comparisons"]["ld-pruner-sublayer vs random-block"]
    assert c["per_run"] == pytest.approx([0.75, 0.5])  # 1.0 - 0.25, 0.75 - 0.25
    assert p["groups"]["control"]["accuracy"] == [0.75, 0.75]  # from the earlier runs
    bad = _run(0, "1110", "1100", ["1000"])
    bad["models"]["unet"]["unpruned"]["quality"] = _q("1011", 20.0)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="not the same evaluation"):
        seeds.main([f"{tmp_path / 'new0.json'}+{tmp_path / 'bad.json'}", "--out", str(tmp_path / "q.json")])
    assert not (tmp_path / "q.json").exists()


def test_magnitude_at_other_budget_is_compared_but_not_a_target_baseline(seeds):
    """``magnitude@K`` rows (magnitude at LD-Pruner's latency) get a comparison; the targets stay at equal MACs."""
    runs = []
    for seed in (0, 1):
        r = _run(seed, "1110", "1000", ["1000"])
        r["models"]["unet"]["pruned"]["magnitude@0.5"] = _pruned("1111", 30.0, macs=0.5, lat=0.6)
        runs.append(r)
    p = seeds.pool(runs, "unet")
    c = p["comparisons"]["ld-pruner-block vs magnitude@0.5"]
    assert c["per_run"] == pytest.approx([-0.25, -0.25])
    assert p["groups"]["magnitude@0.5"]["mac_ratio"] == 0.5
    t = p["targets"]["ld-pruner-block"]
    assert t["beats_baselines_accuracy"] and t["beats_baselines_frechet"]  # magnitude@0.5 would fail both


def test_frechet_differences_per_run_and_clear(seeds):
    """FD ``a - b`` per run with its across-run SE; ``clear`` only when the mean is below -2 SE (lower is better)."""
    runs = [_run(0, "1110", "1100", ["1000"]), _run(1, "1111", "1101", ["1100"])]
    c = seeds.pool(runs, "unet")["comparisons"]["ld-pruner-block vs magnitude"]["frechet"]
    assert c["per_run"] == [-10.0, -10.0] and c["se_seeds"] == 0.0 and c["clear"] is True
    runs[1]["models"]["unet"]["pruned"]["magnitude"]["finetune"]["quality"]["frechet"] = 42.0
    p = seeds.pool(runs, "unet")
    c = p["comparisons"]["ld-pruner-block vs magnitude"]["frechet"]
    assert c["per_run"] == [-10.0, -2.0] and c["mean"] == -6.0 and c["se_seeds"] == pytest.approx(4.0)
    assert c["clear"] is False  # -6 > -2 x 4
    assert p["targets"]["ld-pruner-block"]["beats_baselines_frechet"]
    assert not p["targets"]["ld-pruner-block"]["beats_baselines_frechet_clear"]
