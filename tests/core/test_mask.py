import pytest
import torch

from prunekit import InputError, Mask


def make():
    return Mask({"a": torch.tensor([True, False, True]), "b": torch.tensor([False, False])})


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip(tmp_path, suffix):
    m = make()
    p = tmp_path / f"m{suffix}"
    m.save(p)
    back = Mask.load(p)
    assert back == m
    assert list(back.groups) == ["a", "b"]
    assert back["a"].dtype == torch.bool


def test_combine_and_count():
    m = make()
    other = Mask({"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False])})
    assert (m & other).kept() == {"a": 1, "b": 0}
    assert (m | other).kept() == {"a": 3, "b": 1}
    assert (~m).kept() == {"a": 1, "b": 2}
    assert m.total_kept == 2 and m.total == 5
    assert m.kept_fraction == pytest.approx(0.4)
    assert "a: 2/3 kept" in m.summary()


def test_mismatched_masks_refuse_to_combine():
    with pytest.raises(ValueError):
        make() & Mask({"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError):
        make() & Mask({"a": torch.ones(2, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)})


def test_load_bad_file_is_input_error(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="bad.safetensors"):
        Mask.load(p)
    with pytest.raises(InputError, match="no such file"):
        Mask.load(tmp_path / "missing.npz")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"old content")
    with pytest.raises(RuntimeError):
        make().save(p)
    assert p.read_bytes() == b"old content"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.safetensors"]
