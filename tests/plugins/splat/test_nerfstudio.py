"""nerfstudio methods splatfacto-sundae / -radsplat / -lightgaussian on CPU, offline.

splatfacto's forward (gsplat ``rasterization``) needs CUDA, so the training step here renders
with prunekit's PyTorch reference renderer from the model's own ``gauss_params`` and the data
manager's cameras/images; everything else is nerfstudio's own code: the method registry, the
pipeline and data manager setup, ``Optimizers``, the training callbacks (splatfacto's strategy
hook that runs the pruning), ``Trainer.save_checkpoint`` and the ``ns-export gaussian-splat``
loader. ``model.info = {}`` stands in for the rasteriser's info dict, which gsplat's
``DefaultStrategy`` does not read once densification has stopped (``stop_split_at=0``).
"""

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nerfstudio")
pytest.importorskip("gsplat")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import prunekit  # noqa: E402
from prunekit_splat.cameras import synthesize_cameras  # noqa: E402
from prunekit_splat.formats import read_scene  # noqa: E402
from prunekit_splat.context import SplatContext  # noqa: E402
from prunekit_splat.render import render  # noqa: E402
from prunekit_splat.scene import SH_C0, GaussianScene  # noqa: E402

METHODS = ("splatfacto-sundae", "splatfacto-radsplat", "splatfacto-lightgaussian")
PRUNE_STEP = 3
THRESHOLD = 0.01


@pytest.fixture(scope="module")
def ns():
    torch.set_num_threads(1)
    from nerfstudio.configs import method_configs

    return method_configs


def _scene_of(p) -> GaussianScene:
    n = p["means"].shape[0]
    return GaussianScene(means=p["means"], quats=p["quats"], scales=p["scales"], opacities=p["opacities"].reshape(n),
                         sh0=p["features_dc"], shN=p["features_rest"])


def _write_dataset(root: Path) -> None:
    """Five 24x20 views of a random Gaussian scene as a nerfstudio transforms.json dataset."""
    (root / "images").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    n = 120
    teacher = GaussianScene(means=torch.rand(n, 3, generator=g) * 2 - 1, quats=torch.randn(n, 4, generator=g),
                            scales=torch.full((n, 3), math.log(0.15)), opacities=torch.full((n,), 2.0),
                            sh0=(torch.rand(n, 3, generator=g) - 0.5) / SH_C0, shN=torch.zeros(n, 0, 3))
    cams = synthesize_cameras(teacher, n=5, width=24, height=20, seed=1)
    frames = []
    for i, c in enumerate(cams):
        img = render(teacher, c, backend="torch", background=torch.zeros(3)).image
        Image.fromarray((img.clamp(0, 1).numpy() * 255).astype(np.uint8)).save(root / "images" / f"f{i}.png")
        c2w_gl = torch.linalg.inv(c.viewmat.double()) @ torch.diag(torch.tensor([1.0, -1, -1, 1], dtype=torch.float64))
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": c2w_gl.tolist()})
    K = cams[0].K
    (root / "transforms.json").write_text(json.dumps({"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
                                                      "cx": float(K[0, 2]), "cy": float(K[1, 2]), "w": 24, "h": 20,
                                                      "frames": frames}))


