"""scripts/bench/bench_ldpruner.py: the per-model summary and its issue-6 target checks."""

from types import SimpleNamespace

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_ldpruner.py")


def _variant(macs, lat, acc, fd, acc_ft, fd_ft):
    return {"mac_ratio": macs, "param_ratio": macs, "latency_ratio": lat, "quality": {"accuracy": acc, "frechet": fd},
            "finetune": {"quality": {"accuracy": acc_ft, "frechet": fd_ft}}}


def _out(ld_after):
    return {"unpruned": {"quality": {"accuracy": 0.90, "frechet": 30.0},
                         "finetune_control": {"quality": {"accuracy": 0.94, "frechet": 28.0}}},
            "pruned": {"ld-pruner": _variant(0.64, 0.62, 0.60, 80.0, ld_after, 35.0),
                       "random-0": _variant(0.62, 0.60, 0.20, 300.0, 0.70, 60.0),
                       "random-1": _variant(0.66, 0.64, 0.40, 200.0, 0.80, 50.0),
                       "magnitude": _variant(0.65, 0.85, 0.10, 400.0, 0.75, 70.0)}}


def test_summary_means_and_targets(bench):
    a = SimpleNamespace(keep=0.65, eval_n=400)
    s = bench.summarize(_out(0.88), a)
    assert s["random_mean_accuracy_after_ft"] == pytest.approx(0.75)
    assert s["random_mean_mac_ratio"] == pytest.approx(0.64)
    assert s["accuracy_standard_error"] == pytest.approx((0.9 * 0.1 / 400) ** 0.5)
    t = s["targets"]
    assert t["latency_cut_30pct"] and t["beats_baselines_frechet_after_ft"] and t["beats_baselines_accuracy_before_ft"]
    assert t["accuracy_within_5pct_of_unpruned"]  # 0.88 >= 0.95 * 0.90
    assert not t["accuracy_within_5pct_of_unpruned_same_ft"]  # 0.88 < 0.95 * 0.94
    low = bench.summarize(_out(0.74), a)["targets"]
    assert not low["accuracy_within_5pct_of_unpruned"] and not low["beats_baselines_accuracy_after_ft"]


def test_table_has_a_row_per_variant(bench):
    rows = bench.table({"models": {"unet": _out(0.88)}}).splitlines()
    assert len(rows) == 2 + 1 + 4
    assert rows[3] == "| unet | ld-pruner | 0.64 | 0.64 | 0.62 | 0.600 | 80.0 | 0.880 | 35.0 |"


def test_summary_of_ld_variants_without_random_rows(bench):
    out = _out(0.88)
    out["pruned"] = {k: v for k, v in out["pruned"].items() if not k.startswith("random-")}
    out["pruned"]["ld-pruner-iter4"] = _variant(0.63, 0.6, 0.5, 90.0, 0.91, 30.0)
    s = bench.summarize(out, SimpleNamespace(keep=0.65, eval_n=400))
    assert "random_mean_accuracy_after_ft" not in s and s["ld-pruner-iter4_accuracy_after_ft"] == 0.91
    assert s["ld-pruner-iter4_beats_baselines_accuracy_after_ft"]  # 0.91 > magnitude's 0.75
    assert s["ld-pruner-iter4_accuracy_within_5pct_of_unpruned_same_ft"]  # 0.91 >= 0.95 * 0.94
    assert bench.ld_variants("4, 4m,1m,4b") == [(4, False, 0), (4, True, 0), (1, True, 0), (4, False, 1)]
    assert [bench.variant_name(*v) for v in bench.ld_variants("4,4m,1m,1b")] == [
        "ld-pruner-iter4", "ld-pruner-iter4-permac", "ld-pruner-permac", "ld-pruner-block"]


def test_summary_per_recovery_mode_and_random_block_rows(bench):
    out = _out(0.88)
    for v in [*out["pruned"].values(), None]:
        holder = out["unpruned"] if v is None else v
        key = "finetune_control" if v is None else "finetune"
        worse = {"quality": {k: x * 0.5 for k, x in holder[key]["quality"].items()}}
        holder[f"{key}_by_mode"] = {"mixed": holder[key], "denoise": worse}
    out["pruned"]["random-block-0"] = {**_variant(0.64, 0.6, 0.3, 200.0, 0.9, 40.0),
                                       "finetune_by_mode": {"mixed": {"quality": {"accuracy": 0.9, "frechet": 40.0}},
                                                            "denoise": {"quality": {"accuracy": 0.2, "frechet": 9.0}}}}
    out["pruned"]["ld-pruner-block"] = {**_variant(0.64, 0.6, 0.3, 200.0, 0.85, 40.0),
                                        "finetune_by_mode": {"mixed": {"quality": {"accuracy": 0.85, "frechet": 1.0}},
                                                             "denoise": {"quality": {"accuracy": 0.5, "frechet": 1.0}}}}
    a = SimpleNamespace(keep=0.65, eval_n=400)
    mixed = bench.summarize(bench.with_mode(out, "mixed"), a)
    assert mixed["random_mean_accuracy_after_ft"] == pytest.approx(0.75)  # random-block rows are not random seeds
    assert mixed["random_block_mean_accuracy_after_ft"] == 0.9
    assert mixed["ld-pruner-block_beats_baselines_accuracy_after_ft"]  # 0.85 > 0.75 (random), 0.75 (magnitude)
    assert not mixed["ld-pruner-block_beats_random_block_accuracy_after_ft"]  # 0.85 < 0.9
    den = bench.summarize(bench.with_mode(out, "denoise"), a)
    assert den["unpruned_accuracy_after_same_ft"] == pytest.approx(0.47)
    assert den["ld-pruner-block_beats_random_block_accuracy_after_ft"]  # 0.5 > 0.2
    rows = bench.table({"models": {"unet": out}}, "denoise").splitlines()
    assert rows[3] == "| unet | ld-pruner | 0.64 | 0.64 | 0.62 | 0.600 | 80.0 | 0.440 | 17.5 |"


def test_magnitude_keeps_parsing_and_baselines_only_summary(bench):
    assert bench.magnitude_keeps("0.5, 0.55") == [0.5, 0.55] and bench.magnitude_keeps("") == []
    with pytest.raises(SystemExit, match="magnitude-keeps"):
        bench.magnitude_keeps("0.5,1.5")
    out = {"unpruned": {}, "pruned": {"magnitude@0.5": {}}}
    s = bench.summarize(out, SimpleNamespace(keep=0.65, eval_n=400))
    assert "targets" not in s and s["note"] == "no LD-Pruner row in this run"
