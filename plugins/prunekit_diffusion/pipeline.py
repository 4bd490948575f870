"""``ClassConditionalPipeline``: a minimal diffusers pipeline for class-conditional pixel/latent denoisers.

diffusers ships no pipeline for a class-conditional ``UNet2DModel`` (``DDPMPipeline``
is unconditional) and ``DiTPipeline`` always decodes through a VAE. This pipeline
wraps any denoiser that :func:`~prunekit_diffusion.sampling.denoise` can call plus a
scheduler, saves/loads with the usual ``save_pretrained`` / ``from_pretrained`` and
generates with the usual call::

    pipe = ClassConditionalPipeline(denoiser=unet, scheduler=DDIMScheduler())
    images = pipe(class_labels=[3, 7], num_inference_steps=20, generator=gens).images

Images are returned in ``[0, 1]`` (``output_type="pt"`` or ``"np"``) or as raw final
latents (``output_type="latent"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from .sampling import Calibration, sample_latents


@dataclass
class ClassConditionalOutput(BaseOutput):
    images: Any


class ClassConditionalPipeline(DiffusionPipeline):
    """Class-conditional sampling with any supported denoiser (``denoiser``) and scheduler."""

    model_cpu_offload_seq = "denoiser"

    def __init__(self, denoiser, scheduler):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, class_labels: Sequence[int] | torch.Tensor, num_inference_steps: int = 20,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None, seed: int = 0,
                 guidance_scale: float = 1.0, null_class: int | None = None, batch_size: int = 64,
                 output_type: str = "pt", return_dict: bool = True):
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        n = labels.numel()
        if isinstance(generator, torch.Generator):
            if n != 1:
                raise ValueError("pass one generator per sample (a list), or a seed")
            generator = [generator]
        uncond = None
        if guidance_scale != 1.0:
            if null_class is None:
                from .api import null_class as model_null_class

                null_class = model_null_class(self.denoiser)
            if null_class is None:
                raise ValueError("guidance_scale != 1 needs null_class (the label of the unconditional class)")
            uncond = {"class_labels": torch.full_like(labels, null_class)}
        calib = Calibration(n=n, steps=num_inference_steps, seed=seed, batch_size=batch_size,
                            cond={"class_labels": labels}, uncond=uncond, guidance_scale=guidance_scale)
        self.denoiser.eval()
        x = sample_latents(self.denoiser, self.scheduler, calib,
                           generators=list(generator) if generator is not None else None)
        if output_type == "latent":
            images = x
        else:
            images = (x / 2 + 0.5).clamp(0, 1)
            if output_type == "np":
                images = images.permute(0, 2, 3, 1).float().numpy()
            elif output_type != "pt":
                raise ValueError(f"output_type must be 'pt', 'np' or 'latent', got {output_type!r}")
        if not return_dict:
            return (images,)
        return ClassConditionalOutput(images=images)
