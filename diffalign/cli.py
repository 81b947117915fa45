"""`diffalign` command line: demo, sample, train, list, serve-reward.

Every bad input ends with one line on stderr and a non-zero exit (2 for bad input, 1 for anything
unexpected); set DIFFALIGN_DEBUG=1 to see the traceback instead. Input is checked by
:mod:`diffalign.cli_validation` before torch is imported (that import alone takes seconds), so only
the commands themselves import the heavy modules, inside their functions.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from .cli_validation import (
    DEFAULT_RLG_WEIGHT,
    KERNELS,
    MODELS,
    REWARD_OPTIONS,
    SAMPLER_OPTIONS,
    check_sample_args,
    check_seed,
    check_serve_args,
    check_writable_dir,
    check_writable_file,
    is_user_reward,
    parse_count,
    parse_options,  # noqa: F401  (kept importable from here)
)
from .errors import DiffalignError, JobFailure, SamplingWarning, report_warnings
from .version import __version__

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after every option that has a default worth showing (not None or [])."""

    def _get_help_string(self, action):
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) and shows every default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise DiffalignError(f"{message} (see '{self.prog} --help')")


def _nfe(text: str) -> int:
    try:
        return parse_count(text)
    except DiffalignError as err:  # argparse prefixes it with the option name
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffalign", description="Align diffusion and flow models to rewards.")
    parser.add_argument("--version", action="version", version=f"diffalign {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="text prompts on the embedded shapes model: base vs aligned sampling")
    demo.add_argument("--world", choices=("shapes", "digits"), default="shapes",
                      help="shapes (default): base vs best-of-n, SMC and reward guidance on text prompts; "
                           "digits: base vs best-of-n for a target digit on the digits models")
    demo.add_argument("--out", default="out/demo", help="output directory")
    demo.add_argument("--nfe", type=_nfe, default=None, help="shapes: NFE budget per prompt (default 160)")
    demo.add_argument("--target", type=int, default=None, help="digits: target digit (default 3)")
    demo.add_argument("--num-samples", type=int, default=None, help="digits: samples per row (default 16)")
    demo.add_argument("--candidates", type=int, default=None, help="digits: best-of-n candidates per sample (default 32)")
    demo.add_argument("--steps", type=int, default=None, help="digits: denoising steps (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")

    sample = commands.add_parser("sample", help="draw samples with any sampler and reward")
    sample.add_argument("--model", default="digits", help=f"embedded model ({', '.join(MODELS)}) or diffusers directory")
    sample.add_argument("--sampler", default="ancestral",
                        help=f"one of {', '.join(SAMPLER_OPTIONS)} ('diffalign list' shows their options)")
    sample.add_argument("--reward", default=None,
                        help=f"one of {', '.join(REWARD_OPTIONS)}; your own as FILE.py:NAME; or weights of several, e.g. "
                             "digit=1.0,compressibility=0.1 (a weighted-sum; options go to the rewards that take them)")
    sample.add_argument("--target", type=int, default=None, help="target class for the 'digit' reward")
    sample.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE",
                        help="reward option, repeatable")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, repeatable (e.g. lam=2)")
    sample.add_argument("--nfe", type=_nfe, default=None,
                        help="budget of model evaluations (20000, 20_000 or 2e4); none: what the sampler needs")
    sample.add_argument("--num-samples", type=int, default=16, help="samples to draw")
    sample.add_argument("--steps", type=int, default=None, help="denoising steps per rollout (default: the model's own, 2 for digits-fast, else 50)")
    sample.add_argument("--seed", type=int, default=0, help="random seed")
    sample.add_argument("--cond", type=int, default=None, help="class label (embedded digits models)")
    sample.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (needs --cond)")
    sample.add_argument("--guidance-scale", type=float, default=None, metavar="W",
                        help="reward-gradient guidance toward p(x) exp(W r(x)) with the --reward (differentiable; "
                             "digits models: W in 1..10, see the README's 'Choosing scale and clip')")
    sample.add_argument("--guidance-clip", default=None, metavar="C",
                        help="with --guidance-scale: clip each sample's reward gradient to norm C (default 1; "
                             "'none': unclipped, which on digits turns W >= 1 into noise)")
    sample.add_argument("--out", default="samples.png",
                        help="PNG grid to write (with --prompts: OUT-000.png, ... and OUT.jsonl, one line per prompt)")
    sample.add_argument("--prompt", default=None, help="text prompt (a pipeline directory with a text encoder)")
    sample.add_argument("--prompts", default=None, metavar="FILE",
                        help="prompt file: .txt (one prompt a line) or .jsonl ({\"prompt\": ..., other fields = metadata "
                             "for the reward}); one grid and one JSON line (rewards, NFE) per prompt; --nfe is per prompt; "
                             "under 'accelerate launch' the prompts are split across processes")
    sample.add_argument("--negative-prompt", default=None, help="negative prompt for classifier-free guidance (--cfg)")
    sample.add_argument("--attention", default=None, metavar="BACKEND",
                        help="attention backend: sdpa (PyTorch, the default) or xformers (CUDA, the xformers extra)")

    sample.add_argument("--lora", default=None, help="a trained LoRA directory (diffusers format), e.g. runs/grpo/final")
    sample.add_argument("--rlg-lora", default=None, metavar="DIR",
                        help="RLG: mix the model with itself plus this LoRA (diffusers format, e.g. runs/grpo/final); "
                             "--cfg applies to each")
    sample.add_argument("--rlg-weight", type=float, default=None,
                        help=f"RLG weight w with --rlg-lora: 0 base, 1 tuned, > 1 extrapolates (default {DEFAULT_RLG_WEIGHT:g})")

    train_help = ("fine-tune (flow_dpo, rwr, grpo), fit a noisy reward model (noisy_reward) or a noise hypernetwork "
                  "(hypernoise) from a YAML preset")
    train = commands.add_parser("train", help=train_help, description=train_help)
    train.add_argument("config", help="YAML preset, e.g. configs/grpo_digits.yaml (with --show-config: a method name)")
    train.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    train.add_argument("--output-dir", help="run directory: checkpoints, logs, final/ (rerun to resume)")
    train.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    train.add_argument("--checkpoint-every", type=int, default=None, help="override train.checkpoint_every")
    train.add_argument("--overwrite", action="store_true", help="start afresh over a used --output-dir")
    train.add_argument("--show-config", action="store_true", help="print the method's config keys, defaults and help")
    train.add_argument("--plan", action="store_true", help="print the memory per process (weights, gradients, AdamW, reference, "
                                                           "EMA, activations) for LoRA and full fine-tuning, sharded or not; "
                                                           "builds the network on the meta device, loads no weights, trains nothing")
    train.add_argument("--num-processes", type=int, default=None, metavar="P", help="with --plan: processes to plan for (default 1). With --plan, model.name may also "
                            "be sd3-medium, flux.1-dev or wan2.1-14b (published architectures, built on the meta device)")
    train.add_argument("--device-memory", type=float, default=None, metavar="GB",
                       help="with --plan: memory of one device in GiB (default: this machine's GPU, else its RAM)")

    commands.add_parser("list", help="list models, samplers (with options), rewards and kernels")

    serve = commands.add_parser("serve-reward", help="serve a registered reward over HTTP, for "
                                                     "da.rewards.get('remote', url=...) (docs/rewards.md)")
    serve.add_argument("reward", help=f"a registered reward: {', '.join(REWARD_OPTIONS)}")
    serve.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="reward option, repeatable (e.g. --option target=3, --option path=DIR)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (non-loopback needs --token)")
    serve.add_argument("--port", type=int, default=8123, help="port (0: any free port, printed at start)")
    serve.add_argument("--token", default=None,  # read from the environment later: --help must not print it
                       help="require 'Authorization: Bearer TOKEN' (default: $DIFFALIGN_REWARD_TOKEN, which keeps "
                            "it out of the process list)")
    serve.add_argument("--max-batch", type=int, default=256, help="most images per request")
    serve.add_argument("--max-mb", type=float, default=1024.0, help="largest request body in MiB")
    serve.add_argument("--device", default=None, help="device for the reward (default: cuda when available)")
    serve.add_argument("--force", action="store_true", help="serve on a non-loopback address without a token")
    serve.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE first (it registers more rewards), repeatable")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Like ``parse_args``, but ``train`` takes key.path=value overrides anywhere on its line."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def run_sample(args) -> None:
    sampler_options, reward_options = check_sample_args(args)
    out_path = check_writable_file(args.out)
    if args.lora is not None and not Path(args.lora).exists():
        raise DiffalignError(f"--lora {args.lora} does not exist (expected a directory with pytorch_lora_weights.safetensors)")
    import diffalign as da

    # cheapest first: sampler and reward options fail before the model (diffusers) is loaded
    sampler = da.samplers.get(args.sampler, **sampler_options)
    reward = build_reward(args, reward_options)
    state = _process_state() if args.prompts is not None else None
    device = None if state is None else state.device
    if args.rlg_lora is not None:
        tuned = da.load_model(args.model, lora=args.rlg_lora, device=device)  # one network: the base pass turns the LoRA off
        _set_attention(tuned, args.attention)
        model = da.RLGDenoiser(tuned, tuned, weight=args.rlg_weight, guidance_scale=args.cfg,
                               null_cond=args.negative_prompt)
    else:
        model = da.load_model(args.model, lora=args.lora, device=device)
        _set_attention(model, args.attention)
        if args.steps is None:
            args.steps = getattr(model, "default_steps", 50)
        if args.cfg != 1.0:
            model = da.CFGDenoiser(model, args.cfg, null_cond=args.negative_prompt)
    if args.steps is None:  # the RLG branch above
        args.steps = getattr(tuned, "default_steps", 50)
    if args.guidance_scale is not None:  # after CFG/RLG, as Flow-NRG guides (README: reward-gradient guidance)
        model = da.RewardGuidance(model, reward, scale=args.guidance_scale, **args.guidance_options)
    if state is not None:
        from .cli_prompts import sample_prompts

        sample_prompts(args, state, sampler, model, reward, out_path)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        out = sampler.sample(model, reward, num_samples=args.num_samples, nfe=args.nfe, steps=args.steps,
                             seed=args.seed, cond=None if args.prompt_list else args.cond,
                             prompts=args.prompt_list or None)
    report_warnings(caught)
    da.save_grid(model.decode(out.samples), out_path)
    mean = f"{out.rewards.float().mean().item():.4f}" if out.rewards is not None else "n/a"
    distinct = f" ({out.info['distinct']} distinct)" if "distinct" in out.info else ""
    print(f"wrote {out_path}: {args.num_samples} samples{distinct}, {out.nfe} NFE, mean reward {mean}, "
          f"{out.info['seconds']:.1f} s")


