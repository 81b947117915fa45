"""``AlignedPipeline``: any diffalign sampler, guidance wrapper or reward on a stock diffusers pipeline.

It borrows the pipeline's components (no copies), encodes prompts with the pipeline's own
``encode_prompt``, runs a diffalign sampler under an ``nfe`` budget on the family's denoiser, decodes
with the pipeline's VAE and returns what the stock pipeline returns (``output_type`` pil/np/pt/latent,
``return_dict``), with diffusers' argument names::

    pipe = StableDiffusionPipeline.from_pretrained(...)
    aligned = da.AlignedPipeline.from_pipe(pipe, sampler="dts", reward="compressibility")
    images = aligned(prompt="a cat", nfe=20_000, num_inference_steps=50).images

A list of prompts runs as one prompt-set call of the sampler (design.md §3b): rows of all prompts share
model calls, each image's reward sees its own prompt, ``nfe`` is the budget **per prompt** and prompt i
is seeded ``seed + i``. The sampler's full output (rewards, NFE, info, ``prompts``) of the last call is
kept in ``aligned.last_outputs``: one :class:`SampleOutput` for a prompt-set call, or one per prompt
when prompts must run separately (a negative prompt per prompt, ``prompt_embeds``, ``latents``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..errors import DiffalignError
from ..models.denoiser import Denoiser
from ..models.wrappers import CFGDenoiser, NFECounter
from ..prompting import prompt_scope
from ..rewards.prompted import PromptBoundReward
from .attention import enable_attention
from .families import family_of
from .family import PipelineFamily
from .prompts import PromptCondition

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def denoiser_from_pipe(pipe, height: Optional[int] = None, width: Optional[int] = None,
                       num_frames: Optional[int] = None, guidance_scale: Optional[float] = None) -> Denoiser:
    """The family's :class:`Denoiser` on ``pipe``'s own modules, with prompt conditioning when the
    pipeline has text encoders (``cond="a prompt"``) and the pipeline's time grid."""
    family = family_of(pipe)
    model = family.denoiser(pipe, height, width, num_frames, guidance_scale)
    if _has_text_encoder(pipe):
        model.condition_encoder = PromptCondition(pipe, family, model.shape)
    return model


def _has_text_encoder(pipe) -> bool:
    return any(name.startswith("text_encoder") and module is not None for name, module in pipe.components.items())


