"""Train the `shapes` text-to-image generator: a stock diffusers StableDiffusionPipeline directory.

    python scripts/train_shapes_vae.py            # first: the VAE (build/shapes/vae)
    python scripts/train_shapes_vae.py --finetune-decoder build/shapes/vae --steps 800 --batch 32 --lr 1e-3 --seed 1 \
        --out build/shapes/vae-decoder            # optional: a sharper decoder for the same latents
    python scripts/train_shapes_generator.py      # writes diffalign/data/shapes
    python scripts/train_shapes_generator.py --steps 3 --scenes 256 --out /tmp/s   # smoke test

Stage 2 continues a trained pipeline with more relation, attribution and counting captions, half of each
batch at the noisiest 40% of timesteps (where the layout is decided), so that the model reads the
relation word (the stage-1 model placed the pair either way at random):
    python scripts/train_shapes_generator.py --init diffalign/data/shapes --vae diffalign/data/shapes/vae \
        --decoder none --steps 1200 --lr 5e-4 --category-weights position=4,color_attr=2,counting=1.5 \
        --layout-fraction 0.5 --out build/shapes-gen2

Components (all stock classes, saved with ``save_pretrained``):
- ``tokenizer``: ``CLIPTokenizer`` with BPE merges learnt on the grammar's words (:mod:`diffalign.shapes.tokenizer`);
- ``text_encoder``: a tiny ``CLIPTextModel`` (64 wide, 2 layers), trained jointly with the UNet;
- ``vae``: the ``AutoencoderKL`` from ``train_shapes_vae.py`` (32x32x3 -> 8x8x4), frozen here;
- ``unet``: a small ``UNet2DConditionModel`` on 8x8x4 latents, cross-attention only at 4x4 (and the mid block);
- ``scheduler``: ``DDIMScheduler`` with SD's scaled-linear betas, epsilon prediction.

Training: epsilon-prediction MSE on the VAE latents (times the VAE's scaling factor) of rendered scenes
whose captions come from the *training* split (no held-out composition in any caption or image), with
10% of captions replaced by "" so classifier-free guidance has an unconditional model, and an EMA of
the UNet and text-encoder weights (decay 0.999) that is what gets saved.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffalign.atomic import atomic_directory
from diffalign.shapes.captions import write_prompt_files
from diffalign.shapes.scenes import to_tensor, training_batch
from diffalign.shapes.tokenizer import load_tokenizer, write_tokenizer

SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def unet_config(cross_dim: int) -> dict:
    return dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 96), cross_attention_dim=cross_dim, attention_head_dim=32, norm_num_groups=32,
    )


def text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def encode_dataset(vae, rng, scenes: int, batch: int = 256, category_weights=None):
    """Captions and VAE posterior means/stds of ``scenes`` rendered training scenes (encoded once)."""
    captions, means, stds = [], [], []
    with torch.no_grad():
        for start in range(0, scenes, batch):
            texts, images = training_batch(rng, min(batch, scenes - start), category_weights)
            posterior = vae.encode(to_tensor(images) * 2 - 1).latent_dist
            captions += texts
            means.append(posterior.mean)
            stds.append(posterior.std)
    return captions, torch.cat(means), torch.cat(stds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--scenes", type=int, default=16000, help="rendered training scenes, encoded once")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction of captions replaced by '' (CFG)")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae", default="build/shapes/vae")
    parser.add_argument("--decoder", default="build/shapes/vae-decoder",
                        help="the VAE whose decoder was fine-tuned with the encoder frozen (train_shapes_vae.py "
                             "--finetune-decoder); shipped in the pipeline when it exists (same latents, sharper images)")
    parser.add_argument("--out", default="diffalign/data/shapes")
    parser.add_argument("--init", default=None,
                        help="a shapes pipeline directory to continue from (its UNet and text encoder; stage 2)")
    parser.add_argument("--category-weights", default=None, metavar="CAT=W,...",
                        help="draw training captions by category with these weights (others 1), e.g. position=3")
    parser.add_argument("--layout-fraction", type=float, default=0.0,
                        help="fraction of each batch whose timestep is drawn from the noisiest 40%% (where the "
                             "layout is decided; epsilon-MSE under uniform timesteps gives it little weight)")
    parser.add_argument("--layout-x0-cap", type=float, default=0.0,
                        help="weight those samples' loss by min((1 - abar) / abar, CAP), i.e. MSE on the predicted "
                             "clean latent (clipped): 0 keeps plain epsilon-MSE")
    args = parser.parse_args()
    category_weights = None
    if args.category_weights:
        category_weights = {k: float(v) for k, v in (item.split("=") for item in args.category_weights.split(","))}
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False)
    scale = vae.config.scaling_factor
    captions, means, stds = encode_dataset(vae, rng, args.scenes, category_weights=category_weights)
    print(f"encoded {len(captions)} scenes in {time.time() - start:.0f}s; scaled latent std "
          f"{(means * scale).std().item():.3f}", flush=True)

    with atomic_directory(Path(args.out)) as tmp:
        tokenizer = load_tokenizer(write_tokenizer(tmp / "tokenizer"))
        if args.init:  # stage 2: same tokenizer (the grammar's), weights from the earlier pipeline
            text_encoder = CLIPTextModel.from_pretrained(Path(args.init) / "text_encoder")
            unet = UNet2DConditionModel.from_pretrained(Path(args.init) / "unet")
        else:
            text_encoder = CLIPTextModel(text_config(tokenizer))
            unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size))
        scheduler = DDIMScheduler(**SCHEDULER)
        print(f"parameters: unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, text encoder "
              f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f}M", flush=True)
        vocabulary = sorted(set(captions)) + [""]
        token_table = tokenizer(vocabulary, padding="max_length", truncation=True, return_tensors="pt").input_ids
        caption_index = torch.tensor([vocabulary.index(c) for c in captions])
        null_index = len(vocabulary) - 1
        alphas_cumprod = scheduler.alphas_cumprod
        params = list(unet.parameters()) + list(text_encoder.parameters())
        optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=max(args.steps, 100),
                                                       pct_start=0.03)
        ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
        generator = torch.Generator().manual_seed(args.seed)
        losses = []
        train_start = time.time()
        for step in range(1, args.steps + 1):
            rows = torch.randint(len(captions), (args.batch,), generator=generator)
            latents = (means[rows] + stds[rows] * torch.randn(means[rows].shape, generator=generator)) * scale
            index = caption_index[rows].clone()
            index[torch.rand(args.batch, generator=generator) < args.dropout] = null_index
            hidden = text_encoder(token_table[index])[0]
            timesteps = torch.randint(1000, (args.batch,), generator=generator)
            layout = torch.zeros(args.batch, dtype=torch.bool)
            if args.layout_fraction > 0:  # drawn only when asked, so stage 1's command keeps its random stream
                layout = torch.rand(args.batch, generator=generator) < args.layout_fraction
                timesteps[layout] = torch.randint(600, 1000, (int(layout.sum()),), generator=generator)
            noise = torch.randn(latents.shape, generator=generator)
            abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
            predicted = unet(noisy, timesteps, encoder_hidden_states=hidden).sample
            if args.layout_x0_cap > 0:  # the x0-error of a swapped pair is large; its epsilon-error at high noise is not
                weights = torch.ones(args.batch)
                weights[layout] = ((1 - abar) / abar).view(-1)[layout].clamp(max=args.layout_x0_cap)
                loss = (weights * (predicted - noise).pow(2).mean(dim=(1, 2, 3))).mean()
            else:
                loss = F.mse_loss(predicted, noise)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                decay = min(args.ema, (1 + step) / (10 + step))
                for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                    for e, p in zip(ema.parameters(), live.parameters()):
                        e.lerp_(p, 1 - decay)
            losses.append(loss.item())
            if step % 200 == 0 or step == args.steps:
                print(f"step {step} loss {np.mean(losses[-200:]):.4f} {time.time() - train_start:.0f}s", flush=True)
        if Path(args.decoder).is_dir():
            vae = AutoencoderKL.from_pretrained(args.decoder).eval()
            print(f"pipeline VAE: {args.decoder}", flush=True)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=ema_text.eval(), tokenizer=tokenizer, unet=ema_unet.eval(),
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(tmp)
        write_prompt_files(tmp / "prompts")  # the world's train/test prompt sets travel with its model
        summary = {"steps": args.steps, "batch": args.batch, "scenes": args.scenes, "lr": args.lr, "init": args.init,
                   "category_weights": category_weights, "layout_fraction": args.layout_fraction,
                   "layout_x0_cap": args.layout_x0_cap,
                   "seconds_total": round(time.time() - start, 1), "seconds_training": round(time.time() - train_start, 1),
                   "final_loss_last200": round(float(np.mean(losses[-200:])), 4), "vae_scaling_factor": scale}
        (tmp / "training_summary.json").write_text(json.dumps(summary, indent=1))
        print("summary", json.dumps(summary), flush=True)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
