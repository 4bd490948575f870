"""A minimal diffusers text-to-image pipeline for the APTP MNIST benchmark (no VAE: pixel space).

``MiniLMCanvasPipeline(unet, scheduler)(prompt=[...], num_inference_steps=20, generator=[...])``
embeds the prompts with the real all-MiniLM-L6-v2 (per-token states, 16 tokens) and runs DDIM;
``output_type="pt"`` returns images in [-1, 1] as a tensor ``(B, 1, 16, 32)``.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

_ENCODER = None


def encoder():
    global _ENCODER
    if _ENCODER is None:
        from prunekit_diffusion.aptp.text import PromptEncoder

        _ENCODER = PromptEncoder()
    return _ENCODER


class MiniLMCanvasPipeline(DiffusionPipeline):
    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, prompt=None, num_inference_steps: int = 20, generator=None, latents=None, output_type: str = "pt",
                 return_dict: bool = True, prompt_embeds=None):
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, _ = encoder().tokens(prompts, pad_to=16)
        h, w = self.unet.config.sample_size
        if latents is None:
            latents = randn_tensor((len(prompt_embeds), self.unet.config.in_channels, h, w), generator=generator)
        self.scheduler.set_timesteps(num_inference_steps)
        x = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            eps = self.unet(x, t, prompt_embeds).sample
            x = self.scheduler.step(eps, t, x).prev_sample
        images = x.clamp(-1, 1)
        if output_type == "np":
            images = ((images + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
