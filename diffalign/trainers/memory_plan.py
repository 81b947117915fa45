"""The memory plan: bytes per process of a training run, computed without weights and without training.

``diffalign train CONFIG --plan [--num-processes P] [--device-memory GB]`` prints it. The network is built
from its ``config.json`` on PyTorch's ``meta`` device (shapes, no storage), so the plan of a 12B model
costs a second and no download of weights.

**What the trainer holds** (:class:`~diffalign.trainers.base.Trainer`; every figure per process):

* weights: every network parameter in fp32 (``load_model`` keeps fp32; accelerate's mixed precision is
  autocast, which keeps fp32 master weights), LoRA adapters included;
* gradients: fp32, one per trainable parameter (the LoRA's, or every weight under full fine-tuning);
* optimizer: ``torch.optim.AdamW`` keeps two fp32 moments per trainable parameter (``exp_avg``,
  ``exp_avg_sq``) and one 0-d fp32 ``step`` tensor per parameter tensor (torch/optim/adamw.py);
* reference: a frozen deep copy of the network, only under full fine-tuning with a method that needs the
  reference policy (Flow-DPO, GRPO's KL...); LoRA's reference is the same network with adapters off;
* EMA: diffusers' ``EMAModel`` keeps one fp32 shadow per trainable parameter.

**Mixed precision** (bf16/fp16 through accelerate) does not shrink any of these: the weights stay fp32
and so do their gradients and moments. It adds autocast's cache of 16-bit copies of the trainable weights
used inside an autocast region (at most 2 bytes per trainable parameter, freed when the region ends) and
it roughly halves the activations (matmul outputs are 16-bit; norms and softmax stay fp32).

**Sharding** (``train.sharding: fsdp``, :mod:`.sharding`): FSDP2's ``fully_shard`` divides every
parameter of the wrapped network along dim 0 across the P processes (rows padded up to a multiple of P),
frozen base weights included, so the weights, gradients, moments and EMA shadows are each about 1/P.
The reference copy is sharded the same way. What is *not* divided: the activations (each process runs its
own micro-batches), the condition embeddings outside the network, and the parameters FSDP gathers while it
computes: one block at a time, plus the next block prefetched, plus the root's own parameters (embeddings,
final layer), which stay gathered through the forward pass (torch.distributed.fsdp.fully_shard docs:
``reshard_after_forward``). The plan counts that transient as "gathered".

**Activations** are estimated by running one forward pass of the architecture on the meta device at its
native resolution, batch 1, and summing the bytes of every distinct tensor autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``), parameters excluded. Attention is counted as a
flash-style kernel saves it (q, k, v, output, log-sum-exp: what PyTorch's CPU and CUDA SDPA kernels keep),
not the L x L matrix of the math fallback that the meta device would otherwise trace. With gradient
checkpointing the estimate is the block inputs kept plus one block's activations recomputed. Limits: the
backward pass briefly holds gradients of activations on top (not counted); allocator fragmentation and the
CUDA context (~0.5-1 GB) are not counted; a method calls the network on several rows per micro-batch
(GRPO: group x steps kept; Flow-DPO: winners and losers), so "samples" are rows of one forward pass with
gradient, at the resolution stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

FP32 = 4
HALF = 2

# -- published architectures (config.json of each hub repository; no weights needed) ------------------
# stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
SD3_MEDIUM = {"_class_name": "SD3Transformer2DModel", "sample_size": 128, "patch_size": 2, "in_channels": 16,
              "num_layers": 24, "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
              "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "out_channels": 16,
              "pos_embed_max_size": 192}
# black-forest-labs/FLUX.1-dev, transformer/config.json
FLUX1_DEV = {"_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "num_layers": 19,
             "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
             "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
             "axes_dims_rope": [16, 56, 56]}
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json
WAN21_14B = {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": 40,
             "attention_head_dim": 128, "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
             "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
             "eps": 1e-6}


@dataclass(frozen=True)
class Architecture:
    """A network config and the per-sample input its activations are planned for."""

    config: dict
    resolution: str  # what one sample is, in words
    latent: tuple  # the network's latent input for one sample (without batch)
    text_tokens: int  # conditioning tokens per sample


ARCHITECTURES = {
    "sd3-medium": Architecture(SD3_MEDIUM, "1024x1024 image (128x128 latent, 4096 tokens, 333 text tokens)", (16, 128, 128), 333),
    "flux.1-dev": Architecture(FLUX1_DEV, "1024x1024 image (64x64 packed latent, 4096 tokens, 512 text tokens)", (4096, 64), 512),
    "wan2.1-14b": Architecture(WAN21_14B, "832x480, 81 frames (21x60x104 latent, 32760 tokens, 512 text tokens)", (16, 21, 60, 104), 512),
}


def build_on_meta(config: dict) -> nn.Module:
    """The diffusers network of ``config`` (a config.json mapping) on the meta device: shapes, no storage."""
    import diffusers

    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    cls = getattr(diffusers, config["_class_name"])
    with torch.device("meta"):
        return cls(**kwargs)


# -- parameters ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One parameter tensor: its shape, whether it trains, and the FSDP unit (block) it belongs to."""

    name: str
    shape: tuple
    trainable: bool
    block: Optional[str]  # None: the root (not inside a sharded block)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def lora_targets(network: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """The Linear layers peft's LoRA adapts: a module name equal to a target or ending in ``.target``."""
    return [(name, m) for name, m in network.named_modules()
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)]


