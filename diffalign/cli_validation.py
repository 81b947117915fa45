"""Checks of command-line input that run before torch is imported, so a typo is refused at once.

Importing torch and diffusers costs the CLI over 10 s on a small CPU machine; checking a name
should not. This module therefore keeps a light catalog of the registries' names and options
(``tests/test_cli_fast.py`` checks it against the real registries, so it cannot drift) and never
imports torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import DiffalignError, choice_error

# Names the registries and the zoo know, with their options (in signature order) and which of them
# are required. Keep in sync with the @register decorators; the test above says what to change.
MODELS = ("digits", "digits-flow", "digits-fast", "shapes")

_DTS_OPTIONS = (
    "lam", "preset", "children", "branch_every", "branch_steps", "allocation", "exploration", "leaves_per_iteration",
    "kernel", "kernel_options", "max_memory_bytes", "on_memory_full", "storage_dtype", "storage_device",
    "nonfinite_reward", "reuse_tree", "c_pw", "alpha", "c_uct", "output", "max_idle_iterations", "trees_per_prompt",
    "max_rows", "progress",
)
_DTS_STAR_OPTIONS = (
    "lam", "c_pw", "alpha", "c_uct", "branch_every", "branch_steps", "leaves_per_iteration", "kernel",
    "kernel_options", "max_memory_bytes", "on_memory_full", "storage_dtype", "storage_device",
    "nonfinite_reward", "reuse_tree", "output", "max_idle_iterations", "trees_per_prompt", "max_rows", "fast_forward",
    "progress",
)
SAMPLER_OPTIONS = {
    "ancestral": ("kernel", "kernel_options", "progress", "batch_size"),
    "best-of-n": ("n", "kernel", "kernel_options", "progress", "batch_size"),
    "dts": _DTS_OPTIONS,
    "dts-star": _DTS_STAR_OPTIONS,
    "hypernoise": ("path", "hypernetwork", "kernel", "progress", "batch_size"),
    "reno": ("iterations", "optimizer", "lr", "momentum", "max_grad_norm", "regularization", "keep_best", "kernel",
             "progress", "batch_size"),
    "sir": ("lam", "kernel", "kernel_options", "progress", "batch_size"),
    "smc": ("lam", "potential", "resample_every", "ess_threshold", "kernel", "kernel_options", "progress",
            "batch_size"),
}
SAMPLERS_NEEDING_REWARD = ("best-of-n", "dts", "dts-star", "reno", "sir", "smc")

REWARD_OPTIONS = {
    "aesthetic": ("mlp_weights", "model_name", "pretrained", "quick_gelu", "embed_dim"),
    "clip": ("prompt", "model_name", "pretrained", "quick_gelu", "model"),
    "clipscore": ("path", "hub_id", "dtype"),
    "compressibility": ("quality",),
    "digit": ("target", "classifier_dir"),
    "hpsv2": ("path", "hub_id", "filename", "model_name", "dtype"),
    "imagereward": ("path", "hub_id", "tokenizer", "dtype"),
    "incompressibility": ("quality",),
    "noisy-reward": ("path",),
    "pickscore": ("path", "hub_id", "processor", "dtype"),
    "remote": ("url", "token", "batch_size", "timeout", "retries"),
    "shapes-verifier": ("partial",),
    "weighted-sum": ("rewards", "weights"),
}
REWARDS_REQUIRED_OPTIONS = {"noisy-reward": ("path",), "remote": ("url",), "weighted-sum": ("rewards",)}

KERNELS = ("ddim", "ddpm", "euler", "flow-sde")

# RLG's recommended range is w in [1, 3] (arXiv:2508.21016); 1.5 extrapolates past the tuned model a little
DEFAULT_RLG_WEIGHT = 1.5


def is_user_reward(text: str) -> bool:
    """``FILE.py:NAME`` or ``module:NAME``, your own reward (:mod:`diffalign.user_rewards` loads it; a
    registered name never holds a colon)."""
    return ":" in text and "=" not in text and "," not in text


def parse_count(text: str) -> int:
    """A positive integer written as 20000, 20_000 or 2e4 (an argparse ``type``)."""
    value: Any
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = None
    if value is None or value != value or value in (float("inf"), float("-inf")) or value != int(value) or value < 1:
        raise DiffalignError(f"nfe must be a positive integer such as 20000, 20_000 or 2e4, got {text!r}")
    return int(value)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are parsed as YAML scalars (numbers, booleans, null, strings)."""
    from .safe_yaml import load  # yaml is light (tens of ms); keeps `diffalign --help` free of it

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DiffalignError(f"option {pair!r} is not KEY=VALUE")
        options[key.replace("-", "_")] = load(value, f"option {pair!r}")
    return options