class AlignedPipeline:
    """A diffusers pipeline whose denoising loop is a diffalign sampler. Build with :meth:`from_pipe`."""

    def __init__(self, pipe, sampler: Any = "ancestral", reward: Any = None,
                 wrapper: Optional[Callable[[Denoiser], Denoiser]] = None, **sampler_options):
        from .. import samplers
        from ..rewards import as_reward
        from ..samplers.base import Sampler

        self.pipe = pipe
        self.family: PipelineFamily = family_of(pipe)
        if isinstance(sampler, Sampler):
            if sampler_options:
                raise DiffalignError("pass sampler options to the sampler you built, not to from_pipe")
            self.sampler = sampler
        else:
            self.sampler = samplers.get(sampler, **sampler_options)
        self.reward = None if reward is None else as_reward(reward)
        self.wrapper = wrapper
        self.last_outputs: list = []

    @classmethod
    def from_pipe(cls, pipe, sampler: Any = "ancestral", reward: Any = None, attention: Optional[str] = None,
                  wrapper: Optional[Callable[[Denoiser], Denoiser]] = None, **sampler_options) -> "AlignedPipeline":
        """Wrap ``pipe``, sharing its components.

        Args:
            sampler: a registered sampler name (``da.samplers.names()``) or a :class:`Sampler`.
            reward: a reward name, a registered reward or any callable images -> (B,).
            attention: "sdpa" (default) or "xformers" (the ``xformers`` extra, CUDA only).
            wrapper: applied to the (CFG-guided) denoiser of each call, e.g.
                ``lambda model: da.RewardGuidance(model, reward, scale=2.0)``.
            sampler_options: the sampler's options (e.g. ``lam=2.0`` for dts).
        """
        enable_attention(pipe, attention)
        return cls(pipe, sampler, reward, wrapper, **sampler_options)

    @property
    def components(self) -> dict:
        return self.pipe.components

    def __getattr__(self, name):  # unet, vae, scheduler, text_encoder... are the pipeline's own
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def denoiser(self, height=None, width=None, num_frames=None, guidance_scale=None) -> Denoiser:
        return denoiser_from_pipe(self.pipe, height, width, num_frames, guidance_scale)

    def __call__(
        self,
        prompt: Optional[str | list[str]] = None,
        negative_prompt: Optional[str | list[str]] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        num_images_per_prompt: int = 1,
        height: Optional[int] = None,
        width: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        nfe: Optional[int] = None,
        seed: Optional[int] = None,
        num_frames: Optional[int] = None,
        true_cfg_scale: float = 1.0,
        **embeddings,
    ):
        """Generate like the stock pipeline; ``nfe`` is the budget **per prompt** (design.md §3b).

        ``prompt_embeds`` & co. (the family's ``encode_prompt`` argument names) replace ``prompt``.
        ``latents`` (initial noise, the stock layout) is honoured by the ``ancestral`` sampler, which then
        reproduces the stock pipeline's loop; search samplers draw their own noise from ``seed``/``generator``.
        """
        family = self.family
        unknown = set(embeddings) - set(family.embedding_arguments)
        if unknown:
            raise DiffalignError(f"unknown argument(s) {sorted(unknown)} for a {family.name} pipeline; valid "
                                 f"embedding arguments: {', '.join(family.embedding_arguments)}")
        if output_type not in OUTPUT_TYPES:
            raise DiffalignError(f"unknown output_type {output_type!r}; valid choices: {', '.join(OUTPUT_TYPES)}")
        steps = family.default_steps if num_inference_steps is None else num_inference_steps
        scale = family.default_guidance if guidance_scale is None else float(guidance_scale)
        cfg_scale = true_cfg_scale if getattr(family, "guidance_is_distilled", False) else scale
        model = self.denoiser(height, width, num_frames, scale)
        jobs = self._jobs(prompt, negative_prompt, embeddings)
        budget = nfe
        base_seed = self._seed(seed, generator)
        device = self.pipe._execution_device
        samples, self.last_outputs = [], []
        if self._one_prompt_set_call(jobs, negative_prompt, latents, model):
            # one null condition serves every prompt, so all prompts' rows can share model calls
            _, null = family.encode_prompt(self.pipe, jobs[0][0], jobs[0][1], 1, cfg_scale > 1.0, device, model.shape)
            guided = CFGDenoiser(model, cfg_scale, null_cond=null) if cfg_scale > 1.0 else model
            if self.wrapper is not None:
                guided = self.wrapper(guided)
            out = self.sampler.sample(guided, self.reward, num_samples=num_images_per_prompt, nfe=budget, steps=steps,
                                      seed=base_seed, prompts=[job[0] for job in jobs])
            self.last_outputs.append(out)
            jobs = []
            samples.append(out.samples)
        for index, (one_prompt, one_negative, one_embeddings) in enumerate(jobs):
            cond, null = family.encode_prompt(self.pipe, one_prompt, one_negative, 1, cfg_scale > 1.0, device,
                                              model.shape, **one_embeddings)
            guided = CFGDenoiser(model, cfg_scale, null_cond=null) if cfg_scale > 1.0 else model
            if self.wrapper is not None:
                guided = self.wrapper(guided)
            if latents is not None:
                if latents.shape[0] != len(jobs) * num_images_per_prompt:
                    raise DiffalignError(f"latents have {latents.shape[0]} rows; expected {len(jobs)} prompts x "
                                         f"{num_images_per_prompt} images per prompt")
                rows = slice(index * num_images_per_prompt, (index + 1) * num_images_per_prompt)
                out = self._from_latents(guided, latents[rows], cond, steps, base_seed + index, budget, one_prompt)
            else:
                reward = self.reward
                if reward is not None and one_prompt is not None:
                    reward = PromptBoundReward(reward, one_prompt)  # each image's reward sees its own prompt
                with prompt_scope(one_prompt):
                    out = self.sampler.sample(guided, reward, num_samples=num_images_per_prompt, nfe=budget,
                                              steps=steps, seed=base_seed + index, cond=cond)
            self.last_outputs.append(out)
            samples.append(out.samples)
        x0 = torch.cat(samples)
        if output_type == "latent":
            images = family.pack_latents(x0)
        else:
            with torch.no_grad():
                images = family.postprocess(self.pipe, model.decode(x0), output_type)
        return family.output(self.pipe, images, return_dict)

    @staticmethod
    def _one_prompt_set_call(jobs, negative_prompt, latents, model) -> bool:
        """Whether the call can run as one prompt-set call: text prompts, one shared negative prompt,
        sampler-drawn noise, and a denoiser that encodes prompts itself."""
        return (latents is None and all(job[0] is not None and not job[2] for job in jobs)
                and (negative_prompt is None or isinstance(negative_prompt, str))
                and getattr(model, "condition_encoder", None) is not None)

    def _jobs(self, prompt, negative_prompt, embeddings) -> list[tuple]:
        """One (prompt, negative prompt, embeddings) per prompt of the call."""
        if prompt is None:
            first = embeddings.get("prompt_embeds")
            if first is None:
                raise DiffalignError("give prompt= (a string or a list of strings) or prompt_embeds=")
            rows = first.shape[0]
            return [(None, negative_prompt, {k: v[i:i + 1] for k, v in embeddings.items()}) for i in range(rows)]
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if negative_prompt is None or isinstance(negative_prompt, str):
            negatives = [negative_prompt] * len(prompts)
        else:
            negatives = list(negative_prompt)
            if len(negatives) != len(prompts):
                raise DiffalignError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
        return [(p, n, {}) for p, n in zip(prompts, negatives)]

    @staticmethod
    def _seed(seed: Optional[int], generator: Optional[torch.Generator]) -> int:
        if seed is not None:
            return int(seed)
        if isinstance(generator, (list, tuple)):  # diffusers also takes one generator per image
            generator = generator[0] if generator else None
        if generator is not None:
            return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
        return 0

    def _from_latents(self, model, latents, cond, steps, seed, budget, prompt=None):
        """The stock loop from given initial noise (ancestral sampler only)."""
        from ..samplers.base import SampleOutput
        from ..samplers.rollout import evaluate_reward, resolve_kernel, rollout

        if self.sampler.name != "ancestral":
            raise DiffalignError(f"latents= is used by the 'ancestral' sampler only; {self.sampler.name!r} draws "
                                 "its own noise (pass seed= or generator=)")
        x = self.family.unpack_latents(self.pipe, latents, *self._image_size(model, latents)).to(model.device, model.dtype)
        if tuple(x.shape[1:]) != model.shape:
            raise DiffalignError(f"latents of shape {tuple(latents.shape)} do not fit height/width/num_frames (model "
                                 f"space {model.shape}); pass the height and width the latents were drawn for")
        counter = NFECounter(model, budget)
        kernel = resolve_kernel(model, self.sampler.kernel, **self.sampler.kernel_options)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            encoded = model.encode_condition(cond, x.shape[0])
            x0 = rollout(counter, x, model.schedule.time_grid(steps), kernel, encoded, generator)
            prompts = None if prompt is None else [prompt] * x0.shape[0]
            rewards = None if self.reward is None else evaluate_reward(self.reward, model, x0, x0.shape[0], prompts)
        return SampleOutput(x0, rewards, counter.count, {"kernel": repr(kernel)})

    def _image_size(self, model, latents) -> tuple[int, int]:
        factor = self.family.vae_scale_factor(self.pipe)
        return model.shape[-2] * factor, model.shape[-1] * factor
