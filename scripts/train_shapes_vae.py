"""Train the `shapes` VAE: diffusers AutoencoderKL, 32x32x3 images -> 8x8x4 latents, on rendered scenes.

    python scripts/train_shapes_vae.py                        # writes build/shapes/vae (the generator script reads it)
    python scripts/train_shapes_vae.py --steps 3 --out /tmp/v  # smoke test
    python scripts/train_shapes_vae.py --finetune-decoder build/shapes/vae --steps 800 --out build/shapes/vae-decoder
        # second stage: sharpen the decoder with the encoder frozen, so latents (and a generator trained on
        # them) stay valid; the generator script copies this decoder into the pipeline when it exists

Loss: MSE in [-1, 1] pixel units plus a small KL weight (1e-6, as in the feasibility notes): the latents
stay close to deterministic, and the scaling factor is chosen from their measured std (printed and
stored in the VAE config) so that the diffusion model sees unit-variance latents.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from diffusers import AutoencoderKL

from diffalign.shapes.scenes import sample_scenes, render_batch, to_tensor, training_batch
from diffalign.shapes.captions import evaluation_captions

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="build/shapes/vae")
    parser.add_argument("--finetune-decoder", default=None, metavar="VAE_DIR",
                        help="start from this VAE, freeze its encoder, train the decoder on its latents (MSE + L1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.finetune_decoder:
        vae = AutoencoderKL.from_pretrained(args.finetune_decoder)
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        scaling = vae.config.scaling_factor  # latents do not change: keep the generator's scale
    else:
        vae = AutoencoderKL(**VAE_CONFIG)
    print(f"VAE parameters: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M", flush=True)
    optimiser = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=max(args.steps, 100), pct_start=0.05)
    start = time.time()
    for step in range(1, args.steps + 1):
        _, images = training_batch(rng, args.batch)
        x = to_tensor(images) * 2 - 1
        if args.finetune_decoder:
            with torch.no_grad():
                posterior = vae.encode(x).latent_dist
        else:
            posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        kl = posterior.kl().mean()
        loss = mse + args.kl * kl
        if args.finetune_decoder:  # L1 keeps edges sharper than MSE alone (small triangles blur into blobs)
            loss = loss + 0.1 * (recon - x).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step} mse {mse.item():.5f} kl {kl.item():.1f} {time.time() - start:.0f}s", flush=True)
    vae.eval()
    # held-out evaluation on the test captions' renders (a different seed from training)
    scenes = sample_scenes(evaluation_captions(), seed=12345)
    x = to_tensor(render_batch(scenes)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode()
        recon = vae.decode(latents).sample
    held_out_mse = torch.nn.functional.mse_loss(recon, x).item()
    if not args.finetune_decoder:
        scaling = 1.0 / latents.std().item()
        vae.register_to_config(scaling_factor=round(scaling, 4))
    vae.save_pretrained(args.out)
    summary = {"steps": args.steps, "seconds": round(time.time() - start, 1), "final_train_mse": round(mse.item(), 5),
               "held_out_mse": round(held_out_mse, 5), "latent_mean": round(latents.mean().item(), 4),
               "latent_std": round(latents.std().item(), 4), "scaling_factor": round(scaling, 4)}
    (__import__("pathlib").Path(args.out) / "training_summary.json").write_text(json.dumps(summary, indent=1))
    print("summary", json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
