"""SUNDAE's compensation net trained jointly with the Gaussians inside the training loop."""

import torch

import prunekit
from prunekit_splat.cameras import Camera
from prunekit_splat.compensation import CompensationNet, JointCompensation, apply, macs, sidecar_path
from prunekit_splat.formats import read_scene
from prunekit_splat.metrics import psnr
from prunekit_splat.render import render
from prunekit_splat.target import SplatFiles
from prunekit_splat.train import TrainConfig, make_optimizers, params_to_scene, save_trained, train
from .test_train import CountingStrategy, small_params

CAM = Camera(torch.eye(4), torch.tensor([[24.0, 0, 12], [0, 24.0, 12], [0, 0, 1]]), 24, 24, "c")


class GradProbe(CountingStrategy):
    """Records, for every step, whether the backward pass reached the Gaussians' means."""

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule, self.means_grad = schedule, {}

    def step_pre_backward(self, params, optimizers, state, step, info):
        super().step_pre_backward(params, optimizers, state, step, info)
        params["means"].register_hook(lambda g, s=step: self.means_grad.__setitem__(s, float(g.abs().sum())))


def vignetted_target():
    with torch.no_grad():
        image = render(params_to_scene(small_params(60, seed=1)), CAM).image
    return image * torch.linspace(0.4, 1.0, 24)[None, :, None]  # a spatial gain the Gaussians fit poorly


def test_joint_training_updates_gaussians_and_net_and_lowers_the_loss():
    target = vignetted_target()
    params = small_params(60, seed=2)
    probe = GradProbe()
    cfg = TrainConfig(steps=40, log_every=1, sh_degree=0,
                      compensation=JointCompensation(start_step=10, levels=2, base_channels=4, lr=3e-3))
    log = train(params, make_optimizers(params, 1.0), probe, [CAM], [target], cfg)
    net = log["compensation"]
    assert log["compensation_start"] == 10
    assert net.head.weight.abs().sum() > 0  # moved off the identity initialisation (weight 0, bias 1)
    assert all(probe.means_grad[s] > 0 for s in range(10, 40))  # the same backward reaches the Gaussians
    assert log["loss"][-1] < 0.8 * log["loss"][10], (log["loss"][10], log["loss"][-1])
    with torch.no_grad():
        raw = render(params_to_scene(params), CAM).image
    assert psnr(apply(net, raw), target) > psnr(raw, target) + 0.5  # the net carries the gain


def test_start_defaults_to_the_first_prune_step():
    params = small_params(30, seed=3)
    cfg = TrainConfig(steps=6, sh_degree=0, compensation=JointCompensation(levels=2, base_channels=2))
    log = train(params, make_optimizers(params, 1.0), GradProbe(prunekit.Schedule.one_shot(4, 0.5)), [CAM],
                [vignetted_target()], cfg)
    assert log["compensation_start"] == 5 and log["compensation"] is not None
    early = TrainConfig(steps=3, sh_degree=0, compensation=JointCompensation(start_step=5, levels=2, base_channels=2))
    assert train(params, make_optimizers(params, 1.0), GradProbe(), [CAM], [vignetted_target()],
                 early)["compensation"] is None


def test_sidecar_roundtrip_and_eval_applies_it(tmp_path):
    params = small_params(30, seed=4)
    cfg = TrainConfig(steps=4, sh_degree=0, compensation=JointCompensation(start_step=0, levels=2, base_channels=2))
    net = train(params, make_optimizers(params, 1.0), GradProbe(), [CAM], [vignetted_target()], cfg)["compensation"]
    path = tmp_path / "trained.ply"
    save_trained(params, path, net)
    back = SplatFiles().load(path).meta["compensation"]  # what prunekit eval/prune read
    x = torch.rand(20, 24, 3)
    assert torch.equal(back(x), net(x))
    metrics = prunekit.eval_files(path, path, ["--resolution", "24", "--eval-views", "2"]).metrics
    assert metrics["compensation_ms"] > 0
    save_trained(params, path)  # retrained without the net: the old sidecar must not linger
    assert not sidecar_path(path).exists() and len(read_scene(path)) == 30


def test_compensation_macs_count_the_convolutions():
    c = 4
    per_pixel = 27 * c + 9 * c * c + 3 * c  # one level: 3x3 3->c, 3x3 c->c, 1x1 head c->3
    assert macs(CompensationNet(levels=1, base_channels=c), 10, 12) == 120 * per_pixel
    assert macs(CompensationNet(levels=4, base_channels=16), 64, 64) == 64 * 64 * 40_800  # the bench's net
