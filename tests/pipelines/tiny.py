"""Tiny random diffusers pipelines built from configs (diffusers-test style): no hub, seconds on a CPU.

Text encoders and tokenizers are real transformers classes; the CLIP tokenizer's vocabulary (one token
per byte, no merges) is written to disk by :func:`write_clip_tokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_DIM = 16
POOLED_DIM = 16
TOKENS = 8


def write_clip_tokenizer(directory: Path):
    """A byte-level CLIP BPE tokenizer with no merges, saved to and loaded from ``directory``."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # byte-level BPE alphabet: printable bytes map to themselves, the others to code points from 256 on
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " " and b < 127 or 161 <= b != 173]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), model_max_length=TOKENS)
    tokenizer.save_pretrained(str(directory))
    return CLIPTokenizer.from_pretrained(str(directory))


def clip_text_encoder(vocab_size: int, with_projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=TOKENS, projection_dim=POOLED_DIM // (2 if with_projection else 1),
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 8], layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16,
    ).eval()


def tiny_unet(sdxl: bool = False, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=4,
                 projection_class_embeddings_input_dim=6 * 4 + POOLED_DIM) if sdxl else {}
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM * (2 if sdxl else 1), attention_head_dim=4, norm_num_groups=4, **extra,
    ).eval()


def tiny_sd3_transformer(seed: int = 0):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM * 2, caption_projection_dim=16,
        pooled_projection_dim=POOLED_DIM, pos_embed_max_size=8,
    ).eval()


def tiny_flux_transformer(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
    ).eval()


def tiny_wan_transformer(seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=TEXT_DIM, freq_dim=16, ffn_dim=16, num_layers=1, rope_max_seq_len=32,
    ).eval()


def sd_pipeline(tmp_path=None, prediction_type: str = "epsilon", with_text: bool = True, with_vae: bool = True):
    """SD1.5-style pipeline: UNet + DDIM + (VAE, CLIP text encoder and tokenizer)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tokenizer = write_clip_tokenizer(Path(tmp_path) / "tokenizer-files") if with_text else None
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type=prediction_type,
    )
    return StableDiffusionPipeline(
        vae=tiny_vae() if with_vae else None,
        text_encoder=clip_text_encoder(len(tokenizer)) if with_text else None, tokenizer=tokenizer,
        unet=tiny_unet(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def sd3_pipeline(tmp_path=None, with_text: bool = True, with_vae: bool = True):
    """SD3-style pipeline: MMDiT + FlowMatch Euler + (VAE, two CLIP encoders; no T5: zeros, as diffusers allows)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    tokenizers = [write_clip_tokenizer(Path(tmp_path) / f"tokenizer-{i}") for i in range(2)] if with_text else [None, None]
    encoders = ([clip_text_encoder(len(tokenizers[0]), True, seed=i) for i in range(2)] if with_text else [None, None])
    vae = None
    if with_vae:
        vae = tiny_vae()
        vae.register_to_config(shift_factor=0.1, scaling_factor=1.5)
    return StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=encoders[0], tokenizer=tokenizers[0], text_encoder_2=encoders[1], tokenizer_2=tokenizers[1],
        text_encoder_3=None, tokenizer_3=None,
    )


def sdxl_pipeline():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=tiny_unet(sdxl=True),
        scheduler=scheduler, add_watermarker=False,
    )


def flux_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=None, text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tiny_flux_transformer(),
    )


def tiny_wan_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                            latents_std=[1.5, 0.5, 2.0, 1.0]).eval()


def wan_pipeline(with_vae: bool = False):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(tokenizer=None, text_encoder=None, vae=tiny_wan_vae() if with_vae else None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), transformer=tiny_wan_transformer())
