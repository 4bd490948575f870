"""Tiny offline diffusers denoisers (configs from diffusers' own tests, METHODS.md 6.3)."""

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models on a shared 2-core machine: more threads only oversubscribe
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load_script(relpath: str):
    """A module from the repository's ``scripts/`` folder (scripts are not a package)."""
    path = Path(__file__).resolve().parents[3] / "scripts" / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_unet(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=10, attention_head_dim=8).eval()


def make_cond_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=2).eval()


def make_dit(seed: int = 0, layers: int = 3):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    return DiTTransformer2DModel(sample_size=16, num_layers=layers, patch_size=4, attention_head_dim=8,
                                 num_attention_heads=2, in_channels=4, out_channels=8, norm_type="ada_norm_zero",
                                 num_embeds_ada_norm=10).eval()


def class_calib(n=4, steps=2, seed=0):
    from prunekit_diffusion.sampling import Calibration

    return Calibration(n=n, steps=steps, seed=seed, cond={"class_labels": torch.arange(n) % 10})


def text_calib(n=3, steps=2, seed=0):
    from prunekit_diffusion.sampling import Calibration

    g = torch.Generator().manual_seed(123)
    return Calibration(n=n, steps=steps, seed=seed, cond={"encoder_hidden_states": torch.randn(n, 5, 8, generator=g)})


@pytest.fixture
def unet():
    return make_unet()


@pytest.fixture
def cond_unet():
    return make_cond_unet()


@pytest.fixture
def dit():
    return make_dit()


@pytest.fixture
def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000)


def make_sd_pipeline(seed: int = 0):
    """A tiny text-to-image StableDiffusionPipeline with a real (tiny-vocabulary) CLIP tokenizer."""
    import string

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", bos_token="<|startoftext|>",
                        eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=16)
    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
                                      vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1)).eval()
    vae = AutoencoderKL(block_out_channels=[4, 8], latent_channels=4, norm_num_groups=2,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    return StableDiffusionPipeline(unet=make_cond_unet(seed), vae=vae, text_encoder=te, tokenizer=tok,
                                   scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
                                   safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)