def network_params(network: nn.Module, *, full_finetune: bool, lora_rank: int = 0,
                   lora_target_modules: list[str] = ()) -> list[Param]:
    """Every parameter the trainer holds for ``network`` (a plain network, on meta or not), with the LoRA
    adapters it would add (peft: ``lora_A`` r x in and ``lora_B`` out x r, no bias) when not full FT."""
    from .sharding import block_modules

    blocks = {name: name for name, _ in block_modules(network)}

    def block_of(name: str) -> Optional[str]:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in blocks:
                return ".".join(parts[:i])
        return None

    params = [Param(n, tuple(p.shape), full_finetune, block_of(n)) for n, p in network.named_parameters()]
    if not full_finetune:
        for name, layer in lora_targets(network, list(lora_target_modules)):
            params.append(Param(f"{name}.lora_A", (lora_rank, layer.in_features), True, block_of(name)))
            params.append(Param(f"{name}.lora_B", (layer.out_features, lora_rank), True, block_of(name)))
    return params


def shard_numel(shape: tuple, processes: int) -> int:
    """Elements of the largest local shard FSDP2 gives one of ``processes`` ranks: dim 0 is split into
    chunks of ceil(d0 / P) rows (torch.chunk), so rank 0 holds the most."""
    if not shape:
        return 1  # a 0-d tensor is not split (FSDP2 keeps it whole; none occur in these networks)
    rows = math.ceil(shape[0] / processes)
    return rows * math.prod(shape[1:])


# -- the plan -------------------------------------------------------------------------------------------
@dataclass
class MemoryPlan:
    """Bytes per process; ``rows`` and ``activation_bytes`` describe the micro-batch estimate."""

    weights: int
    gradients: int
    optimizer: int
    reference: int
    ema: int
    gathered: int  # transient: parameters FSDP all-gathers while computing (0 unsharded)
    autocast_cache: int  # transient: 16-bit copies of the trainable weights under mixed precision
    total_params: int
    trainable_params: int
    details: dict = field(default_factory=dict)
    host: int = 0  # train.offload: reference and EMA bytes held on the host instead (not on the device)
    reference_visit: int = 0  # transient: an offloaded unsharded reference's root parameters + its largest block
    ema_visit: int = 0  # transient after the backward pass (no activations held): offloaded EMA shadows visiting

    @property
    def static(self) -> int:
        """Everything held for the whole run, plus the transients at their peak while activations are held."""
        return (self.weights + self.gradients + self.optimizer + self.reference + self.ema + self.gathered
                + self.autocast_cache + self.reference_visit)


