import pytest

from prunekit import Schedule


def test_one_shot():
    s = Schedule.one_shot(8000, 0.1)
    assert s.keep_at(7999) == 1.0 and s.keep_at(8000) == 0.1 and s.keep_at(10**6) == 0.1
    assert s.is_prune_step(8000) and not s.is_prune_step(8001)
    assert s.step_keep(8000) == pytest.approx(0.1)


def test_cubic_matches_zhu_gupta_formula():
    s = Schedule.cubic(start=0, end=100, every=25, final_keep=0.2)
    assert s.steps == (0, 25, 50, 75, 100)
    # sparsity s_t = s_f * (1 - (1 - t/T)^3) with s_i = 0, s_f = 0.8
    for t in s.steps:
        expected = 1 - 0.8 * (1 - (1 - t / 100) ** 3)
        assert s.keep_at(t) == pytest.approx(expected)
    assert s.keep_at(50) == pytest.approx(1 - 0.8 * 0.875)
    # keep fractions never increase and per-step factors multiply to the final keep
    prod = 1.0
    for t in s.steps:
        prod *= s.step_keep(t)
    assert prod == pytest.approx(0.2)
    assert list(s.keeps) == sorted(s.keeps, reverse=True)


def test_cubic_appends_end_step():
    s = Schedule.cubic(10, 35, 10, final_keep=0.5)
    assert s.steps == (10, 20, 30, 35) and s.keep_at(35) == 0.5


def test_decay_rounds_like_lightgaussian():
    s = Schedule.decay([16000, 24000], fraction=0.5, decay=0.8)
    assert s.keep_at(16000) == pytest.approx(0.5)
    assert s.keep_at(24000) == pytest.approx(0.5 * (1 - 0.4))
    assert s.step_keep(24000) == pytest.approx(0.6)


@pytest.mark.parametrize("make", [lambda: Schedule.one_shot(0, 0.0), lambda: Schedule.cubic(5, 5, 1, 0.5),
                                  lambda: Schedule.decay([1, 2], 1.5), lambda: Schedule("x", (2, 1), (0.5, 0.4))])
def test_invalid(make):
    with pytest.raises(ValueError):
        make()
