"""``prunekit prune/info/eval`` on saved tiny diffusers directories."""

import json
import os
import subprocess
import sys

import pytest
import torch

from .conftest import make_dit, make_sd_pipeline, make_unet


@pytest.fixture(scope="module", autouse=True)
def plugins_in_process():
    # in-process registration: the tests do not depend on how (or whether) the package
    # metadata was refreshed; test_console_script_end_to_end checks the entry points
    from prunekit import registry
    from prunekit_diffusion.plugins import LD_PRUNER, RANDOM_OPERATOR

    for p in (LD_PRUNER, RANDOM_OPERATOR):
        registry.register(p)
    yield
    for p in (LD_PRUNER, RANDOM_OPERATOR):
        registry.unregister(p.name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from diffusers import DDIMScheduler
    from prunekit_diffusion import ClassConditionalPipeline

    root = tmp_path_factory.mktemp("saved")
    make_unet().save_pretrained(root / "unet")
    make_sd_pipeline().save_pretrained(root / "sd")
    ClassConditionalPipeline(denoiser=make_dit(), scheduler=DDIMScheduler()).save_pretrained(root / "ditpipe")
    return root


def cli(*args):
    from typer.testing import CliRunner

    from prunekit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


FAST = ["--calib-n", "2", "--steps", "1", "--no-progress"]


def test_prune_model_dir_under_mac_budget(saved, tmp_path):
    from prunekit_diffusion import load_pruned
    from prunekit_diffusion.operators import total_macs
    from prunekit_diffusion.sampling import Calibration

    out = tmp_path / "pruned"
    r = cli("prune", saved / "unet", "-m", "ld-pruner", "--keep-macs", "0.65", "-o", out, "--json", *FAST)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["after"]["macs"] <= 0.65 * rep["before"]["macs"]
    assert rep["budget"].startswith("cost")
    assert rep["extra"]["removed"]
    model = load_pruned(out)
    ex = Calibration(n=1, cond={"class_labels": torch.zeros(1, dtype=torch.long)}).example(model)
    assert total_macs(model, ex) == rep["after"]["macs"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_prune_pipeline_dir_by_count_with_random_baseline(saved, tmp_path):
    from prunekit_diffusion import ClassConditionalPipeline, load_pruned

    out = tmp_path / "p"
    r = cli("prune", saved / "ditpipe", "-m", "random-operator", "--keep", "0.5", "--budget-over", "count",
            "--random-seed", "3", "--classes", "1,2", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    pipe = load_pruned(out)
    assert isinstance(pipe, ClassConditionalPipeline)
    n_blocks = len([b for b in pipe.denoiser.transformer_blocks if type(b).__name__ != "SkippedBlock"])
    assert n_blocks == 1  # floor(0.5 * 3)
    assert pipe(class_labels=[1], num_inference_steps=1).images.shape == (1, 4, 16, 16)


def test_info_and_eval(saved, tmp_path):
    r = cli("info", saved / "unet", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["denoiser"] == "UNet2DModel" and d["removable operators"] == 12
    out = tmp_path / "q"
    assert cli("prune", saved / "unet", "-m", "random-operator", "--keep", "0.8", "-o", out, *FAST).exit_code == 0
    r = cli("eval", saved / "unet", out, "--json", "--calib-n", "3", "--steps", "1")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["metrics"]
    assert m["latent_distance"] > 0 and m["latent_mse"] > 0
    r = cli("eval", saved / "unet", saved / "unet", "--json", "--calib-n", "3", "--steps", "1")
    assert json.loads(r.stdout)["metrics"]["latent_distance"] == 0.0


@pytest.mark.parametrize("extra,code,msg", [
    (["--keep", "0.01"], 2, "cannot be removed"),
    (["--keep", "0.7", "--classes", "a,b"], 2, "--classes"),
    (["--keep", "0.7", "--classes", "12"], 2, "class labels must be in 0..9"),
    (["--keep", "0.7", "--calib-n", "1"], 2, "at least 2"),
    (["--keep", "0.7", "--budget-over", "flops"], 2, "--budget-over"),
    (["--keep", "0.7", "--guidance-scale", "3"], 2, "null"),  # UNet2DModel has no unconditional class
    (["--keep", "0.7", "--classes", "1", "--calib", "p.txt"], 2, "not both"),
    ([], 2, "exactly one of --keep"),
    (["--keep-macs", "0.7", "--keep", "0.7"], 2, "not both"),
    (["--keep-macs", "1.5"], 2, "--keep-macs"),
    (["--keep-macs", "0.7", "--budget-over", "count"], 2, "--budget-over count"),
])
def test_usage_errors(saved, tmp_path, extra, code, msg):
    r = cli("prune", saved / "unet", "-m", "ld-pruner", "-o", tmp_path / "o", "--steps", "1", "--no-progress", *extra)
    assert r.exit_code == code, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_existing_output_and_bad_input(saved, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    r = cli("prune", saved / "unet", "-m", "random-operator", "--keep", "0.8", "-o", busy, *FAST)
    assert r.exit_code == 2 and "not an empty directory" in r.output
    assert (busy / "keep.txt").read_text() == "x" and len(list(tmp_path.iterdir())) == 1
    notmodel = tmp_path / "empty"
    notmodel.mkdir()
    r = cli("prune", notmodel, "-m", "ld-pruner", "--keep", "0.8", "-o", tmp_path / "o2", *FAST)
    assert r.exit_code == 1 and str(notmodel) in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o2").exists()
    plain = tmp_path / "weights.bin"
    plain.write_bytes(b"x")
    r = cli("prune", plain, "-m", "ld-pruner", "--keep", "0.8", "-o", tmp_path / "o3", *FAST)
    assert r.exit_code == 1 and "plugin 'ld-pruner' reads diffusers pipeline or model folders" in r.output and "Traceback" not in r.output
    assert plain.read_bytes() == b"x" and not (tmp_path / "o3").exists()


def test_console_script_end_to_end(saved, tmp_path):
    out = tmp_path / "cli_out"
    r = subprocess.run([sys.executable, "-m", "prunekit", "prune", str(saved / "unet"), "-m", "ld-pruner",
                        "--keep", "0.7", "-o", str(out), *FAST], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "prunekit_pruned.json").exists() and (out / "config.json").exists()


def test_text_pipeline_with_prompt_file(saved, tmp_path):
    from diffusers import StableDiffusionPipeline
    from prunekit_diffusion import load_pruned

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na red dog\n\nthe sea\n")
    out = tmp_path / "sd_pruned"
    r = cli("prune", saved / "sd", "-m", "ld-pruner", "--keep", "0.7", "--calib", prompts, "--guidance-scale", "3",
            "-o", out, "--json", "--calib-n", "3", "--steps", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["after"]["macs"] <= 0.7 * rep["before"]["macs"]
    pipe = load_pruned(out)
    assert type(pipe) is StableDiffusionPipeline
    img = pipe("a cat", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    # a text pipeline without prompts is a usage error, not a crash
    r = cli("prune", saved / "sd", "-m", "ld-pruner", "--keep", "0.7", "-o", tmp_path / "x", *FAST)
    assert r.exit_code == 2 and "prompts" in r.output


def test_keep_per_block_from_the_command_line(saved, tmp_path):
    """``--keep-per-block 1``: every denoiser block keeps an operator where the plain selection
    (same random scores, same budget) empties some; floors over the budget are a usage error."""
    from diffusers import UNet2DModel

    from prunekit_diffusion import load_pruned
    from prunekit_diffusion.operators import discover_operators
    from prunekit_diffusion.sampling import Calibration
    from prunekit_diffusion.scoring import block_of, removable

    base = UNet2DModel.from_pretrained(saved / "unet")
    ex = Calibration(n=1, cond={"class_labels": torch.zeros(1, dtype=torch.long)}).example(base)
    all_blocks = {block_of(op) for op in removable(discover_operators(base, ex))}
    kept, reps = {}, {}
    for floor in ("0", "1"):
        out = tmp_path / f"f{floor}"
        r = cli("prune", saved / "unet", "-m", "random-operator", "--keep-macs", "0.7", "--random-seed", "1",
                "--keep-per-block", floor, "-o", out, "--json", *FAST)
        assert r.exit_code == 0, r.output
        reps[floor] = json.loads(r.stdout)
        kept[floor] = {block_of(op) for op in removable(discover_operators(load_pruned(out), ex))}
    assert kept["0"] < all_blocks  # without the floor this budget and seed empty a block
    assert kept["1"] == all_blocks
    assert reps["1"]["after"]["macs"] <= 0.7 * reps["1"]["before"]["macs"]
    assert any("keep_per_block=1" in n for n in reps["1"]["notes"])
    assert not any("keep_per_block" in n for n in reps["0"]["notes"])
    r = cli("prune", saved / "unet", "-m", "ld-pruner", "--keep-macs", "0.5", "--keep-per-block", "1",
            "-o", tmp_path / "tight", *FAST)
    assert r.exit_code == 2 and "per block already costs" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "tight").exists()


def test_granularity_sublayer_from_the_command_line(saved, tmp_path):
    """``--granularity sublayer``: DiT attention / feed-forward sublayers are the operators; the output
    reloads through its manifest and generates; on a UNet it is a usage error."""
    from prunekit_diffusion import load_pruned

    out = tmp_path / "sub"
    r = cli("prune", saved / "ditpipe", "-m", "ld-pruner", "--keep-macs", "0.7", "--granularity", "sublayer",
            "-o", out, "--json", *FAST)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["after"]["macs"] <= 0.7 * rep["before"]["macs"]
    assert rep["extra"]["removed"] and all(x["kind"] in ("sublayer", "block") for x in rep["extra"]["removed"])
    pipe = load_pruned(out)
    assert pipe(class_labels=[1], num_inference_steps=1).images.shape == (1, 4, 16, 16)
    r = cli("prune", saved / "unet", "-m", "ld-pruner", "--keep", "0.7", "--granularity", "sublayer",
            "-o", tmp_path / "u", *FAST)
    assert r.exit_code == 2 and "UNet" in r.output and not (tmp_path / "u").exists()
