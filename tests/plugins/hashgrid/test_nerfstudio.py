"""``nerfacto-hollow``: spec, offline construction on CPU, gated forward/backward, freeze, ``ns-train --help``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nerfstudio")

ENV_METHOD = "nerfacto-hollow=prunekit_hashgrid.nerfstudio.methods:NERFACTO_HOLLOW"


def test_spec_is_nerfacto_with_torch_grid_and_plain_datamanager():
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

    from prunekit_hashgrid.nerfstudio.config import HollowNerfactoModelConfig
    from prunekit_hashgrid.nerfstudio.methods import NERFACTO_HOLLOW

    cfg = NERFACTO_HOLLOW.config
    stock = method_configs["nerfacto"]
    assert cfg.method_name == "nerfacto-hollow" and "[prunekit]" in NERFACTO_HOLLOW.description
    assert isinstance(cfg.pipeline.model, HollowNerfactoModelConfig) and cfg.pipeline.model.implementation == "torch"
    assert type(cfg.pipeline.datamanager) is VanillaDataManagerConfig  # not the parallel one
    assert set(cfg.optimizers) == set(stock.optimizers) | {"saliency"}
    assert cfg.max_num_iterations == stock.max_num_iterations
    with pytest.raises(ValueError, match="torch"):
        HollowNerfactoModelConfig(implementation="tcnn")
    from prunekit_hashgrid.plugins import HOLLOWNERF

    assert HOLLOWNERF.get_hook("nerfstudio") is NERFACTO_HOLLOW


def test_offline_cpu_model_gates_trains_and_freezes():
    """Built without network (LPIPS is lazy); the gate gets gradient; the freeze meets the budget."""
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox

    from prunekit_hashgrid.nerfstudio.config import trainer_config
    from prunekit_hashgrid.nerfstudio.model import GatedHashMLP

    torch.manual_seed(0)
    cfg = trainer_config().pipeline.model
    cfg.saliency_res, cfg.saliency_target = 8, 0.1
    cfg.saliency_budget_start, cfg.saliency_budget_end, cfg.saliency_freeze = 0, 2, 3
    cfg.num_nerf_samples_per_ray, cfg.num_proposal_samples_per_ray = 8, (8, 8)
    cfg.hidden_dim = cfg.hidden_dim_color = 16
    cfg.log2_hashmap_size, cfg.num_levels, cfg.max_res = 10, 4, 64
    cfg.proposal_net_args_list = [dict(hidden_dim=8, log2_hashmap_size=8, num_levels=2, max_res=32, use_linear=False)] * 2
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=2, metadata={},
                      device="cpu")
    assert isinstance(model.field.mlp_base, GatedHashMLP)
    groups = model.get_param_groups()
    assert groups["saliency"] == [model.saliency.logits]
    assert all(p is not model.saliency.logits for p in groups["fields"])
    n = 64
    dirs = torch.nn.functional.normalize(torch.randn(n, 3) * 0.1 + torch.tensor([0, 0, 1.0]), dim=-1)
    rays = RayBundle(origins=torch.tensor([0, 0, -2.0]).expand(n, 3), directions=dirs, pixel_area=torch.full((n, 1), 1e-4),
                     camera_indices=torch.zeros(n, 1, dtype=torch.long), nears=torch.full((n, 1), 0.05),
                     fars=torch.full((n, 1), 4.0))
    model.train()
    out = model(rays)
    batch = {"image": torch.rand(n, 3)}
    loss = model.get_loss_dict(out, batch, model.get_metrics_dict(out, batch))
    assert "saliency_budget" in loss
    sum(loss.values()).backward()
    assert model.saliency.logits.grad.abs().sum() > 0
    assert model.field.mlp_base.grid.hash_table.grad.abs().sum() > 0
    for step in range(4):
        model.saliency_after_step(step)
    assert model.field.mlp_base.frozen and model.saliency.kept().float().mean() <= 0.1
    model.eval()
    with torch.no_grad():
        img = model.get_outputs_for_camera_ray_bundle(rays.reshape((8, 8)))
    assert img["rgb"].shape == (8, 8, 3) and torch.isfinite(img["rgb"]).all()


def test_ns_train_help():
    exe = Path(sys.executable).with_name("ns-train")
    if not exe.exists():
        pytest.skip("ns-train not installed beside this Python")
    r = subprocess.run([str(exe), "nerfacto-hollow", "--help"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, COLUMNS="200", NERFSTUDIO_METHOD_CONFIGS=ENV_METHOD))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--pipeline.model.saliency-target" in r.stdout


def test_broken_spec_is_listed_not_raised(monkeypatch):
    from prunekit_hashgrid.nerfstudio import config, methods

    def broken():
        raise ImportError("simulated breakage")

    monkeypatch.setattr(config, "trainer_config", broken)
    spec = methods.build_spec()
    assert "simulated breakage" in spec.description
    with pytest.raises(SystemExit, match="nerfacto-hollow: unavailable"):
        type(spec.config)(spec.config.method_name, spec.config.reason)
