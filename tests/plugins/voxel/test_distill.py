"""Self-distillation of the pruned path to the unpruned path (our addition): formula, zero, gradients."""

import torch
from torch.nn import functional as F

from prunekit_voxel.distill import self_distillation
from prunekit_voxel.sparse import SparseVoxels

from .conftest import small_net, small_scene


def _out(coords, obj, boxes, feats):
    return {"voxels": SparseVoxels(torch.tensor(coords), torch.zeros(len(coords), 0), 2),
            "objectness": torch.tensor(obj), "boxes": torch.tensor(boxes), "head_feats": torch.tensor(feats)}


def test_terms_follow_the_formula_on_the_students_voxels_only():
    # teacher: 4 sites; the student holds 2 of them, in another order; the teacher's extra sites (huge
    # logits) must not count: p_T is renormalised over the student's sites
    teacher = _out([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], [0.5, 9.0, -1.0, 9.0],
                   [[0, 0, 0, 1, 1, 1], [5, 5, 5, 1, 1, 1], [1, 0, 0, 2, 1, 1], [5, 5, 5, 1, 1, 1]],
                   [[1.0, 0.0], [9.0, 9.0], [0.0, 1.0], [9.0, 9.0]])
    student = _out([[2, 0, 0], [0, 0, 0]], [0.2, 0.0], [[1.5, 0, 0, 2, 1, 2], [0, 0, 0, 1, 1, 1]],
                   [[0.0, 3.0], [1.0, 0.0]])
    d = self_distillation(student, teacher)
    t = torch.tensor([-1.0, 0.5])  # teacher logits at the student's sites, student order
    s = torch.tensor([0.2, 0.0])
    p_t = F.softmax(t, 0)
    torch.testing.assert_close(d["distill_sel"], F.kl_div(F.log_softmax(s, 0), F.log_softmax(t, 0),
                                                          log_target=True, reduction="sum"))
    # box error of student row 0 against teacher site 2: |1.5 - 1| / 2 on x, log 2 on dz; row 1 exact
    torch.testing.assert_close(d["distill_box"], p_t[0] * (0.25 + torch.log(torch.tensor(2.0))))
    torch.testing.assert_close(d["distill_feat"], torch.tensor(4.0 / 4))  # (3 - 1)^2 over 2 x 2 entries
    assert float(d["distill_sel"]) > 0


def test_zero_when_the_pruned_path_keeps_everything_and_gradient_reaches_the_pruned_path_only():
    vox, net = small_scene(), small_net()
    text = torch.randn(4, 24)
    teacher = net(vox, text, voxel_size=0.1, prune=False)
    same = net(vox, text, voxel_size=0.1, keep_ratios=(1.0, 1.0), cba_threshold=0.0)
    assert len(same["voxels"]) == len(teacher["voxels"])  # nothing removed, so CBA has nothing to add
    for v in self_distillation(same, teacher).values():
        assert abs(float(v.detach())) < 1e-5
    student = net(vox, text, voxel_size=0.1, keep_ratios=(0.5, 0.3), cba=False)
    d = self_distillation(student, teacher)
    assert all(float(v.detach()) > 0 for v in d.values())
    for k in ("objectness", "boxes", "head_feats"):
        teacher[k].retain_grad()
        student[k].retain_grad()
    sum(d.values()).backward()
    assert all(teacher[k].grad is None for k in ("objectness", "boxes", "head_feats"))
    assert all(student[k].grad is not None and float(student[k].grad.abs().sum()) > 0
               for k in ("objectness", "boxes", "head_feats"))