@pytest.fixture(scope="module")
def run(ns, tmp_path_factory):
    """splatfacto-radsplat trained 6 steps on CPU, pruned by threshold at PRUNE_STEP, then saved."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation as Where
    from nerfstudio.engine.trainer import Trainer

    from prunekit_splat.nerfstudio.model import cameras_from_nerfstudio

    tmp = tmp_path_factory.mktemp("ns")
    _write_dataset(tmp / "data")
    cfg = copy.deepcopy(ns.all_methods["splatfacto-radsplat"])  # never mutate the registry's own
    cfg.machine.device_type = "cpu"
    cfg.vis = "tensorboard"
    cfg.output_dir = tmp / "out"
    cfg.pipeline.datamanager.data = tmp / "data"
    cfg.pipeline.datamanager.dataparser.load_3D_points = False  # splatfacto 1.1.5 moves SfM colours to .cuda()
    m = cfg.pipeline.model
    m.num_random, m.random_scale, m.num_downscales, m.stop_split_at = 300, 2.0, 0, 0
    m.prune_steps, m.prune_threshold = (PRUNE_STEP,), THRESHOLD
    cfg.set_timestamp()
    cfg.save_config()
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.setup()
    model = trainer.pipeline.model
    model.info = {}
    out = {"trainer": trainer, "config": cfg, "counts": {}, "losses": []}
    for step in range(1, 7):
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, Where.BEFORE_TRAIN_ITERATION)
        camera, data = trainer.pipeline.datamanager.next_train(step)
        image = render(_scene_of(model.gauss_params), cameras_from_nerfstudio(camera)[0], backend="torch",
                       background=torch.zeros(3)).image
        loss = (image - model.get_gt_img(data["image"])[..., :3]).abs().mean()
        trainer.optimizers.zero_grad_all()
        loss.backward()
        trainer.optimizers.optimizer_step_all()
        trainer.optimizers.scheduler_step_all(step)
        out["losses"].append(float(loss))
        if step == PRUNE_STEP:  # what the callbacks should remove, computed here independently
            with torch.no_grad():
                scene = _scene_of(model.gauss_params).clone()
                views = cameras_from_nerfstudio(trainer.pipeline.datamanager.train_dataset.cameras)
                plugin = prunekit.load("radsplat")
                conf = plugin.make_config(antialiased=False)  # splatfacto's default rasterize_mode is "classic"
                scores = plugin.get_scorer()(scene, SplatContext(scene, views), conf)
                out["expected_keep"] = prunekit.select(scores, prunekit.Budget(threshold=THRESHOLD)).only
                out["before"] = {k: v.detach().clone() for k, v in model.gauss_params.items()}
                out["adam_before"] = {k: trainer.optimizers.optimizers[k].state[p]["exp_avg"].clone()
                                      for k, p in model.gauss_params.items()}
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, Where.AFTER_TRAIN_ITERATION)
        out["counts"][step] = model.num_points
        if step == PRUNE_STEP:
            out["after"] = {k: v.detach().clone() for k, v in model.gauss_params.items()}
            out["adam_after"] = {k: trainer.optimizers.optimizers[k].state[p]["exp_avg"].clone()
                                 for k, p in model.gauss_params.items()}
    trainer.save_checkpoint(6)
    out["ckpt"] = sorted(trainer.checkpoint_dir.glob("step-*.ckpt"))[-1]
    return out


def test_methods_in_nerfstudio_registry(ns):
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
    from prunekit_splat.nerfstudio.config import PrunedSplatfactoModelConfig

    def fields(table):  # optimiser table without the scheduler classes (ours yield floats)
        return {k: {kk: (None if vv is None else {f: getattr(vv, f) for f in vv.__dataclass_fields__ if f != "_target"})
                    for kk, vv in v.items()} for k, v in table.items()}

    stock = ns.all_methods["splatfacto"]
    for name in METHODS:
        cfg = ns.all_methods[name]
        assert cfg.method_name == name and "[prunekit]" in ns.all_descriptions[name]
        assert isinstance(cfg.pipeline.model, PrunedSplatfactoModelConfig)
        assert type(cfg.pipeline.datamanager) is FullImageDatamanagerConfig
        ours = fields(cfg.optimizers)
        assert ours.pop("compensation")["optimizer"]["lr"] == 1e-3  # SUNDAE's net (used only if enabled)
        assert ours == fields(stock.optimizers)
        assert cfg.max_num_iterations == stock.max_num_iterations
    assert ns.all_methods["splatfacto-radsplat"].pipeline.model.prune_threshold == 0.01


def test_ns_train_help_lists_prune_options():
    exe = Path(sys.executable).with_name("ns-train")
    if not exe.exists():
        pytest.skip("ns-train not installed beside this Python")
    r = subprocess.run([str(exe), "splatfacto-sundae", "--help"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, COLUMNS="200"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--pipeline.model.prune-scorer" in r.stdout and "SUNDAE spectral pruning" in r.stdout


def test_broken_spec_is_listed_not_raised(monkeypatch):
    from nerfstudio.plugins.types import MethodSpecification

    from prunekit_splat.nerfstudio import config, methods

    def broken(*a, **k):
        raise ImportError("simulated breakage")

    monkeypatch.setattr(config, "trainer_config", broken)
    spec = methods.build_spec("splatfacto-sundae")
    assert isinstance(spec, MethodSpecification)
    assert "simulated breakage" in spec.description
    with pytest.raises(SystemExit, match="splatfacto-sundae: unavailable: ImportError: simulated breakage"):
        type(spec.config)(**{f: getattr(spec.config, f) for f in ("method_name", "reason")})  # as tyro rebuilds it


def test_schedules_and_scorer_options(ns):
    from prunekit_splat.nerfstudio.config import PrunedSplatfactoModelConfig

    sundae = ns.all_methods["splatfacto-sundae"].pipeline.model
    assert sundae.prune_schedule().step_keep(15000) == pytest.approx(0.1)
    light = ns.all_methods["splatfacto-lightgaussian"].pipeline.model.prune_schedule()
    assert light.steps == (16000, 24000) and light.keeps == pytest.approx((0.5, 0.5 * (1 - 0.5 * 0.8)))
    assert ns.all_methods["splatfacto-radsplat"].pipeline.model.prune_schedule() is None
    cfg = PrunedSplatfactoModelConfig(prune_scorer_options=("band_weight=0.25", "max_neighbors = 8"))
    assert cfg.scorer_options() == {"band_weight": 0.25, "max_neighbors": 8, "nn_quantile": 0.0}
    radsplat = PrunedSplatfactoModelConfig(prune_scorer="radsplat")
    assert radsplat.scorer_options() == {"antialiased": False}  # follows rasterize_mode="classic"
    assert dataclasses.replace(radsplat, rasterize_mode="antialiased").scorer_options() == {"antialiased": True}
    assert dataclasses.replace(radsplat, prune_scorer_options=("antialiased=true",)).scorer_options() == {
        "antialiased": True}
    with pytest.raises(ValueError, match="not name=value"):
        PrunedSplatfactoModelConfig(prune_scorer_options=("band_weight",)).scorer_options()
    with pytest.raises(prunekit.UsageError, match="unknown option --nope"):
        PrunedSplatfactoModelConfig(prune_scorer_options=("nope=1",)).scorer_options()


def test_camera_conversion_matches_splatfacto_viewmat(ns):
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.models.splatfacto import get_viewmat

    from prunekit_splat.nerfstudio.model import cameras_from_nerfstudio

    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(2, 3, 3, generator=g))
    c2w = torch.cat([q, torch.randn(2, 3, 1, generator=g)], dim=2)
    cams = Cameras(camera_to_worlds=c2w, fx=30.0, fy=31.0, cx=12.0, cy=10.0, width=24, height=20)
    ours = cameras_from_nerfstudio(cams)
    for i, c in enumerate(ours):
        torch.testing.assert_close(c.viewmat, get_viewmat(c2w[i:i + 1])[0], atol=1e-5, rtol=0)
        assert (c.width, c.height) == (24, 20) and c.K[0, 0] == 30.0 and c.K[1, 2] == 10.0


def test_model_builds_offline_with_lazy_lpips(run):
    import torchmetrics.image.lpip as lpip_module

    from prunekit_splat.nerfstudio.model import LazyLPIPS, SplatfactoPruneStrategy

    model = run["trainer"].pipeline.model
    assert isinstance(model.lpips, LazyLPIPS) and isinstance(model.strategy, SplatfactoPruneStrategy)
    assert not [k for k in model.state_dict() if k.startswith("lpips.")]
    assert lpip_module.LearnedPerceptualImagePatchSimilarity is not LazyLPIPS  # patched only during setup


def test_lazy_lpips_builds_on_first_use_or_reports_nan(monkeypatch):
    import torchmetrics.image.lpip as lpip_module

    from prunekit_splat.nerfstudio.model import LazyLPIPS

    built = []

    class Fake(torch.nn.Module):
        def __init__(self, **kw):
            super().__init__()
            built.append(kw)

        def forward(self, a, b):
            return (a - b).abs().mean()

    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", Fake)
    lazy = LazyLPIPS(normalize=True)
    assert built == []
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert float(lazy(a, b)) == 0.5 and float(lazy(a, b)) == 0.5 and built == [{"normalize": True}]

    def offline(**kw):
        raise OSError("no network")

    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", offline)
    lazy = LazyLPIPS(normalize=True)
    with pytest.warns(UserWarning, match="LPIPS unavailable .*no network"):
        assert math.isnan(float(lazy(a, b)))
    assert math.isnan(float(lazy(a, b))) and "no network" in lazy.error


def test_prunes_on_schedule_with_consistent_optimisers(run):
    counts, keep = run["counts"], run["expected_keep"]
    assert counts[1] == counts[2] == 300
    assert 0 < int(keep.sum()) < 300, "the scene should have both visible and invisible Gaussians"
    assert counts[PRUNE_STEP] == counts[6] == int(keep.sum())
    model, opts = run["trainer"].pipeline.model, run["trainer"].optimizers.optimizers
    assert [e["step"] for e in model.prune_events()] == [PRUNE_STEP]
    for name, p in model.gauss_params.items():
        group = opts[name].param_groups[0]["params"]
        assert len(group) == 1 and group[0] is p, name
        assert opts[name].state[p]["exp_avg"].shape == p.shape
    # the rows kept are the expected ones, in order, and their Adam moments moved with them
    for name in run["before"]:
        torch.testing.assert_close(run["after"][name], run["before"][name][keep], atol=0, rtol=0)
        torch.testing.assert_close(run["adam_after"][name], run["adam_before"][name][keep], atol=0, rtol=0)
    assert all(math.isfinite(v) for v in run["losses"])


def test_checkpoint_loads_safely_and_prunekit_reads_it(run, tmp_path):
    ckpt = run["ckpt"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # torch >= 2.6 default; no numpy scalars
    n = run["counts"][6]
    assert state["pipeline"]["_model.gauss_params.means"].shape == (n, 3)
    r = _prunekit("info", ckpt, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gaussians"] == n
    out = tmp_path / "half.ply"
    r = _prunekit("prune", ckpt, "-m", "sundae", "--keep", "0.5", "-o", out, "--views", "2", "--resolution", "16",
                  "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(read_scene(out)) == n // 2


def test_ns_export_gaussian_splat_loads_the_checkpoint(run, tmp_path):
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    ExportGaussianSplat(load_config=run["config"].get_base_dir() / "config.yml", output_dir=tmp_path).main()
    exported = read_scene(tmp_path / "splat.ply")
    model = run["trainer"].pipeline.model
    assert len(exported) == run["counts"][6]
    torch.testing.assert_close(exported.means, model.gauss_params["means"].detach(), atol=1e-6, rtol=0)


def _prunekit(*args):
    return subprocess.run([sys.executable, "-m", "prunekit", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_sundae_ratio_prune_in_a_bare_model(ns):
    """splatfacto-sundae's model alone (no data manager): one-shot keep 10 % at step 2, two-band rule."""
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes
    from nerfstudio.engine.callbacks import TrainingCallbackLocation as Where
    from nerfstudio.engine.optimizers import Optimizers

    method = ns.all_methods["splatfacto-sundae"]
    cfg = copy.deepcopy(method.pipeline.model)
    cfg.num_random, cfg.random_scale, cfg.stop_split_at, cfg.prune_steps = 200, 2.0, 0, (2,)
    cfg.prune_scorer_options = ("band_weight=0.25",)
    torch.manual_seed(1)
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3)
    optimizers = Optimizers(copy.deepcopy(method.optimizers), model.get_param_groups())
    callbacks = model.get_training_callbacks(TrainingCallbackAttributes(optimizers, None, None, None))
    model.info = {}
    before = model.gauss_params["means"].detach().clone()
    for step in (1, 2):
        for cb in callbacks:
            cb.run_callback_at_location(step, Where.BEFORE_TRAIN_ITERATION)
        for cb in callbacks:
            cb.run_callback_at_location(step, Where.AFTER_TRAIN_ITERATION)
        assert model.num_points == (200 if step == 1 else 20)
    plugin = prunekit.load("sundae")
    conf = plugin.make_config(band_weight=0.25)
    z = torch.zeros(200, 1)  # SUNDAE scores the centres only
    probe = GaussianScene(before, z.expand(200, 4), z.expand(200, 3), z[:, 0], z.expand(200, 3), torch.zeros(200, 0, 3))
    scores = plugin.get_scorer()(probe, None, conf)
    keep = prunekit.select(scores, conf.budget(prunekit.Budget(keep_ratio=0.1))).only
    torch.testing.assert_close(model.gauss_params["means"].detach(), before[keep], atol=0, rtol=0)
    assert optimizers.optimizers["means"].param_groups[0]["params"][0] is model.gauss_params["means"]


