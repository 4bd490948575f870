"""Views are synthesised only when a scorer uses them; a given --cameras file is read at once."""

import pytest
import torch

from prunekit.errors import InputError
from prunekit_splat import target as target_mod
from prunekit_splat.context import LazyViews
from prunekit_splat.scene import GaussianScene
from prunekit_splat.target import SPLAT_FILES, SplatPruneOptions


def scene(n: int = 200) -> GaussianScene:
    g = torch.Generator().manual_seed(0)
    return GaussianScene(torch.randn(n, 3, generator=g), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                         torch.full((n, 3), -3.0), torch.zeros(n), torch.zeros(n, 3), torch.zeros(n, 0, 3))


def test_lazy_views_are_made_once_on_first_use():
    calls = []
    views = LazyViews(lambda: calls.append(1) or ["a", "b", "c"])
    assert calls == []
    assert len(views) == 3 and views[1] == "b" and list(views) == ["a", "b", "c"] and views[:2] == ["a", "b"]
    assert calls == [1]


def test_context_synthesises_views_only_when_used(monkeypatch):
    calls = []
    real = target_mod._cameras
    monkeypatch.setattr(target_mod, "_cameras", lambda *a: calls.append(1) or real(*a))
    s = scene()
    ctx = SPLAT_FILES.context(s, SplatPruneOptions(views=3, resolution=16, progress=False), "x.ply")
    assert calls == []  # a view-free scorer (sundae, opacity) never pays for view synthesis
    assert len(ctx.cameras) == 3 and calls == [1]


def test_bad_cameras_file_fails_when_the_context_is_made(tmp_path):
    bad = tmp_path / "cameras.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cameras.json"):
        SPLAT_FILES.context(scene(), SplatPruneOptions(cameras=str(bad), progress=False), "x.ply")
