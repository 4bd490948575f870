"""Model sizes travel with the trained classifier; classification stages name their backbone."""

import importlib.util
import sys
from pathlib import Path

import pytest

from prunekit_tokens.experiment import ModelSpec

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def test_model_spec_round_trips_through_the_vit_config():
    spec = ModelSpec(image_size=96, patch_size=12, hidden_size=64, num_hidden_layers=5, num_attention_heads=2)
    back = ModelSpec.from_config(spec.vit_config(num_labels=10))
    assert back == spec and back.grid == (8, 8)


@pytest.fixture(scope="module")
def train_script():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("train_cropr_vit", SCRIPTS / "train_cropr_vit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_folders_carry_the_backbone_suffix(train_script, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    base = ["--prune-counts", "32,8", "--prune-after", "1,2", "--mode", "joint", "--tag=-po", "--epochs", "2"]
    ap_args = train_script.main  # parse through main's parser: an unknown backbone name is refused
    assert ap_args(["cls-cropr", "--backbone", "p12", *base]) == 2

    class A:  # the fields stage_dir reads
        prune_count, prune_counts, prune_after, mode, tag, epochs = 0, "32,8", "1,2", "joint", "-po", 2
        backbone, seed = "cls-backbone-p12", 0

    root = tmp_path / "prunekit_tokens"
    assert train_script.stage_dir("cls-backbone", A) == root / "cls-backbone-p12"
    assert train_script.stage_dir("cls-cropr", A) == root / "cls-cropr-s32-8-a1-2-joint-po-p12"
    assert train_script.stage_dir("cls-finetune", A) == root / "cls-finetune-e2-po-p12"
    assert train_script.stage_dir("seg-cropr", A) == root / "seg-cropr-s32-8-a1-2-joint-po"
    A.backbone = "cls-backbone"
    assert train_script.stage_dir("cls-cropr", A) == root / "cls-cropr-s32-8-a1-2-joint-po"
    A.backbone, A.seed = "cls-backbone-p12", 1  # a replicate: the backbone is read, the rest is its own
    assert train_script.stage_dir("cls-backbone", A) == root / "cls-backbone-p12"
    assert train_script.stage_dir("cls-cropr", A) == root / "cls-cropr-s32-8-a1-2-joint-po-p12-seed1"
    assert train_script.stage_dir("cls-finetune", A) == root / "cls-finetune-e2-po-p12-seed1"


def test_seed_changes_canvases_and_order_but_seed0_keeps_the_cached_runs(train_script):
    assert train_script.data_seeds(2, 0) == (2, 0)  # the streams / shuffle seeds of the cached runs
    seeded = {train_script.data_seeds(stream, 1) for stream in (1, 2, 3, 4)}
    assert len(seeded) == 4 and all(s not in (1, 2, 3, 4) and o != 0 for s, o in seeded)