def _process_state():
    """accelerate's process state: one process normally, N under ``accelerate launch``."""
    from accelerate import PartialState

    from .trainers.base import no_accelerator

    return PartialState(cpu=no_accelerator())  # cpu=True: several CPU processes form one (gloo) group


def _set_attention(model, attention) -> None:
    """--attention: check the backend against the model's device and switch its network to it."""
    from .pipelines.attention import check_attention

    if check_attention(attention, model.device) == "xformers":
        model.network.enable_xformers_memory_efficient_attention()


def build_reward(args, reward_options: dict):
    """None, one registered reward, or ``weighted-sum`` of ``--reward name=weight,...``."""
    import diffalign as da

    if args.reward is None:
        return None
    if is_user_reward(args.reward):
        from .user_rewards import load_user_reward

        return load_user_reward(args.reward, reward_options)
    if args.reward_terms is None:
        return da.rewards.get(args.reward, **reward_options)
    parts = [da.rewards.get(name, **options) for name, _, options in args.reward_terms]
    return da.rewards.get("weighted-sum", rewards=parts, weights=[weight for _, weight, _ in args.reward_terms])


def run_list(_args) -> None:
    import diffalign as da

    print("models:   " + ", ".join(MODELS) + " (or a diffusers directory)")
    print("samplers (options and defaults):")
    for name in da.samplers.names():
        options = da.samplers.SAMPLERS.options(name)
        print(f"  {name:10s} " + ", ".join(_option_text(key, value) for key, value in options.items()))
    print("rewards:  " + ", ".join(da.rewards.names()))
    print("kernels:  " + ", ".join(KERNELS))


