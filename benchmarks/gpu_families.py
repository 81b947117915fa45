"""Samplers (AlignedPipeline) and a GRPO LoRA training step on full-size SD1.5 / SD3-medium architectures
(random weights), on CUDA.

    python benchmarks/gpu_families.py [--quick] [--rows 8] [--steps 28] [--train-steps 3]   # needs a CUDA device
    python benchmarks/gpu_families.py --smoke                                # tiny configs on the CPU (a test)

Builds the networks and VAEs from their published configs with random weights (nothing is
downloaded; prompt embeddings are random tensors of the real shapes), wraps each stock pipeline with
``da.AlignedPipeline.from_pipe`` and measures, at 512 px and the same number of rows per network call
for every sampler: wall time, NFE, microseconds per NFE, per-step latency (one network call on
``rows`` rows) and peak CUDA memory, for ancestral, best-of-n, SIR and DTS. With the xformers extra
installed, ancestral runs again with ``attention="xformers"``.

The **training row** runs the real GRPO trainer (``diffalign.trainers``, LoRA rank 32 / alpha 64 as Flow-GRPO,
bf16 autocast, 10 rollout steps, every stochastic step trained, one group of ``rows`` rollouts) on the
full-size SD3-medium transformer and VAE (random weights, written to a temporary model directory that
``model.name`` points at; 512 px, so ``sample_size`` 64; random prompt embeddings as ``model.cond``) and
measures ``Trainer.train_step()``: synchronised wall time averaged over a few steps after one warm-up step,
and peak CUDA memory (``torch.cuda.max_memory_allocated``) over those steps. It runs once with
``train.sharding: none`` and once with ``train.sharding: fsdp``; on one process the trainer does not shard
(``Trainer.sharded`` is False: FSDP2 needs several processes, and ``torchrun`` with one process is the same
single process), so that row is reported as unsharded and not measured twice.

Without CUDA (and without --smoke) it prints why it skipped and a RESULT line, and writes no results file;
--smoke runs everything, the training row included, at tiny size on the CPU and writes none either.
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


def sd3_modules(smoke: bool, sample_size: int | None = None):
    """(transformer, VAE, scheduler) of SD3-medium (or its tiny stand-in) with random weights; ``sample_size``
    (latent pixels) overrides the config's default resolution, which sets the denoiser's sample shape."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    config = dict(TINY["sd3"] if smoke else SD3_TRANSFORMER)
    if sample_size is not None:
        config["sample_size"] = sample_size
    transformer = SD3Transformer2DModel(**config)
    vae = AutoencoderKL(**(TINY["sd3_vae"] if smoke else SD3_VAE))
    return transformer, vae, FlowMatchEulerDiscreteScheduler(shift=3.0)


def sd3_prompt_embeds(config, sequence_key: str, pooled_key: str) -> dict:
    """Random prompt embeddings of the real shapes (333 tokens: CLIP's 77 + T5's 256), on the CPU."""
    return {sequence_key: torch.randn(1, 333, config.joint_attention_dim),
            pooled_key: torch.randn(1, config.pooled_projection_dim)}


