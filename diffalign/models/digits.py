"""Architectures of the embedded digits models (sizes chosen for <= 300 us/sample on 2 CPU threads).

Both use the diffusers classes of the families they stand in for, so the embedded default exercises
the real SD1.5 (UNet2DConditionModel, eps) and SD3 (SD3Transformer2DModel, flow) code paths.
"""

from __future__ import annotations

NUM_CLASSES = 10
PROMPT_TOKENS = 4
PROMPT_DIM = 32
POOLED_DIM = 32
DDPM_BETAS = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)


def unet_config(tiny: bool = False) -> dict:
    """SD-style UNet: cross-attention to the class "prompt" in the low-resolution block and the middle."""
    return dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16) if tiny else (16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=PROMPT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def transformer_config(tiny: bool = False) -> dict:
    """SD3-style MMDiT on 2x2 patches (16 image tokens + 4 prompt tokens)."""
    return dict(
        sample_size=8,
        patch_size=2,
        in_channels=1,
        out_channels=1,
        num_layers=1 if tiny else 4,
        attention_head_dim=8 if tiny else 32,
        num_attention_heads=2,
        joint_attention_dim=PROMPT_DIM,
        caption_projection_dim=16 if tiny else 64,
        pooled_projection_dim=POOLED_DIM,
        pos_embed_max_size=8,
    )