def plan_memory(params: list[Param], *, full_finetune: bool, needs_reference: bool, ema: bool,
                mixed_precision: str = "no", sharded: bool = False, processes: int = 1, offload=(),
                optimizer_kind: str = "adamw") -> MemoryPlan:
    """The bytes per process of :class:`MemoryPlan` for ``params`` (see the module docstring). ``offload``
    (train.offload) moves the reference's and the EMA's bytes to ``host``; an unsharded offloaded reference
    visits the device one block at a time (plus its root parameters) while the policy's activations are
    held, the EMA whole after the backward pass (offload.py). ``optimizer_kind`` ``adamw8bit`` (unsharded only):
    bitsandbytes' 8-bit moments (optimizers.py)."""
    p = processes if sharded else 1
    half = mixed_precision in ("bf16", "fp16")

    def size(selected) -> int:
        return sum(shard_numel(x.shape, p) if sharded else x.numel for x in selected)

    trainable = [x for x in params if x.trainable]
    frozen_net = [x for x in params if not (x.name.endswith(".lora_A") or x.name.endswith(".lora_B"))]
    weights = FP32 * size(params)
    gradients = FP32 * size(trainable)
    optimizer = 2 * FP32 * size(trainable) + FP32 * len(trainable)
    if optimizer_kind == "adamw8bit" and not sharded:  # refused with fsdp (config.py)
        from .optimizers import optimizer_state_bytes

        optimizer = optimizer_state_bytes([x.shape for x in trainable], optimizer_kind)
    reference = FP32 * size(frozen_net) if (full_finetune and needs_reference) else 0
    ema_bytes = FP32 * size(trainable) if ema else 0
    gathered = 0
    if sharded and processes > 1:
        per_block: dict = {}
        for x in params:
            if x.block is not None:
                per_block[x.block] = per_block.get(x.block, 0) + x.numel
        root = sum(x.numel for x in params if x.block is None)
        largest = sorted(per_block.values(), reverse=True)[:2]  # the block computing and the one prefetched
        # under mixed precision FSDP gathers in the 16-bit param_dtype (sharding.py's MixedPrecisionPolicy)
        gathered = (HALF if half else FP32) * (root + sum(largest))
    # sharded runs compute in FSDP's param_dtype instead, so autocast has no fp32 weight to cast and cache
    autocast_cache = HALF * sum(x.numel for x in trainable) if half and not sharded else 0
    host = reference_visit = ema_visit = 0
    if "reference" in offload and reference:
        host, reference = host + reference, 0
        if not sharded:  # sharded: FSDP copies one unit's shard at a time before its all-gather ('gathered')
            per_block: dict = {}
            for x in frozen_net:
                if x.block is not None:
                    per_block[x.block] = per_block.get(x.block, 0) + x.numel
            reference_visit = FP32 * (sum(x.numel for x in frozen_net if x.block is None) + max(per_block.values(), default=0))
    if "ema" in offload and ema_bytes:
        host, ema_visit, ema_bytes = host + ema_bytes, ema_bytes, 0
    return MemoryPlan(weights, gradients, optimizer, reference, ema_bytes, gathered, autocast_cache,
                      total_params=sum(x.numel for x in params), trainable_params=sum(x.numel for x in trainable),
                      host=host, reference_visit=reference_visit, ema_visit=ema_visit)


