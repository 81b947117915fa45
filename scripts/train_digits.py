"""Train the embedded `digits` model: SD-style UNet2DConditionModel, eps-prediction, DDPM schedule.

    python scripts/train_digits.py                      # writes diffalign/data/digits
    python scripts/train_digits.py --steps 3 --tiny --out /tmp/d   # smoke test
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from diffalign.atomic import atomic_directory
from diffalign.models.class_condition import ClassEmbeddingCondition
from diffalign.models.digits import DDPM_BETAS, NUM_CLASSES, PROMPT_DIM, PROMPT_TOKENS, unet_config
from diffalign.schedules import VPSchedule
from digits_training import Conditioned, output_dir, parse_args, train


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "diffalign/data/digits", default_steps=4000)
    torch.manual_seed(args.seed)
    scheduler = DDPMScheduler(**DDPM_BETAS, prediction_type="epsilon")
    schedule = VPSchedule.from_scheduler(scheduler)
    T = schedule.num_train_timesteps
    model = Conditioned(
        UNet2DConditionModel(**unet_config(args.tiny)),
        ClassEmbeddingCondition(NUM_CLASSES, {"encoder_hidden_states": (PROMPT_TOKENS, PROMPT_DIM)}),
    )

    def eps_loss(unet, x0, cond, generator):
        k = torch.randint(T, (x0.shape[0],), generator=generator)
        t = (k + 1).double() / T  # diffusers index k <-> t = (k + 1) / T
        noise = torch.randn(x0.shape, generator=generator)
        xt = schedule.add_noise(x0, noise, t)
        pred = unet(xt, schedule.model_timestep(t).float(), encoder_hidden_states=cond["encoder_hidden_states"]).sample
        return torch.nn.functional.mse_loss(pred, noise)

    trained = train(model, eps_loss, args)
    with atomic_directory(output_dir(args)) as tmp:
        trained.network.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        trained.condition.save_pretrained(tmp)
    print(f"saved {output_dir(args)}")


if __name__ == "__main__":
    main()