def test_sundae_joint_compensation_in_a_bare_model(ns, tmp_path):
    """--pipeline.model.compensation: the net joins after the prune step, one backward pass trains it and
    the Gaussians, its weights ride in the checkpoint and prunekit's reader attaches them for eval."""
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes
    from nerfstudio.engine.callbacks import TrainingCallbackLocation as Where
    from nerfstudio.engine.optimizers import Optimizers

    from prunekit_splat.formats.checkpoints import read_nerfstudio_ckpt

    method = ns.all_methods["splatfacto-sundae"]
    cfg = copy.deepcopy(method.pipeline.model)
    cfg.num_random, cfg.random_scale, cfg.stop_split_at, cfg.prune_steps = 200, 2.0, 0, (2,)
    cfg.compensation, cfg.compensation_channels = True, 4
    torch.manual_seed(1)
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3)
    optimizers = Optimizers(copy.deepcopy(method.optimizers), model.get_param_groups())
    assert "compensation" in optimizers.optimizers
    callbacks = model.get_training_callbacks(TrainingCallbackAttributes(optimizers, None, None, None))
    model.info = {}
    scene0 = _scene_of({k: v.detach() for k, v in model.gauss_params.items()})
    cam = synthesize_cameras(scene0, n=1, width=20, height=16, seed=2)[0]
    target = render(scene0, cam, backend="torch").image.detach() * 0.7
    head0 = model.compensation.head.weight.detach().clone()
    for step in range(1, 6):
        for cb in callbacks:
            cb.run_callback_at_location(step, Where.BEFORE_TRAIN_ITERATION)
        raw = render(_scene_of(model.gauss_params), cam, backend="torch").image
        rgb = model.compensate({"rgb": raw})["rgb"]  # what get_outputs returns after splatfacto's render
        assert (rgb is raw) == (step < 3), step  # active from the step after the prune step (2)
        optimizers.zero_grad_all()
        (rgb - target).abs().mean().backward()
        assert model.gauss_params["means"].grad is not None
        optimizers.optimizer_step_all()
        for cb in callbacks:
            cb.run_callback_at_location(step, Where.AFTER_TRAIN_ITERATION)
    assert model.num_points == 20
    assert not torch.equal(model.compensation.head.weight.detach(), head0)
    ckpt = tmp_path / "step-000000005.ckpt"
    torch.save({"step": 5, "pipeline": {f"_model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    net = read_nerfstudio_ckpt(ckpt).meta["compensation"]
    x = torch.rand(16, 20, 3)
    torch.testing.assert_close(net(x), model.compensation(x), atol=0, rtol=0)
