"""`diffalign` command line: demo, sample, train, list.

Every bad input ends with one line on stderr and a non-zero exit (2 for bad input, 1 for anything
unexpected); set DIFFALIGN_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import DiffalignError

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump)."""

    def error(self, message: str):
        raise DiffalignError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffalign", description="Align diffusion and flow models to rewards.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="base vs best-of-n on the embedded digits models")
    demo.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    demo.add_argument("--target", type=int, default=3, help="target digit (default: 3)")
    demo.add_argument("--num-samples", type=int, default=16)
    demo.add_argument("--candidates", type=int, default=32, help="best-of-n candidates per sample")
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--seed", type=int, default=0)

    sample = commands.add_parser("sample", help="draw samples with any sampler and reward")
    sample.add_argument("--model", default="digits", help="embedded name or diffusers directory")
    sample.add_argument("--sampler", default="ancestral")
    sample.add_argument("--reward", default=None, help="reward name (see 'diffalign list')")
    sample.add_argument("--target", type=int, default=None, help="target class for the 'digit' reward")
    sample.add_argument("--reward-option", action="append", default=[], metavar="KEY=VALUE")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    sample.add_argument("--nfe", type=int, default=None, help="budget of model evaluations")
    sample.add_argument("--num-samples", type=int, default=16)
    sample.add_argument("--steps", type=int, default=50)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--cond", type=int, default=None, help="class label (embedded digits models)")
    sample.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale")
    sample.add_argument("--out", default="samples.png", help="PNG grid to write")

    sample.add_argument("--lora", default=None, help="a trained LoRA directory (diffusers format), e.g. runs/grpo/final")

    train = commands.add_parser("train", help="fine-tune with a YAML preset (flow_dpo, rwr, grpo)")
    train.add_argument("config", help="YAML preset, e.g. configs/grpo_digits.yaml (with --show-config: a method name)")
    train.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    train.add_argument("--output-dir", help="run directory: checkpoints, logs, final/ (rerun to resume)")
    train.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    train.add_argument("--checkpoint-every", type=int, default=None, help="override train.checkpoint_every")
    train.add_argument("--overwrite", action="store_true", help="start afresh over a used --output-dir")
    train.add_argument("--show-config", action="store_true", help="print the method's config keys, defaults and help")

    commands.add_parser("list", help="list models, samplers, rewards and kernels")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Like ``parse_args``, but ``train`` takes key.path=value overrides anywhere on its line."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    return args


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are parsed as YAML scalars (numbers, booleans, null, strings)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DiffalignError(f"option {pair!r} is not KEY=VALUE")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


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


def _reward_options(args) -> dict[str, Any]:
    options = parse_options(args.reward_option)
    if args.target is not None:
        options["target"] = args.target
    return options


def run_sample(args) -> None:
    import diffalign as da

    from .images import save_grid

    out_path = check_writable_file(args.out)
    model = da.load_model(args.model, lora=args.lora)
    if args.cfg != 1.0:
        model = da.CFGDenoiser(model, args.cfg)
    reward = da.rewards.get(args.reward, **_reward_options(args)) if args.reward else None
    sampler = da.samplers.get(args.sampler, progress=True, **parse_options(args.option))
    out = sampler.sample(model, reward, num_samples=args.num_samples, nfe=args.nfe, steps=args.steps,
                         seed=args.seed, cond=args.cond)
    save_grid(model.decode(out.samples), out_path)
    mean = f"{out.rewards.float().mean().item():.4f}" if out.rewards is not None else "n/a"
    print(f"wrote {out_path}: {args.num_samples} samples, {out.nfe} NFE, mean reward {mean}")


def run_list(_args) -> None:
    import diffalign as da
    from diffalign.models.zoo import EMBEDDED

    print("models:   " + ", ".join(sorted(EMBEDDED)) + " (or a diffusers directory)")
    print("samplers: " + ", ".join(da.samplers.names()))
    print("rewards:  " + ", ".join(da.rewards.names()))
    print("kernels:  " + ", ".join(da.kernels.KERNELS.names()))


def run_demo(args) -> None:
    from .demo import run_demo as demo

    demo(out_dir=check_writable_dir(Path(args.out)), target=args.target, num_samples=args.num_samples,
         candidates=args.candidates, steps=args.steps, seed=args.seed)


def run_train(args) -> None:
    from .trainers.command import run_train as train

    if not args.show_config and not args.output_dir:
        raise DiffalignError("train needs --output-dir DIR")
    train(args)


COMMANDS = {"demo": run_demo, "sample": run_sample, "train": run_train, "list": run_list}


def main(argv: Optional[Sequence[str]] = None) -> int:
    debug = os.environ.get("DIFFALIGN_DEBUG") == "1"
    try:
        args = parse_args(build_parser(), argv)
        COMMANDS[args.command](args)
        return 0
    except DiffalignError as err:
        print(f"diffalign: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
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


if __name__ == "__main__":
    sys.exit(main())
