import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402


def tiny_config(**kw):
    from transformers import ViTConfig

    args = dict(image_size=32, patch_size=8, num_channels=1, hidden_size=32, num_hidden_layers=4,
                num_attention_heads=2, intermediate_size=64, num_labels=10,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    args.update(kw)
    return ViTConfig(**args)


@pytest.fixture
def vit_cls():
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(tiny_config()).eval()


@pytest.fixture
def images():
    return torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