def build(family: str, smoke: bool, device, dtype):
    """(pipeline, prompt-embedding kwargs) for 'sd15' or 'sd3' with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusion3Pipeline, StableDiffusionPipeline, UNet2DConditionModel

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
        transformer, vae, scheduler = sd3_modules(smoke)
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None,
            tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        )
        embeds = {**sd3_prompt_embeds(transformer.config, "prompt_embeds", "pooled_prompt_embeds"),
                  **sd3_prompt_embeds(transformer.config, "negative_prompt_embeds", "negative_pooled_prompt_embeds")}
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


# The training row: Flow-GRPO's SD3 settings (LoRA rank 32 / alpha 64 at 512 px); the GRPO defaults give its
# 10 rollout steps with every stochastic step trained.
TRAIN_LORA = {"lora_rank": 32, "lora_alpha": 64.0}
TRAIN_PX = 512


def write_sd3_model_dir(directory: Path, smoke: bool, device) -> dict:
    """SD3-medium (or the tiny stand-in) with random weights saved as a model directory (``transformer/``,
    ``vae/``, ``scheduler/``) for ``model.name``; returns ``model.cond``: random prompt embeddings on ``device``,
    since there is no text encoder."""
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it will run: 2B parameters take minutes to initialise on a CPU
        transformer, vae, scheduler = sd3_modules(smoke, sample_size=None if smoke else TRAIN_PX // 8)
    for name, module in (("transformer", transformer), ("vae", vae), ("scheduler", scheduler)):
        module.save_pretrained(directory / name)
    embeds = sd3_prompt_embeds(transformer.config, "encoder_hidden_states", "pooled_projections")
    return {key: value.to(device) for key, value in embeds.items()}


def grpo_config(model_dir: Path, cond: dict, rollouts: int, sharding: str, smoke: bool):
    from diffalign.trainers import config_from_dict

    return config_from_dict({
        "method": "grpo", "seed": 0,
        # the tiny stand-in's layers are 16 wide, below Flow-GRPO's rank 32
        "model": {"name": str(model_dir), "cond": cond, **({"lora_rank": 4, "lora_alpha": 8.0} if smoke else TRAIN_LORA)},
        "reward": {"name": "compressibility"}, "group_size": rollouts, "groups_per_micro_batch": 1,
        "train": {"learning_rate": 1e-4, "checkpoint_every": 0, "report_to": "none", "sharding": sharding,
                  "mixed_precision": "no" if smoke else "bf16"},
    })


def time_train_steps(trainer, repeats: int, cuda: bool) -> tuple[float, float]:
    """(seconds per ``train_step()``, peak GiB) over ``repeats`` steps after one warm-up step; the peak is
    CUDA's allocator high-water mark over the timed steps (NaN off CUDA)."""
    trainer.train_step()  # warm-up: kernels, allocator, the optimizer state's first allocation
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return seconds, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def training_rows(smoke: bool, device, rollouts: int, repeats: int) -> tuple[list, dict]:
    """GRPO LoRA steps of the real trainer on SD3-medium, with ``train.sharding`` none and fsdp (one process)."""
    import tempfile

    from diffalign.trainers import get_trainer

    table, results = [], {}
    px = 16 if smoke else TRAIN_PX
    with tempfile.TemporaryDirectory(prefix="gpu_families_train_") as tmp:
        model_dir = Path(tmp) / "sd3-medium-random"
        cond = write_sd3_model_dir(model_dir, smoke, device)
        for sharding in ("none", "fsdp"):
            trainer = get_trainer("grpo")(grpo_config(model_dir, cond, rollouts, sharding, smoke), Path(tmp) / sharding)
            if sharding == "fsdp" and not trainer.sharded:
                # base.py: FSDP2 shards across processes, and one process (torchrun's included) has none to
                # shard with, so the trainer runs unsharded; the row above is this configuration's figure
                note = "no-op on 1 process (Trainer.sharded is False): same run as train.sharding none"
                print(f"sd3 GRPO LoRA, train.sharding fsdp: {note}; not measured twice")
                table.append(["sd3", "GRPO LoRA", "fsdp", 1, px, rollouts, "= none", "= none", note])
                results["sd3_grpo_fsdp_1proc"] = "unsharded"
            else:
                seconds, peak = time_train_steps(trainer, repeats, cuda=device.type == "cuda")
                table.append(["sd3", "GRPO LoRA", sharding, 1, px, rollouts, f"{seconds:.2f}", f"{peak:.2f}",
                              "sharded" if trainer.sharded else "unsharded"])
                results[f"sd3_grpo_{sharding}_s_per_step"] = f"{seconds:.3f}"
                results[f"sd3_grpo_{sharding}_peak_gib"] = f"{peak:.2f}"
                print(f"sd3 GRPO LoRA, train.sharding {sharding}: {seconds:.2f} s/step, peak {peak:.2f} GiB")
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return table, results


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
    repeats = 1 if smoke else args.train_steps
    train_table, train_results = training_rows(smoke, device, rows, repeats)
    results.update(train_results)
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
    path = common.write_markdown(
        "gpu_families_training", f"GRPO LoRA training step on SD3-medium ({gpu})", train_table,
        ["model", "method", "train.sharding", "processes", "px", "rollouts/step", "s / step", "peak GiB", "note"],
        f"`python benchmarks/gpu_families.py{' --quick' if args.quick else ''}`: the GRPO trainer's `train_step()` "
        f"(diffalign.trainers) on the published SD3-medium transformer and VAE with random weights, LoRA rank 32 / "
        f"alpha 64 on the default target modules, bf16 autocast over fp32 weights, one group of {rows} rollouts of "
        f"10 steps, every stochastic step trained, compressibility reward; mean over {repeats} steps after one "
        "warm-up step (synchronised), peak = `torch.cuda.max_memory_allocated` over those steps. "
        "`train.sharding: fsdp` on one process does not shard (FSDP2 needs several processes; `torchrun` with "
        "one process is the same single process), so it is not measured twice.",
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
    p.add_argument("--train-steps", type=int, default=3, help="timed GRPO steps of the training row (after one warm-up)")
    args = p.parse_args()
    common.setup(args)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_families: skipped: no CUDA device on this machine (use --smoke for the CPU check)")
        common.result_line("gpu_families", status="skipped", reason="no_cuda")
        return
    run(args)


if __name__ == "__main__":
    main()
