"""Recovery fine-tune: output distillation pulls the pruned denoiser towards the unpruned one."""

import copy

import torch

from .conftest import class_calib


def _gap(student, teacher, sched):
    from prunekit_diffusion.sampling import denoise

    g = torch.Generator().manual_seed(99)
    x0 = torch.rand(16, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    kw = {"class_labels": torch.arange(16) % 10}
    with torch.no_grad():
        xt = sched.add_noise(x0, noise, t)
        return float((denoise(student, xt, t, kw) - denoise(teacher, xt, t, kw)).pow(2).mean())


def test_distill_finetune_closes_the_gap_and_leaves_the_teacher(unet):
    from diffusers import DDPMScheduler
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.recovery import distill_finetune

    sched = DDPMScheduler(num_train_timesteps=1000)
    pruned = prune_denoiser(unet, sched, keep_macs=0.6, calib=class_calib(n=2, steps=1), method="random",
                            progress=False).model
    teacher_state = copy.deepcopy(unet.state_dict())
    data = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    before = _gap(pruned, unet, sched)
    log = distill_finetune(pruned, unet, sched, data, {"class_labels": torch.arange(64) % 10}, steps=40,
                           batch_size=16, lr=2e-3, alpha=10.0, log_every=10)
    assert _gap(pruned, unet, sched) < 0.7 * before
    assert [r["step"] for r in log] == [0, 10, 20, 30, 39] and not pruned.training
    assert all(torch.equal(v, teacher_state[k]) for k, v in unet.state_dict().items())
