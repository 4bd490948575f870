"""scripts/bench/aptp_seeds.py: pooling training seeds of the APTP benchmark (paired differences)."""

import pytest

from .conftest import load_script

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def seeds():
    return load_script("bench/aptp_seeds.py")


def _row(ok: list[int], fd: float = 100.0, cpu: float = 5.0) -> dict:
    return {"ok": ok, "frechet": fd, "generate_cpu_s": cpu}


def _run(seed: int, aptp: list[int], static: list[int]) -> dict:
    """Two prompts per family, in family blocks (single, side, pair)."""
    return {"args": {"seed": str(seed), "eval_seed": "1", "out": f"s{seed}.json", "steps": "600"},
            "eval": {"prompts_per_family": 2, "families": ["single", "side", "pair"]},
            "results": {"base": {"ok": [1, 1, 0, 1, 0, 0], "generate_cpu_s": 10.0},
                        "aptp": {"finetuned": _row(aptp, 90.0), "mean_mac_ratio_eval": 0.6, "share": [0.5, 0.5]},
                        "static": {"finetuned": _row(static, 95.0, 4.0), "mean_mac_ratio_eval": 0.6, "share": [1.0]}}}


def test_paired_differences_per_family_and_pooled(seeds):
    runs = [_run(0, [1, 1, 1, 0, 1, 0], [1, 0, 1, 0, 0, 0]), _run(1, [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0])]
    p = seeds.pool(runs)
    single, pair, all_ = p["families"]["single"], p["families"]["pair"], p["families"]["all"]
    assert single["diff_per_run"] == [0.5, 0.0] and single["acc"]["aptp"]["per_run"] == [1.0, 1.0]
    assert single["se_per_run"][0] == pytest.approx(0.5)  # d = (0, 1): std 0.707 / sqrt(2)
    assert pair["diff_per_run"] == [0.5, 0.0] and pair["diff"] == pytest.approx(0.25)
    assert all_["diff_per_run"] == pytest.approx([2 / 6, 0.0])
    assert all_["se_seeds"] == pytest.approx(abs(2 / 6) / 2)  # sd of two values / sqrt(2) = |a - b| / 2
    assert all_["se_paired"] == pytest.approx((all_["se_per_run"][0] ** 2 + 0.0) ** 0.5 / 2)
    assert p["generate_cpu_ratio"] == {"aptp": [0.5, 0.5], "static": [0.4, 0.4]}


def test_runs_that_do_not_pair_are_refused(seeds):
    other_eval = _run(1, [1] * 6, [0] * 6)
    other_eval["results"]["base"]["ok"] = [0] * 6
    with pytest.raises(ValueError, match="per-prompt"):
        seeds.pool([_run(0, [1] * 6, [0] * 6), other_eval])
    other_steps = _run(1, [1] * 6, [0] * 6)
    other_steps["args"]["steps"] = "200"
    with pytest.raises(ValueError, match="steps"):
        seeds.pool([_run(0, [1] * 6, [0] * 6), other_steps])
    other_prompts = _run(1, [1] * 6, [0] * 6)
    del other_prompts["args"]["eval_seed"]  # default: seed + 1 = 2, not run 0's 1
    with pytest.raises(ValueError, match="eval_seed"):
        seeds.pool([_run(0, [1] * 6, [0] * 6), other_prompts])
    other_prompts["args"]["eval_seed"] = "1"
    assert seeds.pool([_run(0, [1] * 6, [0] * 6), other_prompts])["seeds"] == [0, 1]


def test_against_an_earlier_run_is_paired_per_prompt(seeds):
    old, new = _run(0, [1, 0, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]), _run(0, [1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 0, 0])
    c = seeds.against(new, old)
    assert c["pair"]["aptp"]["diff"] == 1.0 and c["pair"]["static"]["diff"] == 0.0
    assert c["single"]["aptp_minus_static"]["diff"] == pytest.approx(0.5)  # gaps (0, 0) new vs (0, -1) old
    assert c["all"]["aptp"]["diff"] == pytest.approx(3 / 6) and c["all"]["aptp"]["n"] == 6
    assert c["all"]["aptp_minus_static"]["diff"] == pytest.approx((3 - -1) / 6)
    other = _run(0, [1] * 6, [0] * 6)
    other["results"]["base"]["ok"] = [0] * 6
    with pytest.raises(ValueError, match="unpruned"):
        seeds.against(other, old)
    del other["results"]["base"]["ok"]
    with pytest.raises(ValueError, match="without per-prompt"):
        seeds.against(other, old)
