"""scripts/bench/bench_cropr.py helpers: matched-throughput interpolation, module reuse by block."""

import importlib.util
from pathlib import Path

import pytest
import torch

from prunekit.errors import UsageError
from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.config import CroprConfig

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench" / "bench_cropr.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cropr", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_interpolate_on_upper_envelope(bench):
    pts = [(1.19, 0.72), (1.34, 0.72), (1.40, 0.66), (1.57, 0.68)]  # (1.40, 0.66) is dominated
    assert bench.interpolate(pts, 1.34) == pytest.approx(0.72)
    assert bench.interpolate(pts, 1.455) == pytest.approx(0.70)
    assert bench.interpolate(pts, 1.2) == pytest.approx(0.72)  # a faster point is as good
    assert bench.interpolate(pts, 1.6) is None and bench.interpolate(pts, 1.0) is None
    assert bench.interpolate([(1.0, 0.5), (2.0, 0.7)], 1.5) == pytest.approx(0.7)


def test_modules_by_block_reuses_trained_weights(bench, vit_cls, images):
    trained = CroprConfig(prune_counts=(3, 2, 1), prune_after=(0, 1, 2))
    red = attach_cropr(vit_cls, trained)
    with torch.no_grad():
        for i, m in enumerate(red.cropr):
            m.queries.fill_(float(i + 1))
    state = red.state_dict()
    red.remove()
    wanted = CroprConfig(prune_counts=(4, 4), prune_after=(1, 2))
    sub = attach_cropr(vit_cls, wanted)
    sub.load_state_dict(bench.modules_by_block(trained, wanted, state, 4))
    assert sub.cropr[0].queries.eq(2.0).all() and sub.cropr[1].queries.eq(3.0).all()
    vit_cls(pixel_values=images)
    assert sub.token_counts == [17, 17, 13, 9]
    sub.remove()
    with pytest.raises(UsageError, match="after block 0"):
        bench.modules_by_block(CroprConfig(prune_counts=(2,), prune_after=(1,)), trained, state, 4)


def test_fine_tuned_baselines_run_on_their_own_weights(bench, vit_cls, images, tmp_path):
    """``own_models``: random-ft is timed and scored on its own model, random on Cropr's weights."""
    from types import SimpleNamespace

    from transformers import ViTForImageClassification

    from prunekit_tokens.attach import attach_random
    from prunekit_tokens.experiment import ModelSpec
    from prunekit_tokens.persist import save_pretrained
    from .conftest import tiny_config

    red = attach_cropr(vit_cls, CroprConfig(prune_counts=(3, 2), prune_after=(1, 2)))
    save_pretrained(vit_cls, red, tmp_path / "cropr")
    red.remove()
    torch.manual_seed(1)
    other = ViTForImageClassification(tiny_config()).eval()
    fwd = lambda mdl: (lambda xb: mdl(pixel_values=xb).logits)  # noqa: E731
    score = lambda fn: float(fn(images).detach().sum())  # noqa: E731  # tells the weights apart
    args = SimpleNamespace(batch=3, reps=1)
    rows, _ = bench.run_task("cls", None, fwd, score, tmp_path / "cropr", ["s3-2-a1-2"], [],
                             ["unpruned", "random", "random-ft"], False, images.numpy(), args,
                             ModelSpec.from_config(vit_cls.config), own_models={"random-ft": other})
    by = {r["method"]: r for r in rows}
    with torch.no_grad():
        direct = attach_random(other, [(1, 3), (2, 2)], seed=0)
        expected = score(fwd(other))
        direct.remove()
    assert by["random-ft"]["quality"] == pytest.approx(expected)
    assert by["random"]["quality"] != pytest.approx(expected)
    assert by["random-ft"]["token_counts"] == by["random"]["token_counts"] == [17, 17, 14, 12]