def largest_micro_batch(device_bytes: int, static_bytes: int, activation_bytes_per_row: int, reserve: float = 0.1) -> int:
    """Rows of one forward pass with gradient that fit: (device x (1 - reserve) - static) / activations
    per row, floored; ``reserve`` leaves room for fragmentation and the backward pass's transients."""
    free = device_bytes * (1.0 - reserve) - static_bytes
    if free <= 0 or activation_bytes_per_row <= 0:
        return 0
    return int(free // activation_bytes_per_row)


# -- activations -----------------------------------------------------------------------------------------
class _FlashAttention(torch.autograd.Function):
    """Stands for SDPA during the trace: saves what a flash kernel saves (q, k, v, out, log-sum-exp)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the trace stops after the forward pass
        raise RuntimeError("the activation trace has no backward pass")


def _flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FlashAttention.apply(query, key, value)


def saved_activation_bytes(network: nn.Module, inputs: dict, flash_attention: bool = True, train_all: bool = True) -> dict:
    """Bytes of the distinct tensors autograd saves in one forward pass of ``network(**inputs)``,
    parameters excluded: ``{"total": ..., "blocks": {name: bytes}, "block_inputs": {name: bytes}}``.
    Runs on any device; on ``meta`` it costs no memory. ``flash_attention`` counts attention as a flash
    kernel saves it (see the module docstring); pass False to trace the real SDPA of a real device.
    ``train_all``: trace as full fine-tuning (every weight needs a gradient); False keeps the network's own
    ``requires_grad`` flags (LoRA: autograd then saves less, e.g. nothing before the first adapter)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    from .sharding import block_modules

    def key(t):
        return StorageWeakRef(t.untyped_storage()).cdata

    parameters = {key(p) for p in network.parameters()}
    saved: dict = {}
    current: list = [None]
    per_block: dict = {}
    block_inputs: dict = {}

    def pack(t):
        k = key(t)
        if k not in parameters and k not in saved:
            saved[k] = t.untyped_storage().nbytes()
            if current[0] is not None:
                per_block[current[0]] = per_block.get(current[0], 0) + saved[k]
        return t

    def pre(name):
        def hook(module, args, kwargs):
            current[0] = name
            block_inputs[name] = sum(a.untyped_storage().nbytes() for a in list(args) + list(kwargs.values())
                                     if isinstance(a, torch.Tensor) and a.requires_grad)
        return hook

    def post(module, args, kwargs, out):
        current[0] = None

    handles = []
    for name, block in block_modules(network):
        handles.append(block.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    original = torch.nn.functional.scaled_dot_product_attention
    if flash_attention:
        torch.nn.functional.scaled_dot_product_attention = _flash_sdpa
    grads = [p.requires_grad for p in network.parameters()]
    try:
        if train_all:
            network.requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            network(**inputs)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
        for h in handles:
            h.remove()
        for p, g in zip(network.parameters(), grads):
            p.requires_grad_(g)
    return {"total": sum(saved.values()), "blocks": per_block, "block_inputs": block_inputs}


def activation_bytes(trace: dict, gradient_checkpointing: bool, mixed_precision: str = "no") -> int:
    """Activation bytes per row from :func:`saved_activation_bytes`: all of it, or with gradient checkpointing
    the non-block part, the block inputs and the largest block recomputed; x 0.5 under bf16/fp16 autocast
    (an approximation: autocast keeps norms and softmax in fp32)."""
    total = trace["total"]
    if gradient_checkpointing and trace["blocks"]:
        total = total - sum(trace["blocks"].values()) + sum(trace["block_inputs"].values()) + max(trace["blocks"].values())
    return total // 2 if mixed_precision in ("bf16", "fp16") else total


def with_lora(network: nn.Module, rank: int, target_modules: list) -> nn.Module:
    """A copy of a meta-device network with peft LoRA adapters on ``target_modules`` and its base frozen
    (what the trainer trains under LoRA), for the activation trace."""
    import copy

    from peft import LoraConfig

    copied = copy.deepcopy(network).requires_grad_(False)
    if lora_targets(copied, list(target_modules)):
        copied.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(target_modules)))
    return copied


def example_inputs(network: nn.Module, latent: tuple, text_tokens: int, batch: int = 1, device="meta") -> dict:
    """A forward call's keyword arguments for one of the supported network classes."""
    cfg = network.config
    name = type(network).__name__

    def empty(*shape):
        return torch.zeros(*shape, device=device)

    t = torch.full((batch,), 500.0, device=device)
    if name == "SD3Transformer2DModel":
        return {"hidden_states": empty(batch, *latent), "timestep": t,
                "encoder_hidden_states": empty(batch, text_tokens, cfg.joint_attention_dim),
                "pooled_projections": empty(batch, cfg.pooled_projection_dim)}
    if name == "FluxTransformer2DModel":
        tokens = latent[0]
        out = {"hidden_states": empty(batch, *latent), "timestep": t / 1000,
               "encoder_hidden_states": empty(batch, text_tokens, cfg.joint_attention_dim),
               "pooled_projections": empty(batch, cfg.pooled_projection_dim),
               "img_ids": empty(tokens, 3), "txt_ids": empty(text_tokens, 3)}
        if cfg.guidance_embeds:
            out["guidance"] = torch.full((batch,), 3.5, device=device)
        return out
    if name == "WanTransformer3DModel":
        return {"hidden_states": empty(batch, *latent), "timestep": t,
                "encoder_hidden_states": empty(batch, text_tokens, cfg.text_dim)}
    if name == "UNet2DConditionModel":
        return {"sample": empty(batch, *latent), "timestep": t,
                "encoder_hidden_states": empty(batch, text_tokens, cfg.cross_attention_dim)}
    raise ValueError(f"no example inputs for {name}")


# -- a whole plan, for a config -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    label: str
    full_finetune: bool
    sharded: bool


