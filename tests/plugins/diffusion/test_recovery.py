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


def _label_dropouts(model):
    return [m.dropout_prob for m in model.modules() if type(m).__name__ == "LabelEmbedding"]


def test_no_label_dropout_makes_dit_training_mode_deterministic_and_restores():
    from prunekit_diffusion.recovery import no_label_dropout
    from prunekit_diffusion.sampling import denoise

    from .conftest import make_dit

    dit = make_dit().train()
    x, t, kw = torch.randn(32, 4, 16, 16), torch.full((32,), 500), {"class_labels": torch.arange(32) % 10}
    torch.manual_seed(0)
    with torch.no_grad():
        # diffusers: every block drops labels on its own (p = 0.1 each) in train mode
        assert not torch.equal(denoise(dit, x, t, kw), denoise(dit, x, t, kw))
        with no_label_dropout(dit):
            assert set(_label_dropouts(dit)) == {0.0}
            assert torch.equal(denoise(dit, x, t, kw), denoise(dit.eval(), x, t, kw))
    assert set(_label_dropouts(dit)) == {0.1}


def test_distill_finetune_conditions_a_dit_student_like_its_teacher():
    from diffusers import DDPMScheduler
    from prunekit_diffusion.recovery import distill_finetune

    from .conftest import make_dit

    teacher = make_dit()
    student = copy.deepcopy(teacher)
    data = torch.rand(32, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(0)
    log = distill_finetune(student, teacher, DDPMScheduler(num_train_timesteps=1000), data,
                           {"class_labels": torch.arange(32) % 10}, steps=1, batch_size=32)
    # an identical student sees the same labels as the eval-mode teacher: no distillation gap at step 0
    # (with diffusers' per-block label dropout left on in train mode, it was > 0)
    assert log[0]["distill"] == 0.0
    assert set(_label_dropouts(student)) == {0.1}