def check_options(kind: str, name: str, options: dict, valid: Sequence[str], required: Sequence[str] = ()) -> None:
    """The same one-line errors as the registry's, without importing what the registry holds."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DiffalignError(
            f"unknown option(s) {', '.join(unknown)} for {kind} {name!r}; valid options: {', '.join(valid) or '(none)'}"
        )
    missing = [key for key in required if key not in options]
    if missing:
        raise DiffalignError(f"{kind} {name!r} needs option(s): {', '.join(missing)}")


ATTENTION_BACKENDS = ("sdpa", "xformers")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other host name may resolve to an outside address
        return False


def check_serve_args(args) -> dict:
    """``diffalign serve-reward``: the reward name and options, the bind and the limits; returns the options."""
    options = parse_options(args.option)
    if not args.imports:  # rewards registered by --import modules are only known after importing them
        if args.reward not in REWARD_OPTIONS:
            raise choice_error("reward", args.reward, list(REWARD_OPTIONS))
        check_options("reward", args.reward, options, REWARD_OPTIONS[args.reward],
                      REWARDS_REQUIRED_OPTIONS.get(args.reward, ()))
    if not 0 <= args.port <= 65535:
        raise DiffalignError(f"--port must be in 0..65535 (0: any free port); got {args.port}")
    if args.max_batch < 1:
        raise DiffalignError(f"--max-batch must be a positive integer; got {args.max_batch}")
    if not args.max_mb > 0:
        raise DiffalignError(f"--max-mb must be positive; got {args.max_mb}")
    if not is_loopback(args.host) and not args.token and not args.force:
        raise DiffalignError(
            f"refusing to serve on non-loopback host {args.host!r} without --token: anyone who can reach the port "
            "could use it; pass --token T (clients: token=T), or --force to serve without one"
        )
    return options


def hub_download_message(repo_id: str, reason: str) -> str:
    """The one line for a hub id that is not on this machine."""
    return (f"model {repo_id!r} must be downloaded first ({reason}): run `huggingface-cli download {repo_id} "
            f"--local-dir DIR` on a machine with network, then pass --model DIR")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def check_model(name_or_path: str) -> None:
    """Refuse a model that is neither embedded, nor a diffusers directory, nor a hub id (cached, or online)."""
    if name_or_path in MODELS:
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists() and not any(
                (path / sub / "config.json").exists() for sub in ("unet", "transformer")):
            raise DiffalignError(f"{path} is not a diffusers pipeline directory (no model_index.json) and has no "
                                 "unet/ or transformer/ folder with a config.json")
        return
    if path.exists():
        raise DiffalignError(f"model path {path} is a file; pass a diffusers model or pipeline directory")
    if name_or_path.count("/") != 1:
        raise DiffalignError(
            f"unknown model {name_or_path!r}: not an embedded model ({', '.join(MODELS)}), an existing directory "
            "nor a hub id (owner/name)"
        )
    # a hub id: zoo.load_model uses the local cache, downloads when online, or says to download it first


def check_sample_args(args) -> tuple[dict, dict]:
    """Everything about ``diffalign sample`` that can be checked without torch; returns the parsed
    sampler and reward options."""
    if args.sampler not in SAMPLER_OPTIONS:
        raise choice_error("sampler", args.sampler, list(SAMPLER_OPTIONS))
    sampler_options = parse_options(args.option)
    check_options("sampler", args.sampler, sampler_options, SAMPLER_OPTIONS[args.sampler])
    reward_options = parse_options(args.reward_option)
    if args.target is not None:
        reward_options["target"] = args.target
    args.reward_terms = None
    if args.reward is not None and is_user_reward(args.reward):
        pass  # your own FILE.py:NAME reward: imported, and checked, when it is built
    elif args.reward is not None and is_weighted_reward(args.reward):
        args.reward_terms = weighted_reward_terms(args.reward, reward_options)
    elif args.reward is not None:
        if args.reward not in REWARD_OPTIONS:
            raise choice_error("reward", args.reward, list(REWARD_OPTIONS))
        check_options("reward", args.reward, reward_options, REWARD_OPTIONS[args.reward],
                      REWARDS_REQUIRED_OPTIONS.get(args.reward, ()))
    elif reward_options:
        raise DiffalignError("--target and --reward-option need --reward (see 'diffalign list')")
    elif args.sampler in SAMPLERS_NEEDING_REWARD:
        raise DiffalignError(f"sampler {args.sampler!r} needs --reward (see 'diffalign list')")
    check_prompt_args(args)
    check_seed(args.seed)
    if not math.isfinite(args.cfg):  # failed only after the model had loaded (and wrote NaN images)
        raise DiffalignError(f"--cfg must be a finite number, got {args.cfg!r}")
    if args.cfg != 1.0 and args.cond is None and not args.prompt_list:
        # CFG steers toward a condition; without one it would silently sample unconditionally
        raise DiffalignError(f"--cfg {args.cfg:g} needs --cond (the class to guide toward) or --prompt/--prompts; "
                             "without it the samples would be unconditional")
    if args.attention not in (None, *ATTENTION_BACKENDS):
        raise choice_error("attention", args.attention, list(ATTENTION_BACKENDS))
    check_model(args.model)
    check_rlg_args(args)
    check_guidance_args(args)
    return sampler_options, reward_options


def check_guidance_args(args) -> None:
    """--guidance-scale / --guidance-clip: fills ``args.guidance_options`` (RewardGuidance's keywords;
    empty keeps its default clip)."""
    scale, clip = getattr(args, "guidance_scale", None), getattr(args, "guidance_clip", None)
    args.guidance_options = {}
    if scale is None:
        if clip is not None:
            raise DiffalignError("--guidance-clip needs --guidance-scale W (the reward-guidance weight)")
        return
    if not math.isfinite(scale):
        raise DiffalignError(f"--guidance-scale must be a finite number, got {scale!r}")
    if args.reward is None:
        raise DiffalignError("--guidance-scale needs --reward: the (differentiable) reward whose gradient guides")
    if clip is not None:
        args.guidance_options["max_grad_norm"] = parse_clip(clip)


def parse_clip(text: str):
    """--guidance-clip: a positive number, or 'none' for unclipped gradients (None)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise DiffalignError(f"--guidance-clip must be a positive number or 'none' (unclipped), got {text!r}")
    return value


