"""save_pretrained / load_pretrained round trips and bad folders."""

import json

import pytest
import torch
from .conftest import tiny_config

from prunekit.errors import InputError, UsageError
from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.persist import CONFIG_NAME, load_pretrained, save_pretrained
from prunekit_tokens.tasks import MaskTask, ViTSegmenter


def test_roundtrip_transformers_identical_outputs(vit_cls, images, tmp_path):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10, qk_proj=True)
    with torch.no_grad():
        for m in red.cropr:
            m.queries.normal_()
    red.eval()
    red.remove_aux_heads()
    ref = vit_cls(pixel_values=images).logits
    save_pretrained(vit_cls, red, tmp_path / "m")
    model2, red2 = load_pretrained(tmp_path / "m")
    assert type(model2).__name__ == "ViTForImageClassification"
    out = model2(pixel_values=images).logits
    assert torch.equal(out, ref)
    assert red2.token_counts == red.token_counts == [17, 14, 11, 8]
    assert not red2.has_aux_heads


def test_roundtrip_keeps_aux_heads_when_not_removed(vit_cls, tmp_path):
    red = attach_cropr(vit_cls, prune_count=2, aux_out=10)
    save_pretrained(vit_cls, red, tmp_path)
    _, red2 = load_pretrained(tmp_path)
    assert red2.has_aux_heads
    for (n1, p1), (n2, p2) in zip(red.state_dict().items(), red2.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_roundtrip_state_dict_backbone_with_llf(tmp_path, images):
    from transformers import ViTModel

    torch.manual_seed(0)
    task = MaskTask(2, (4, 4), 8)
    seg = ViTSegmenter(ViTModel(tiny_config(), add_pooling_layer=False), task).eval()
    red = attach_cropr(seg, prune_count=3, llf=True, num_queries=task.num_queries, aux_out=task.aux_out).eval()
    ref = seg(images)
    assert ref.shape == (3, 2, 32, 32)
    save_pretrained(seg, red, tmp_path)
    with pytest.raises(UsageError, match="pass model="):
        load_pretrained(tmp_path)
    torch.manual_seed(1)
    fresh = ViTSegmenter(ViTModel(tiny_config(), add_pooling_layer=False), task)
    seg2, red2 = load_pretrained(tmp_path, model=fresh)
    assert torch.equal(seg2(images), ref)


def test_bad_config_files(tmp_path, vit_cls):
    with pytest.raises(InputError, match="no such file"):
        load_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="'format'"):
        load_pretrained(tmp_path)
    red = attach_cropr(vit_cls, prune_count=2)
    save_pretrained(vit_cls, red, tmp_path)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["config"]["prune_count"] = -4
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="'config' is invalid"):
        load_pretrained(tmp_path)
    meta["config"]["prune_count"] = 2
    meta["config"]["num_queries"] = 3  # weights were saved with one query
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not fit"):
        load_pretrained(tmp_path)
    (tmp_path / "cropr.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cropr.safetensors"):
        load_pretrained(tmp_path)