def plan_table(network: nn.Module, latent: tuple, text_tokens: int, *, lora_rank: int, lora_target_modules: list,
               needs_reference: bool, ema: bool, mixed_precision: str, gradient_checkpointing: bool,
               processes: int, device_bytes: int, options: Optional[list[Option]] = None, offload=(),
               optimizer_kind: str = "adamw") -> list[tuple[Option, MemoryPlan, int, int]]:
    """For each option (LoRA / full, unsharded / sharded): its plan, the activations per row and the
    largest micro-batch (rows) in ``device_bytes``."""
    options = options or [Option("LoRA", False, False), Option("LoRA, fsdp", False, True),
                          Option("full", True, False), Option("full, fsdp", True, True)]
    inputs = example_inputs(network, latent, text_tokens)
    per_mode = {True: activation_bytes(saved_activation_bytes(network, inputs), gradient_checkpointing, mixed_precision),
                False: activation_bytes(saved_activation_bytes(with_lora(network, lora_rank, lora_target_modules), inputs,
                                                               train_all=False), gradient_checkpointing, mixed_precision)}
    rows = []
    for opt in options:
        per_row = per_mode[opt.full_finetune]
        params = network_params(network, full_finetune=opt.full_finetune, lora_rank=lora_rank,
                                lora_target_modules=lora_target_modules)
        plan = plan_memory(params, full_finetune=opt.full_finetune, needs_reference=needs_reference, ema=ema,
                           mixed_precision=mixed_precision, sharded=opt.sharded, processes=processes, offload=offload,
                           optimizer_kind=optimizer_kind)
        fit = largest_micro_batch(device_bytes, plan.static, per_row)
        if plan.ema_visit and plan.static - plan.reference_visit + plan.ema_visit > (1 - 0.1) * device_bytes:
            fit = 0  # the offloaded EMA's visit after the backward pass does not fit
        rows.append((opt, plan, per_row, fit))
    return rows


def format_table(title: str, rows, processes: int, device_bytes: int, marked: Optional[str] = None) -> str:
    """The plan as a fixed-width table per process, in GiB (MiB for models under 1 GiB); ``marked``: the
    label of the run's own option, flagged with ``*``."""
    big = max(plan.static for _, plan, _, _ in rows) >= 2**30
    unit, scale = ("GiB", 2**30) if big else ("MiB", 2**20)

    def u(n):
        return f"{n / scale:.2f}"

    offloaded = any(plan.host for _, plan, _, _ in rows)
    head = (f"  {'option':<12} {'weights':>8} {'grads':>8} {'adamw':>8} {'ref':>8} {'ema':>8} {'gathered':>9} "
            f"{'autocast':>9} {'static':>8} {'act/row':>8} {'max rows':>9}" + (f" {'host':>8}" if offloaded else ""))
    lines = [title, f"bytes per process in {unit}; {processes} process(es); device memory {device_bytes / 2**30:.1f} GiB", head]
    for opt, plan, per_row, fit in rows:
        flag = "*" if opt.label == marked else " "
        lines.append(f"{flag} {opt.label:<12} {u(plan.weights):>8} {u(plan.gradients):>8} {u(plan.optimizer):>8} "
                     f"{u(plan.reference):>8} {u(plan.ema):>8} {u(plan.gathered):>9} {u(plan.autocast_cache):>9} "
                     f"{u(plan.static):>8} {per_row / scale:>8.3f} {fit:>9}" + (f" {u(plan.host):>8}" if offloaded else ""))
    p = rows[0][1]
    full = next((plan for opt, plan, _, _ in rows if opt.full_finetune), p)
    lines.append(f"parameters: {full.total_params:,} in the network; LoRA trains {p.trainable_params:,}")
    return "\n".join(lines)


def machine_memory_bytes() -> int:
    """The device memory of this machine: the first CUDA device's, else the host's RAM."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def architecture_of(model_name: str) -> tuple[nn.Module, tuple, int, str]:
    """(network on meta, latent shape, text tokens, what a row is) for a published architecture name,
    an embedded model or a diffusers directory: built from its config.json, no weights read."""
    if model_name in ARCHITECTURES:
        arch = ARCHITECTURES[model_name]
        return build_on_meta(arch.config), arch.latent, arch.text_tokens, arch.resolution
    from ..models.loading import read_json
    from ..zoo import _network_dir, _resolve

    network_dir = _network_dir(_resolve(model_name))
    config = read_json(network_dir / "config.json")
    network = build_on_meta(config)
    size = config.get("sample_size", 64)
    channels = config.get("in_channels", 4)
    latent = (channels, size, size)
    tokens = 4 if (network_dir.parent / "class_embeddings.safetensors").exists() else 77  # embedded: 4 class tokens
    return network, latent, tokens, f"{size}x{size} latent, {channels} channel(s), {tokens} condition tokens"