def _option_text(key: str, default) -> str:
    import inspect

    return f"{key} (required)" if default is inspect.Parameter.empty else f"{key}={default!r}"


def run_demo(args) -> None:
    check_seed(args.seed)
    digits_only = {"--target": args.target, "--num-samples": args.num_samples, "--candidates": args.candidates,
                   "--steps": args.steps}
    if args.world == "shapes":
        given = [name for name, value in digits_only.items() if value is not None]
        if given:
            raise DiffalignError(f"{', '.join(given)} go with --world digits (the shapes demo takes --nfe, --seed, --out)")
        out_dir = check_writable_dir(Path(args.out))
        from .shapes.demo import NFE_PER_PROMPT, run_shapes_demo

        run_shapes_demo(out_dir=out_dir, nfe=NFE_PER_PROMPT if args.nfe is None else args.nfe, seed=args.seed)
        return
    if args.nfe is not None:
        raise DiffalignError("--nfe goes with --world shapes (the digits demo takes --candidates)")
    out_dir = check_writable_dir(Path(args.out))
    from .demo import run_demo as demo

    defaults = {"target": 3, "num_samples": 16, "candidates": 32, "steps": 50}
    chosen = {key: default if getattr(args, key) is None else getattr(args, key) for key, default in defaults.items()}
    demo(out_dir=out_dir, seed=args.seed, **chosen)