def check_seed(seed: int) -> None:
    """Seeds feed torch's and numpy's generators, which take integers in [0, 2^64)."""
    if not 0 <= seed < 2**64:
        raise DiffalignError(f"--seed must be an integer in [0, 2^64), got {seed}")


def check_prompt_args(args) -> None:
    """--prompt / --prompts FILE / --negative-prompt: fills ``args.prompt_list`` (empty without prompts)."""
    if args.prompt is not None and args.prompts is not None:
        raise DiffalignError("--prompt and --prompts exclude each other (one prompt, or a file of one prompt a line)")
    if args.cond is not None and (args.prompt is not None or args.prompts is not None):
        raise DiffalignError("--cond (a class label for the embedded models) and --prompt/--prompts exclude each other")
    args.prompt_list, args.prompt_metadata = [], None
    if args.prompt is not None:
        if not args.prompt.strip():
            raise DiffalignError("--prompt is blank; give a text prompt")
        args.prompt_list = [args.prompt]
    elif args.prompts is not None:
        from .prompt_files import read_prompt_file

        prompt_set = read_prompt_file(args.prompts, "--prompts")
        args.prompt_list = list(prompt_set.prompts)
        args.prompt_metadata = None if prompt_set.metadata is None else list(prompt_set.metadata)
    if args.negative_prompt is not None and not args.prompt_list:
        raise DiffalignError("--negative-prompt needs --prompt or --prompts")
    if args.negative_prompt is not None and args.cfg == 1.0:
        raise DiffalignError("--negative-prompt is used by classifier-free guidance: also pass --cfg > 1")


