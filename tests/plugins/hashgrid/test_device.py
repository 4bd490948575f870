"""--device on the standalone trainer and the benchmark: the CPU default, and CUDA (asked for; present or not)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from prunekit import UsageError
from prunekit_hashgrid.data import split, synthetic_views
from prunekit_hashgrid.train import TrainConfig, evaluate, resolve_device, train

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--res", "12", "--steps", "12", "--batch-rays", "64", "--samples", "8", "--levels", "2", "--max-res", "16",
        "--log2-table", "8", "--saliency-res", "8", "--threads", "1"]
HAS_CUDA = torch.cuda.is_available()


def _script(rel):
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trainer():
    return _script("scripts/train_hashgrid.py")


@pytest.fixture(scope="module")
def bench():
    return _script("scripts/bench/bench_hollownerf.py")


@pytest.fixture(scope="module")
def gpu_check():
    return _script("scripts/bench/hollownerf_gpu_check.py")


def test_explicit_cpu_gives_the_default_numbers(trainer, tmp_path, capsys):
    outs = []
    for i, extra in enumerate([[], ["--device", "cpu"]]):
        assert trainer.main([*TINY, *extra, "--json", "-o", str(tmp_path / f"m{i}.safetensors")]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0]["device"] == "cpu" and outs[1]["device"] == "cpu"
    assert outs[0]["psnr_heldout"] == outs[1]["psnr_heldout"] and outs[0]["sizes"] == outs[1]["sizes"]


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("which", ["trainer", "bench", "gpu_check"])
def test_cuda_without_cuda_is_one_line_and_writes_nothing(which, request, tmp_path, capsys):
    mod = request.getfixturevalue(which)
    out = tmp_path / ("m.safetensors" if which == "trainer" else "b.json")
    args = {"trainer": [*TINY, "--device", "cuda"], "bench": ["--device", "cuda"], "gpu_check": []}[which]
    assert mod.main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda' asked for") and err.count("\n") == 1
    assert not out.exists()


def test_bad_device_name_is_a_usage_error():
    with pytest.raises(UsageError, match="'cpu' or 'cuda'"):
        resolve_device("tpu")
    with pytest.raises(UsageError):
        TrainConfig(device="gpu0")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["dense", "hollow", "occgrid"])
def test_cuda_trains_all_modes_on_the_gpu(mode):
    """Same model and data on CUDA: everything lives on the GPU and the result is in the CPU's range
    (the random streams differ between devices, so the numbers are not identical)."""
    tr, te = split(synthetic_views(n_views=16, res=16))
    grid = dict(num_levels=4, min_res=8, max_res=48, log2_hashmap_size=11, features_per_level=2)
    res = {}
    for dev in ("cpu", "cuda"):
        cfg = TrainConfig(mode=mode, steps=100, batch_rays=128, samples=16, grid=grid, hidden=32, saliency_res=16,
                          saliency_target=0.25, occ_res=16, device=dev)
        r = train(tr, cfg)
        assert all(p.device.type == dev for p in r.field.parameters())
        res[dev] = evaluate(r.field, te, 16, r.keep_fn())["psnr"]
    assert abs(res["cuda"] - res["cpu"]) < 1.5, res


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA"))])
def test_bench_writes_json_with_reachable_dense_rows(bench, device, tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["--res", "16", "--views", "16", "--steps", "30", "--batch-rays", "128", "--samples", "8", "--levels", "4",
            "--max-res", "64", "--log2-table", "12", "--saliency-res", "8", "--fractions", "0.5", "--threads", "1",
            "--only", "dense,hollow@0.5", "--train-eval-views", "3", "--device", device, "-o", str(out)]
    assert bench.main(args) == 0
    d = json.loads(out.read_text())
    assert d["inputs"]["device"] == device and ("gpu" in d["machine"]) == (device == "cuda")
    assert set(d["runs"]) == {"dense", "hollow@0.5"} and d["runs"]["hollow@0.5"]["compaction"]["rows_kept"] > 0
    dense = d["runs"]["dense"]
    # level 0 (resolution 16) has 17^3 = 4913 vertices for 4096 rows: the hash reaches only some of the rows
    assert 0 < dense["reachable_hash_params"] < dense["sizes"]["hash_params"]
    s = d["summary"]["hollow@0.5"]
    assert s["hash_param_fraction_of_dense_reachable"] == pytest.approx(
        s["hash_param_fraction"] * dense["sizes"]["hash_params"] / dense["reachable_hash_params"])
    assert set(d["targets_vs_dense_reachable"]) == set(d["targets"])


@pytest.mark.parametrize("mode", ["hollow", "occgrid"])
def test_no_tensor_is_made_on_the_default_device(mode, monkeypatch):
    """The CUDA path checked without a GPU: with torch's default device set to "meta" and the field built on
    the CPU, any tensor the trainer, renderer, occupancy grid or evaluation creates without an explicit device
    is a meta tensor, and mixing it with the real (CPU) tensors raises. (The core's ``select`` works on CPU
    copies of the logits by design, so it runs on the CPU here.)"""
    import prunekit_hashgrid.train as T
    from prunekit_hashgrid.compact import compact_field

    build, enforce = T.build_field, T.enforce_budget

    def on_cpu(fn):
        def call(*args):
            with torch.device("cpu"):
                return fn(*args)
        return call

    monkeypatch.setattr(T, "build_field", on_cpu(build))
    monkeypatch.setattr(T, "enforce_budget", on_cpu(enforce))
    tr, te = split(synthetic_views(n_views=16, res=12))
    grid = dict(num_levels=2, min_res=8, max_res=16, log2_hashmap_size=8, features_per_level=2)
    cfg = TrainConfig(mode=mode, steps=60, batch_rays=64, samples=8, grid=grid, hidden=16, saliency_res=8,
                      saliency_target=0.3, occ_res=8, dilate=1, threads=1)
    torch.set_default_device("meta")
    try:
        r = T.train(tr, cfg)
        psnr = evaluate(r.field, te, 8, r.keep_fn())["psnr"]
        if mode == "hollow":
            fld = on_cpu(compact_field)(r.field)[0]
            assert evaluate(fld, te, 8, fld.saliency.keep_fn())["psnr"] == pytest.approx(psnr, abs=1e-4)
    finally:
        torch.set_default_device(None)
    assert psnr > 8.0
