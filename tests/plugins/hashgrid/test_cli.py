"""`prunekit prune / info / eval` on hash-grid checkpoints end to end, the trainer script, and bad input."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
# The CLI with the plugin registered in process: works whether or not the editable install's entry-point
# metadata has been refreshed since `hollownerf` was added to pyproject.toml.
CLI = ("import sys, prunekit; from prunekit_hashgrid.plugins import HOLLOWNERF; prunekit.register(HOLLOWNERF); "
       "from prunekit.cli import run; sys.argv[0] = 'prunekit'; run()")
FAST = ["--eval-views", "2", "--resolution", "12", "--samples", "16"]


def cli(*args):
    """The CLI in a fresh process (what a user runs)."""
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))


@pytest.fixture
def cli_here(capsys, monkeypatch):
    """The same CLI entry point run in this process (faster), returning (exit code, stdout, stderr)."""
    import prunekit
    from prunekit.cli import run
    from prunekit_hashgrid.plugins import HOLLOWNERF

    prunekit.register(HOLLOWNERF)

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["prunekit", *map(str, args)])
        code = 0
        try:
            run()
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    yield call
    prunekit.unregister("hollownerf")


def test_entry_point_declared():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["prunekit.plugins"]
    assert eps["hollownerf"] == "prunekit_hashgrid.plugins:HOLLOWNERF"
    from prunekit_hashgrid.plugins import HOLLOWNERF

    assert HOLLOWNERF.name == "hollownerf" and HOLLOWNERF.get_target().domain == "hashgrid"


def test_prune_writes_compacted_model_and_report(tiny_ckpt, tmp_path):
    from prunekit_hashgrid import checkpoint

    out, rep = tmp_path / "small.safetensors", tmp_path / "rep"
    r = cli("prune", tiny_ckpt, "-m", "hollownerf", "--threshold", "0", "-o", out, "--json", "--report", rep, *FAST)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    before, after = d["before"], d["after"]
    assert after["hash_params"] < before["hash_params"] and after["bytes"] < before["bytes"]
    assert after["cells"] == before["cells"]  # threshold 0 keeps exactly the cells the gate kept
    assert d["metrics"]["psnr_vs_original"] > 60  # identical renders up to float noise
    assert 0 < d["metrics"]["query_fraction"] < 1
    small, _ = checkpoint.load(out)
    assert small.encoding.hash_table.numel() == after["hash_params"]
    assert json.loads((rep / "report.json").read_text())["after"] == after


def test_info_eval_and_keep_ratio(tiny_ckpt, tmp_path, cli_here):
    code, out, err = cli_here("info", tiny_ckpt, "--json")
    assert code == 0, err
    assert json.loads(out)["kind"] == "hollow"
    small = tmp_path / "k.safetensors"
    code, out, err = cli_here("prune", tiny_ckpt, "-m", "hollownerf", "--keep", "0.05", "-o", small, "--json",
                              "--eval-views", "0")
    assert code == 0, err
    assert json.loads(out)["after"]["cells"] == int(0.05 * 16**3)
    code, out, err = cli_here("eval", tiny_ckpt, small, "--json", *FAST)
    assert code == 0, err
    m = json.loads(out)["metrics"]
    assert m["query_fraction"] < m["query_fraction_reference"]  # fewer cells kept: fewer lookups


def test_bad_inputs_fail_with_one_line_and_write_nothing(tiny_ckpt, tmp_path, cli_here):
    from safetensors.torch import save_file

    from prunekit_hashgrid import checkpoint
    from prunekit_hashgrid.field import HollowField

    out = tmp_path / "out.safetensors"
    cases = {}
    cases["missing"] = tmp_path / "nope.safetensors"
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    cases["foreign"] = foreign
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    cases["garbage"] = garbage
    dense = tmp_path / "dense.safetensors"
    checkpoint.save(HollowField(dict(num_levels=2, min_res=4, max_res=8, log2_hashmap_size=6), saliency_res=0), dense)
    cases["dense"] = dense
    for name, path in cases.items():
        code, _, err = cli_here("prune", path, "-m", "hollownerf", "--threshold", "0", "-o", out)
        assert code == 1, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert not out.exists() and not list(tmp_path.glob(".out.safetensors*")), name
    assert "no trained saliency grid" in cli_here("prune", dense, "-m", "hollownerf", "--threshold", "0")[2]
    code, _, err = cli_here("prune", tiny_ckpt, "-m", "hollownerf", "--threshold", "0", "-o", tmp_path / "x.ply")
    assert code == 2 and not (tmp_path / "x.ply").exists()
    code, _, err = cli_here("prune", tiny_ckpt, "-m", "hollownerf", "--threshold", "0", "--samples", "0")
    assert code == 2 and "--samples" in err


def test_train_script_synthetic_and_bad_scene(tmp_path):
    out = tmp_path / "t.safetensors"
    args = [sys.executable, str(ROOT / "scripts" / "train_hashgrid.py"), "--res", "12", "--steps", "12",
            "--batch-rays", "64", "--samples", "8", "--levels", "2", "--max-res", "16", "--log2-table", "8",
            "--saliency-res", "8", "--threads", "1", "--json", "-o", str(out)]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["heldout_views"] == 3 and d["train_views"] == 21 and d["sizes"]["hash_params"] == 2 * 256 * 2
    from prunekit_hashgrid import checkpoint

    fld, info = checkpoint.load(out)
    assert info["psnr_heldout"] == pytest.approx(d["psnr_heldout"])



def test_train_script_bad_scene(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_hashgrid", ROOT / "scripts" / "train_hashgrid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bad = tmp_path / "bad.safetensors"
    code = mod.main(["--scene", str(tmp_path / "missing" / "transforms.json"), "-o", str(bad), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().count("\n") == 0 and "no such file" in err
    assert not bad.exists()
    assert mod.main(["--steps", "1", "-o", str(tmp_path / "x.pt")]) == 2