def check_rlg_args(args) -> None:
    """--rlg-lora / --rlg-weight: fills in the default weight; refuses contradictory flags."""
    rlg_lora, weight = getattr(args, "rlg_lora", None), getattr(args, "rlg_weight", None)
    if rlg_lora is None:
        if weight is not None:
            raise DiffalignError("--rlg-weight needs --rlg-lora DIR (the tuned LoRA to mix with the model)")
        return
    if getattr(args, "lora", None) is not None:
        raise DiffalignError("--lora and --rlg-lora exclude each other: --rlg-lora already loads the LoRA "
                             "and mixes it with the base model")
    if not Path(rlg_lora).exists():
        raise DiffalignError(f"--rlg-lora {rlg_lora} does not exist (expected a directory with pytorch_lora_weights.safetensors)")
    weight = DEFAULT_RLG_WEIGHT if weight is None else weight
    if not (weight == weight and abs(weight) != float("inf") and weight >= 0):
        raise DiffalignError(f"--rlg-weight must be a finite number >= 0 (0 base, 1 tuned, > 1 extrapolates), got {weight:g}")
    args.rlg_weight = weight


def check_train_config(model_name: str, reward_name: str, reward_options: dict, cond=None) -> None:
    """A training config's model and reward, checked without torch, so a typo such as
    ``reward.name=digt`` fails at once, before the run directory is touched (it used to fail after
    torch loaded, 20-30 s in, leaving config.yaml behind)."""
    if reward_name not in REWARD_OPTIONS:
        raise choice_error("reward (config key 'reward.name')", reward_name, list(REWARD_OPTIONS))
    if not isinstance(reward_options, dict):
        raise DiffalignError(f"config key 'reward.options' must be a mapping, got {reward_options!r}")
    check_options("reward", reward_name, reward_options, REWARD_OPTIONS[reward_name],
                  REWARDS_REQUIRED_OPTIONS.get(reward_name, ()))
    check_model(model_name)
    if model_name in MODELS and cond is not None and (isinstance(cond, bool) or not isinstance(cond, int) or not 0 <= cond <= 9):
        raise DiffalignError(f"config key 'model.cond': {model_name} is conditioned on class labels 0..9 (or null), "
                             f"not {cond!r}")


def is_weighted_reward(text: str) -> bool:
    """``--reward digit=1.0,compressibility=0.1`` (weights) rather than one reward name."""
    return "=" in text or "," in text


def weighted_reward_terms(text: str, options: dict) -> list[tuple[str, float, dict]]:
    """Parse ``name=weight,name=weight`` into (name, weight, that reward's options) for ``weighted-sum``.

    Each reward option goes to every term that takes it (``--target 3`` reaches ``digit`` only); an
    option no term takes, and a term missing a required option, are errors.
    """
    terms = []
    for part in text.split(","):
        name, sep, raw = (piece.strip() for piece in part.partition("="))
        if not name:
            raise DiffalignError(f"--reward {text!r}: expected name=weight,name=weight (e.g. digit=1.0,compressibility=0.1)")
        if name not in REWARD_OPTIONS or name == "weighted-sum":
            raise choice_error("reward", name, [n for n in REWARD_OPTIONS if n != "weighted-sum"])
        weight = _parse_weight(raw, name, text) if sep else 1.0
        if any(name == other for other, _, _ in terms):
            raise DiffalignError(f"--reward {text!r} names {name!r} twice; give each reward once")
        terms.append((name, weight, {k: v for k, v in options.items() if k in REWARD_OPTIONS[name]}))
    taken = {key for name, _, _ in terms for key in REWARD_OPTIONS[name]}
    unknown = sorted(set(options) - taken)
    if unknown:
        raise DiffalignError(f"unknown option(s) {', '.join(unknown)} for rewards {', '.join(n for n, _, _ in terms)}; "
                             f"valid options: {', '.join(sorted(taken)) or '(none)'}")
    for name, _, own in terms:
        check_options("reward", name, own, REWARD_OPTIONS[name], REWARDS_REQUIRED_OPTIONS.get(name, ()))
    return terms


def _parse_weight(raw: str, name: str, text: str) -> float:
    try:
        weight = float(raw)
    except ValueError:
        weight = float("nan")
    if weight != weight or weight in (float("inf"), float("-inf")):
        raise DiffalignError(f"--reward {text!r}: the weight of {name!r} must be a finite number, got {raw!r}")
    return weight


def check_writable_file(path: str, suffix: str = ".png") -> Path:
    """Fail before any compute if the output cannot be written."""
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise DiffalignError(f"output path {out} must end in {suffix}")
    check_writable_dir(out.parent if str(out.parent) else Path("."))
    if out.is_dir():
        raise DiffalignError(f"output path {out} is a directory")
    return out


def check_writable_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DiffalignError(f"cannot create output directory {directory}: {err.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise DiffalignError(f"output directory {directory} is not writable")
    return directory
