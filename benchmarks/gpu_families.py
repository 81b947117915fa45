"""Samplers on full-size SD1.5 and SD3-medium architectures (random weights) through AlignedPipeline, on CUDA.

    python benchmarks/gpu_families.py [--quick] [--rows 8] [--steps 28]     # needs a CUDA device
    python benchmarks/gpu_families.py --smoke                                # tiny configs on the CPU (a test)

Builds the networks and VAEs from their published configs with random weights (nothing is
downloaded; prompt embeddings are random tensors of the real shapes), wraps each stock pipeline with
``da.AlignedPipeline.from_pipe`` and measures, at 512 px and the same number of rows per network call
for every sampler: wall time, NFE, microseconds per NFE, per-step latency (one network call on
``rows`` rows) and peak CUDA memory, for ancestral, best-of-n, SIR and DTS. With the xformers extra
installed, ancestral runs again with ``attention="xformers"``. Without CUDA (and without --smoke) it
prints why it skipped and a RESULT line, and writes no results file; --smoke writes none either.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402

# Published architectures (diffusers configs of runwayml SD1.5 and stabilityai SD3-medium).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215,
)
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
SD3_VAE = dict(SD_VAE, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
               use_post_quant_conv=False)
# Tiny stand-ins with the same structure, for the CPU smoke mode.
TINY = {
    "unet": dict(SD15_UNET, sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                 cross_attention_dim=16, attention_head_dim=4),
    "sd_vae": dict(SD_VAE, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=16,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
    "sd3": dict(SD3_TRANSFORMER, sample_size=8, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
                pos_embed_max_size=8),
    "sd3_vae": dict(SD3_VAE, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                    sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
}


def build(family: str, smoke: bool, device, dtype):
    """(pipeline, prompt-embedding kwargs) for 'sd15' or 'sd3' with random weights."""
    from diffusers import (AutoencoderKL, DDIMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline, StableDiffusionPipeline, UNet2DConditionModel)

    torch.manual_seed(0)
    if family == "sd15":
        unet = UNet2DConditionModel(**(TINY["unet"] if smoke else SD15_UNET))
        vae = AutoencoderKL(**(TINY["sd_vae"] if smoke else SD_VAE))
        scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        width = unet.config.cross_attention_dim
        embeds = {"prompt_embeds": torch.randn(1, 77, width), "negative_prompt_embeds": torch.randn(1, 77, width)}
    else:
        transformer = SD3Transformer2DModel(**(TINY["sd3"] if smoke else SD3_TRANSFORMER))
        vae = AutoencoderKL(**(TINY["sd3_vae"] if smoke else SD3_VAE))
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=None,
            tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        )
        cfg = transformer.config
        embeds = {
            "prompt_embeds": torch.randn(1, 333, cfg.joint_attention_dim),
            "negative_prompt_embeds": torch.randn(1, 333, cfg.joint_attention_dim),
            "pooled_prompt_embeds": torch.randn(1, cfg.pooled_projection_dim),
            "negative_pooled_prompt_embeds": torch.randn(1, cfg.pooled_projection_dim),
        }
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, {k: v.to(device=device, dtype=dtype) for k, v in embeds.items()}


def methods(rows: int, steps: int, branch_every: int):
    """(label, sampler, options, num_images, nfe) with ``rows`` rows in every network call (CFG doubles them)."""
    rollout = steps * 2  # CFG: two passes per step
    return [
        ("ancestral", "ancestral", {"batch_size": rows}, rows, None),
        ("best-of-n (n=4)", "best-of-n", {"batch_size": rows, "n": 4}, rows // 4 or 1, (rows // 4 or 1) * 4 * rollout),
        ("sir (4 rollouts/sample)", "sir", {"batch_size": rows}, rows // 4 or 1, rows * rollout),
        ("dts", "dts", {"leaves_per_iteration": rows, "branch_every": branch_every}, rows // 4 or 1, rows * rollout),
        # a forest: 4 narrow trees (rows / 4 in flight each) whose rows share every network call
        ("dts-star forest (4 trees)", "dts-star", {"leaves_per_iteration": max(1, rows // 4), "trees_per_prompt": 4,
                                                   "branch_every": branch_every, "max_rows": 2 * rows}, 1, rows * rollout),
    ]


def run(args) -> None:
    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.float16
    size = 16 if smoke else 512
    steps = 2 if smoke else (10 if args.quick else args.steps)
    rows = 4 if smoke else args.rows
    table, results = [], {}
    backends = ["sdpa"] + (["xformers"] if not smoke and _has_xformers() else [])
    for family in ("sd15", "sd3"):
        pipe, embeds = build(family, smoke, device, dtype)
        for label, sampler, options, images, nfe in methods(rows, steps, max(1, steps // 5)):
            for backend in backends if sampler == "ancestral" else ["sdpa"]:
                aligned = da.AlignedPipeline.from_pipe(pipe, sampler=sampler, reward="compressibility", progress=False,
                                                       attention=None if backend == "sdpa" else backend, **options)
                call = dict(num_inference_steps=steps, guidance_scale=5.0, num_images_per_prompt=images, height=size,
                            width=size, nfe=nfe, output_type="pt", seed=0, **embeds)
                aligned(**call)  # warm-up (kernels, allocator, cuDNN autotuning): the same call
                if not smoke:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                aligned(**call)
                if not smoke:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                spent = aligned.last_outputs[0].nfe
                calls = spent / (2 * rows)  # network calls on `rows` rows each; CFG's doubled batch: 2 NFE a row
                peak = torch.cuda.max_memory_allocated() / 2**30 if not smoke else float("nan")
                name = f"{family} {label}" + (f" [{backend}]" if backend != "sdpa" else "")
                table.append([family, label, backend, size, rows, spent, f"{seconds:.2f}", f"{seconds / spent * 1e6:.0f}",
                              f"{seconds / calls * 1e3:.1f}", f"{peak:.2f}"])
                results[f"{family}_{sampler}_{backend}_us_per_nfe".replace("-", "_")] = f"{seconds / spent * 1e6:.0f}"
                print(f"{name}: {spent} NFE in {seconds:.2f} s ({seconds / spent * 1e6:.0f} us/NFE), peak {peak:.2f} GiB")
        del pipe
        if not smoke:
            torch.cuda.empty_cache()
    gpu = "CPU smoke (tiny configs)" if smoke else torch.cuda.get_device_name(0)
    if smoke:  # checks the script end to end; its timings mean nothing, so no results file
        common.result_line("gpu_families", device="cpu_smoke", **results)
        return
    path = common.write_markdown(
        "gpu_families", f"Samplers on full-size diffusers families ({gpu})", table,
        ["family", "sampler", "attention", "px", "rows/call", "NFE", "s", "us / NFE", "ms / step", "peak GiB"],
        f"`python benchmarks/gpu_families.py{' --quick' if args.quick else ''}`: random "
        f"weights in the published SD1.5 / SD3-medium architectures (fp16), CFG 5.0, "
        f"{steps} steps, {rows} rows per network call; 'ms / step' is one network call of {rows} rows.",
        args.quick,
    )
    print(f"wrote {path}")
    common.result_line("gpu_families", device=gpu.replace(" ", "_"), **results)


def _has_xformers() -> bool:
    import importlib.util

    return importlib.util.find_spec("xformers") is not None


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny configs on the CPU (checks the script, measures nothing)")
    p.add_argument("--rows", type=int, default=8, help="rows per network call for every sampler")
    p.add_argument("--steps", type=int, default=28, help="denoising steps")
    args = p.parse_args()
    common.setup(args)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_families: skipped: no CUDA device on this machine (use --smoke for the CPU check)")
        common.result_line("gpu_families", status="skipped", reason="no_cuda")
        return
    run(args)


if __name__ == "__main__":
    main()