def run_train(args) -> None:
    from .trainers.command import run_train as train

    if not args.plan and (args.num_processes is not None or args.device_memory is not None):
        raise DiffalignError("--num-processes and --device-memory go with --plan")
    if not args.show_config and not args.plan and not args.output_dir:
        raise DiffalignError("train needs --output-dir DIR")
    train(args)


def run_serve_reward(args) -> None:
    args.token = args.token or os.environ.get("DIFFALIGN_REWARD_TOKEN") or None
    options = check_serve_args(args)
    import importlib

    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise DiffalignError(f"--import {module}: {err}") from None
    import torch

    import diffalign as da
    from diffalign.rewards.server import serve

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise DiffalignError(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    reward = da.rewards.get(args.reward, **options).to(device)
    serve(reward, host=args.host, port=args.port, token=args.token, max_batch=args.max_batch,
          max_bytes=int(args.max_mb * (1 << 20)), force=args.force)


COMMANDS = {"demo": run_demo, "sample": run_sample, "train": run_train, "list": run_list,
            "serve-reward": run_serve_reward}


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so it unwinds like Ctrl-C: ``finally`` blocks
    release the run lock, atomic writes drop their temporaries, and the exit is one line."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise _Terminated(signum)


def _catch_termination() -> dict:
    """Route SIGTERM and SIGHUP to :class:`_Terminated` (main thread only); returns the old handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            number = getattr(signal, name)
            old[number] = signal.signal(number, _raise_terminated)
    return old


def main(argv: Optional[Sequence[str]] = None) -> int:
    import signal

    debug = os.environ.get("DIFFALIGN_DEBUG") == "1"
    previous = _catch_termination()
    try:
        args = parse_args(build_parser(), argv)
        COMMANDS[args.command](args)
        return 0
    except DiffalignError as err:
        print(f"diffalign: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobFailure as err:
        print(f"diffalign: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except _Terminated as err:
        print(f"diffalign: interrupted ({signal.Signals(err.signum).name})", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("diffalign: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # never a traceback at the CLI
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"diffalign: error: {type(err).__name__}: {message} (set DIFFALIGN_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_FAILURE
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
