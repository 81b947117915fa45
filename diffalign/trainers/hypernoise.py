"""The ``hypernoise`` trainer: a noise hypernetwork for a frozen few-step generator.

HyperNoise (Eyring et al. 2025, arXiv:2508.09968, the noise-space KL objective): minimise over the hypernetwork f

    E_z[ ||f(z)||^2 / 2 - r(g(z + f(z))) ],        z ~ N(0, I),

the KL of the modulated noise to N(0, I) (approximated; ``exact_logdet: true`` adds the exact terms
``Tr J - log det(I + J)``, see :mod:`diffalign.noise_space`) minus the reward of the generator's
output. The generator g (``generator_steps`` Euler steps of ``model.name``) stays frozen; the reward
must be differentiable (the loss backpropagates through the reward and g into f).

The final directory is the hypernetwork (``hypernoise.json`` + safetensors; the LoRA form in diffusers'
LoRA format): sample with ``da.sample(model, sampler="hypernoise", path=DIR, steps=generator_steps)``.
"""

from __future__ import annotations

import torch

from ..kernels import Euler
from ..models.hypernetwork_forms import build_hypernetwork
from ..noise_space import batch_jacobian, hypernoise_loss, logdet_correction
from ..samplers.noise_generator import check_reward_gradient, differentiable_reward, generate
from .base import Trainer
from .hypernoise_config import HyperNoiseConfig


class HyperNoiseTrainer(Trainer):
    name = "hypernoise"
    config_class = HyperNoiseConfig

    def __init__(self, config: HyperNoiseConfig, output_dir, accelerator=None):
        super().__init__(config, output_dir, accelerator)
        self.reward = differentiable_reward(self.reward, "the hypernoise trainer")
        self.kernel = Euler()

    def _trainable_parameters(self):
        c, mc = self.config, self.config.model
        self.model.requires_grad_(False)
        options = ({"rank": mc.lora_rank, "alpha": mc.lora_alpha, "target_modules": mc.lora_target_modules, "seed": c.seed}
                   if c.form == "lora" else {"hidden": c.hidden, "layers": c.layers, "seed": c.seed})
        self.hypernetwork = build_hypernetwork(c.form, self.model, **options).to(self.accelerator.device)
        return [p for p in self.hypernetwork.parameters() if p.requires_grad]

    def trainable_module(self):
        return self.hypernetwork

    def make_micro_batch(self, step, index, generator):
        n = self.config.noises_per_micro_batch
        z = torch.randn((n, *self.model.shape), generator=generator).to(self.accelerator.device)
        return {"z": z, "cond": self.model.encode_condition(self.cond, n)}

    def compute_loss(self, batch, update):
        c = self.config
        z = batch["z"].requires_grad_(c.exact_logdet)
        offset = self.hypernetwork.offset(z, batch["cond"])
        x0 = generate(self.model, z + offset, batch["cond"], c.generator_steps, self.kernel)
        reward = self.reward(self.model.decode(x0)).reshape(-1)
        check_reward_gradient(reward, self.reward, "the hypernoise trainer")
        correction = logdet_correction(batch_jacobian(offset, z)) if c.exact_logdet else None
        loss = hypernoise_loss(offset, reward, c.reward_weight, correction)
        norms = offset.detach().flatten(1).norm(dim=1)
        metrics = {"loss": loss.item(), "reward": reward.mean().item(), "offset_norm": norms.mean().item()}
        if correction is not None:
            metrics["logdet_correction"] = correction.mean().item()
        return loss, metrics

    def write_final(self, directory):
        self.hypernetwork.save_pretrained(directory)
