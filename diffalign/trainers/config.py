"""Trainer configuration: typed dataclasses, read from YAML, overridden by ``key.path=value``.

Every method has one ``Config`` dataclass (TRL style): the shared sections ``model``, ``reward`` and
``train`` plus the method's own top-level fields. A field's ``help`` metadata is its documentation
(``diffalign train --show-config METHOD`` prints it). Loading checks every key and type against the
dataclasses, so a typo or a bad value is one line that names the key and the valid choices.

The methods' registry and :func:`~diffalign.trainers.configs.load_config` live in
:mod:`~diffalign.trainers.configs`, which imports every method's Config (this base imports none).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..errors import DiffalignError


#: what ``train.offload`` may name (offload.py; here so that validation stays free of torch)
OFFLOADABLE = ("reference", "ema")


def option(default, help: str, **kwargs):
    """A dataclass field with its help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    name: str = option("digits-flow", "embedded model name or diffusers model/pipeline directory")
    cond: Optional[Any] = option(None, "training condition (class label for the digits models); null = unconditional")
    full_finetune: bool = option(False, "train every network weight instead of a LoRA (holds a frozen reference copy when the method needs one)")
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: float = option(8.0, "LoRA alpha (the update is scaled by alpha / r)")
    lora_target_modules: list = option(
        ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"], "module names that get LoRA adapters"
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (when the network supports it)")
    guidance_scale: float = option(1.0, "classifier-free guidance scale of rollouts and evaluation (1: one pass, no CFG)")


@dataclass
class RewardConfig:
    name: str = option("digit", "reward name (see 'diffalign list')")
    options: dict = option({}, "reward options, e.g. {target: 3}")


@dataclass
class DataConfig:
    train_prompts: Optional[str] = option(None, "training prompt file: .txt (one prompt a line) or .jsonl ({prompt: ..., other fields = metadata}); null = model.cond")
    test_prompts: Optional[str] = option(None, "held-out prompt file evaluated while training (same formats)")
    balance_by: Optional[str] = option(None, "a .jsonl metadata key (e.g. category): each group draws a value of it uniformly, "
                                             "then a prompt with that value; null = prompts drawn uniformly")
    eval_every: int = option(0, "steps between evaluations of the test prompts (0: only at the end)")
    eval_rewards: list = option([], "evaluation panel: reward names or {name: ..., options: {...}}; empty = the training reward")
    eval_samples_per_prompt: int = option(2, "samples per test prompt at each evaluation (fixed seeds)")
    eval_steps: int = option(20, "sampler steps of an evaluation rollout")
    eval_seed: int = option(0, "seed of the evaluation samples (test prompt i uses eval_seed + i)")
    eval_grid_prompts: int = option(16, "test prompts shown in the logged image grid (one row each)")


@dataclass
class TrainingConfig:
    max_steps: int = option(100, "optimizer steps of the whole run")
    learning_rate: float = option(1e-4, "peak learning rate (AdamW)")
    lr_schedule: Literal["constant", "cosine", "linear"] = option("constant", "learning-rate schedule after warm-up")
    lr_warmup_steps: int = option(0, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient-norm clip (0 disables)")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step and process")
    mixed_precision: Literal["no", "bf16", "fp16"] = option("no", "autocast precision (accelerate)")
    ema_decay: float = option(0.0, "EMA of the trained weights (0 disables); the final adapter uses the EMA weights")
    ema_warmup: bool = option(True, "diffusers' EMA warm-up: the decay ramps as (1 + n) / (10 + n) up to ema_decay "
                                    "(0.918 at update 100 for 0.999); false: ema_decay from the second update. "
                                    "The effective decay is logged as ema_decay")
    checkpoint_every: int = option(50, "steps between checkpoints (0: only the final one)")
    keep_checkpoints: int = option(2, "most recent checkpoints kept on disk")
    log_every: int = option(1, "steps between tracker logs")
    report_to: Literal["tensorboard", "wandb", "none"] = option("tensorboard", "accelerate tracker (wandb must be installed)")
    async_scoring: bool = option(False, "score each micro-batch's rollouts in a background thread while the next micro-batch rolls out (GRPO; all within one step, so on-policy; overlaps from gradient_accumulation_steps >= 2; for slow or remote rewards)")
    rollout_cfg: bool = option(True, "with model.guidance_scale > 1: rollouts and GRPO's log-probs use CFG (two passes), as Flow-GRPO does; false: the conditional model alone")
    sharding: Literal["none", "fsdp"] = option("none", "none: every process holds the whole model; fsdp: FSDP2 shards the denoiser's "
                                                       "weights, gradients and AdamW moments across processes, one unit per block "
                                                       "(torchrun or accelerate launch; see the README's Scaling out section and 'diffalign train CONFIG --plan')")
    optimizer: Literal["adamw", "adamw8bit"] = option("adamw", "adamw: torch.optim.AdamW (fp32 moments, 8 bytes per trained "
                                                      "parameter); adamw8bit: bitsandbytes' AdamW8bit (block-wise 8-bit moments, about 2 "
                                                      "bytes; pip install 'diffalign[bnb]'; CUDA or CPU; not with sharding: fsdp)")
    offload: list = option([], "keep these on the host (CPU) between uses instead of on the accelerator: 'reference' (the "
                                "frozen copy of full fine-tuning), 'ema' (the EMA shadows); see 'diffalign train CONFIG --plan'")
    collective_timeout_s: float = option(600.0, "seconds any collective of a multi-process job may wait before the job "
                                                "fails with one line naming the stalled or dead rank (accelerate's own default: "
                                                "1,800 s); a phase only the main process runs (writing final/ or an unsharded "
                                                "checkpoint of a large model, evaluation) must finish within it")
    max_nonfinite_updates: int = option(3, "an update whose loss or gradient is NaN/inf is skipped and logged; this many in a "
                                           "row stop the run, keeping the last good checkpoint")


@dataclass
class TrainerConfig:
    """Fields shared by every method."""

    method: str = option("", "trainer name: flow_dpo, rwr, grpo, noisy_reward or hypernoise")
    seed: int = option(0, "seed of every random choice (data, noise, timesteps)")
    model: ModelConfig = option(None, "the network and its adapters")
    reward: RewardConfig = option(None, "the reward")
    train: TrainingConfig = option(None, "optimisation and bookkeeping")
    data: DataConfig = option(None, "prompt datasets and evaluation while training")

    def __post_init__(self):
        self.model = self.model or ModelConfig()
        self.reward = self.reward or RewardConfig()
        self.train = self.train or TrainingConfig()
        self.data = self.data or DataConfig()

    def validate(self) -> None:
        """Value checks beyond types; raise DiffalignError naming the key."""
        t = self.train
        for key, value in (("train.max_steps", t.max_steps), ("train.gradient_accumulation_steps", t.gradient_accumulation_steps),
                           ("train.log_every", t.log_every), ("train.keep_checkpoints", t.keep_checkpoints),
                           ("model.lora_rank", self.model.lora_rank)):
            require(value >= 1, key, value, ">= 1")
        for key, value in (("train.checkpoint_every", t.checkpoint_every), ("train.lr_warmup_steps", t.lr_warmup_steps),
                           ("train.max_grad_norm", t.max_grad_norm), ("train.weight_decay", t.weight_decay)):
            require(value >= 0, key, value, ">= 0")
        require(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
        require(0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in [0, 1)")
        require(self.model.lora_alpha > 0, "model.lora_alpha", self.model.lora_alpha, "> 0")
        # each of these failed only after config.yaml was written (numpy's SeedSequence, AdamW's own checks)
        require(isinstance(self.seed, int) and 0 <= self.seed < 2**64, "seed", self.seed, "an integer in [0, 2^64)")
        require(0 <= t.adam_beta1 < 1, "train.adam_beta1", t.adam_beta1, "in [0, 1)")
        require(0 <= t.adam_beta2 < 1, "train.adam_beta2", t.adam_beta2, "in [0, 1)")
        require(t.adam_epsilon > 0, "train.adam_epsilon", t.adam_epsilon, "> 0")
        for name in t.offload if isinstance(t.offload, list) else [t.offload]:
            if name not in OFFLOADABLE:
                raise DiffalignError(f"config key 'train.offload' holds {name!r}; valid choices: {', '.join(OFFLOADABLE)}")
        if t.optimizer == "adamw8bit" and t.sharding == "fsdp":
            raise DiffalignError("config keys 'train.optimizer: adamw8bit' and 'train.sharding: fsdp' exclude each other "
                                 "(bitsandbytes' kernels take whole tensors, not FSDP's shards); valid with fsdp: adamw")
        require(t.collective_timeout_s > 0, "train.collective_timeout_s", t.collective_timeout_s, "> 0")
        require(t.max_nonfinite_updates >= 1, "train.max_nonfinite_updates", t.max_nonfinite_updates, ">= 1")
        # a torch-free first bound (the trainer checks the rank against the model's layers too)
        require(self.model.lora_rank <= MAX_LORA_RANK, "model.lora_rank", self.model.lora_rank, f"<= {MAX_LORA_RANK}")
        require(self.model.guidance_scale >= 1, "model.guidance_scale", self.model.guidance_scale, ">= 1")
        d = self.data
        if d.train_prompts is not None and self.model.cond is not None:
            raise DiffalignError("config keys 'model.cond' and 'data.train_prompts' exclude each other: train on one "
                                 "fixed condition, or on a prompt file (each prompt is its samples' condition)")
        for key in ("eval_samples_per_prompt", "eval_steps", "eval_grid_prompts"):
            require(getattr(d, key) >= 1, f"data.{key}", getattr(d, key), ">= 1")
        require(d.eval_every >= 0, "data.eval_every", d.eval_every, ">= 0")
        if t.sharding == "fsdp" and d.test_prompts is not None:
            # evaluation samples on the main process alone, and a sharded network needs every process in each pass
            raise DiffalignError("config keys 'train.sharding: fsdp' and 'data.test_prompts' exclude each other for now "
                                 "(evaluation runs on the main process only); drop data.test_prompts and evaluate final/ "
                                 "with 'diffalign sample', or use train.sharding: none")
        if (d.eval_every or d.eval_rewards) and d.test_prompts is None:
            raise DiffalignError("config keys 'data.eval_every' and 'data.eval_rewards' need 'data.test_prompts' (the held-out prompt file)")
        if self.train.report_to == "wandb":
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise DiffalignError("config key 'train.report_to' is 'wandb' but wandb is not installed: pip install wandb, "
                                     "or use tensorboard")
        for path in (d.train_prompts, d.test_prompts):
            if path is not None:
                from ..prompt_files import read_prompt_file

                read_prompt_file(path, f"config key 'data.{'train' if path == d.train_prompts else 'test'}_prompts':")  # torch-free: a bad file is one line before anything is written
        if d.balance_by is not None:
            if d.train_prompts is None:
                raise DiffalignError("config key 'data.balance_by' needs 'data.train_prompts' (a .jsonl prompt file)")
            from ..prompt_files import balance_groups, read_prompt_file

            balance_groups(read_prompt_file(d.train_prompts, "config key 'data.train_prompts':"), d.balance_by)


MAX_LORA_RANK = 4096  # above any layer width of the supported families' LoRA targets


def refuse_prompt_data(config: "TrainerConfig", why: str) -> None:
    """For methods that train on one fixed condition: a ``data:`` section is one clear error, not ignored."""
    d = config.data
    if d.train_prompts is not None or d.test_prompts is not None:
        raise DiffalignError(f"method {config.method!r} does not take a prompt dataset ({why}); remove 'data.train_prompts' "
                             "and 'data.test_prompts' and set 'model.cond'")


def require(ok: bool, key: str, value, what: str) -> None:
    if not ok:
        raise DiffalignError(f"config key {key!r} must be {what}, got {value!r}")


# -- reading ------------------------------------------------------------------------------------
def read_yaml(path) -> dict:
    from ..safe_yaml import load

    path = Path(path)
    if path.is_dir():
        raise DiffalignError(f"config file {path} is a directory; give a YAML file such as configs/grpo_digits.yaml")
    if not path.is_file():
        raise DiffalignError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DiffalignError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    except OSError as err:
        raise DiffalignError(f"cannot read config file {path}: {err.strerror}") from None
    data = load(text, f"config file {path}")
    if not isinstance(data, dict):
        raise DiffalignError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``key.path=value`` pairs (values parsed as YAML) set into a copy of the raw config."""
    import copy

    from ..safe_yaml import load

    data = copy.deepcopy(data)
    for pair in overrides:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise DiffalignError(f"override {pair!r} is not key.path=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DiffalignError(f"override {pair!r}: {part!r} is not a section")
        node[parts[-1]] = load(raw, f"override {pair!r}")
    return data


def build(cls: type, data: dict, prefix: str = ""):
    """Instantiate dataclass ``cls`` from a raw mapping, checking every key and type."""
    if not isinstance(data, dict):
        raise DiffalignError(f"config key {prefix.rstrip('.')!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        hint = did_you_mean(str(unknown[0]), key_paths(cls, prefix))
        raise DiffalignError(f"unknown config key {prefix + str(unknown[0])!r}{hint}; "
                             f"valid keys: {', '.join(prefix + n for n in names)}")
    values = {name: _convert(hints[name], data[name], prefix + name) for name in names if name in data}
    return cls(**values)


#: names familiar from diffusers and TRL scripts -> the key that means the same here
FAMILIAR_NAMES = {
    "num_inference_steps": "sample_steps", "inference_steps": "sample_steps", "steps": "sample_steps",
    "lr": "learning_rate", "max_train_steps": "max_steps", "num_train_steps": "max_steps",
    "gradient_accumulation": "gradient_accumulation_steps", "beta": "kl_coef",
}


def key_paths(cls: type, prefix: str = "") -> list[str]:
    """Every key path of config dataclass ``cls``: its fields, and the fields of its sections."""
    hints = typing.get_type_hints(cls)
    paths = []
    for field in dataclasses.fields(cls):
        paths.append(prefix + field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            paths += key_paths(hints[field.name], f"{prefix}{field.name}.")
    return paths


def did_you_mean(key: str, paths: list[str]) -> str:
    """``" (did you mean 'train.learning_rate'?)"`` for a misspelt, misplaced or familiar-elsewhere key
    (difflib on the last part of each key path), or "" when nothing is close."""
    import difflib

    leaves = {}
    for path in paths:
        leaves.setdefault(path.rsplit(".", 1)[-1], path)
    familiar = difflib.get_close_matches(key, list(FAMILIAR_NAMES), n=1, cutoff=0.85)
    if familiar and FAMILIAR_NAMES[familiar[0]] in leaves:
        return f" (did you mean {leaves[FAMILIAR_NAMES[familiar[0]]]!r}?)"
    close = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.75)
    return f" (did you mean {leaves[close[0]]!r}?)" if close else ""


def _convert(hint, value, key: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _convert(hint, value, key)
    if dataclasses.is_dataclass(hint):
        return build(hint, value or {}, key + ".")
    if origin is Literal:
        if value not in args:
            raise DiffalignError(f"config key {key!r} got {value!r}; valid choices: {', '.join(map(str, args))}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise DiffalignError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise DiffalignError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DiffalignError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan would train into NaN weights and save them
            raise DiffalignError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise DiffalignError(f"config key {key!r} must be a string, got {value!r}")
        return value
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise DiffalignError(f"config key {key!r} must be a list, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DiffalignError(f"config key {key!r} must be a mapping, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in a Config class, not user input


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field: key, default and help (for ``--show-config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe(hints[f.name], prefix + f.name + "."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"{prefix + f.name:<34} {default!r:<28} {f.metadata.get('help', '')}")
    return lines
