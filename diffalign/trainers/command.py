"""``diffalign train CONFIG --output-dir DIR [...]``: the run directory's life cycle around a Trainer.

* A new (or empty) DIR starts a run and records its resolved config in ``DIR/config.yaml``.
* Rerunning the same command on DIR resumes from the latest complete checkpoint. The config must match
  the recorded one, except for the keys in
  :data:`~diffalign.trainers.recorded_config.RESUMABLE_CHANGES` (so a run can be extended).
* ``--overwrite`` starts afresh over DIR, only when DIR holds a diffalign run and nothing else
  (:mod:`.run_dir`); a used DIR without a run is refused, and so is one another run holds (``DIR/.lock``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DiffalignError
from .recorded_config import check_recorded_config
from .run_dir import CONFIG_FILE, RunLock

def resolve_config(args):
    from . import load_config

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.checkpoint_every is not None:
        overrides.append(f"train.checkpoint_every={args.checkpoint_every}")
    config = load_config(args.config, overrides)
    from ..cli_validation import check_train_config

    if getattr(args, "plan", False):
        from .memory_plan import ARCHITECTURES

        if config.model.name in ARCHITECTURES:  # a published architecture: planned from its config, nothing to load
            return config
    check_train_config(config.model.name, config.reward.name, config.reward.options, config.model.cond)
    return config


def prepare_output_dir(directory: Path, config_dict: dict, overwrite: bool, is_main: bool, before_writing=None):
    """Check DIR against the new config, call ``before_writing`` (the CLI builds the trainer there, so
    a model or reward that fails to load writes nothing), then (main process) write ``config.yaml``.
    Returns what ``before_writing`` returned.

    Called with the config already validated and, on the main process, the run lock held: so
    ``--overwrite`` deletes nothing for a bad config, nothing during another run, and (see
    :func:`~diffalign.trainers.run_dir.check_overwritable`) nothing that is not a diffalign run's.
    """
    import yaml

    from ..atomic import atomic_write_bytes
    from .run_dir import LOCK_FILE, check_overwritable, remove_leftovers, remove_run

    recorded_path = directory / CONFIG_FILE
    used = False
    if is_main:
        # only the main process looks at the directory: the others checking it too raced with the main
        # process's writes (rank 1 saw a half-prepared directory: exit 2 in about 1 start in 3)
        if directory.exists() and not directory.is_dir():
            raise DiffalignError(f"output directory {directory} is a file")
        used = directory.is_dir() and any(c.name != LOCK_FILE for c in directory.iterdir())
        if used and overwrite:
            check_overwritable(directory)
        elif used:
            if not recorded_path.is_file():
                raise DiffalignError(f"output directory {directory} is not empty and holds no diffalign run (no {CONFIG_FILE}); "
                                     "use another --output-dir")
            check_recorded_config(directory, config_dict)
    result = before_writing() if before_writing is not None else None
    if not is_main:
        return result
    if used and overwrite:
        remove_run(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_leftovers(directory)
        atomic_write_bytes(recorded_path, yaml.safe_dump(config_dict, sort_keys=False).encode())
    except OSError as err:
        raise DiffalignError(f"cannot write to output directory {directory}: {err.strerror}") from None
    return result


def run_train(args) -> None:
    from .config import describe, to_dict

    if args.show_config:
        from .configs import config_class

        print("\n".join(describe(config_class(args.config))))
        return
    config = resolve_config(args)  # every config error surfaces here, before heavy imports
    if args.plan:
        print(plan_text(config, args.num_processes, args.device_memory))
        return
    directory = Path(args.output_dir)
    _check_writable(directory)

    from .sharding import refuse_accelerate_fsdp

    refuse_accelerate_fsdp()  # before accelerate's own state reads that config
    from accelerate import PartialState

    from .base import no_accelerator

    from .process_watch import process_group_timeout

    # the process group is created here, so its collective timeout is set here (the trainer's Accelerator reuses it)
    state = PartialState(cpu=no_accelerator(), timeout=process_group_timeout(config.train.collective_timeout_s))
    lock = None
    if state.is_main_process:
        if directory.exists() and not directory.is_dir():
            raise DiffalignError(f"output directory {directory} is a file")
        lock = RunLock(directory).acquire()
    try:
        from . import get_trainer

        trainer = prepare_output_dir(directory, to_dict(config), args.overwrite, state.is_main_process,
                                     before_writing=lambda: get_trainer(config.method)(config, directory))
        state.wait_for_everyone()
        metrics = trainer.train()
    finally:
        if lock is not None:
            lock.release()
    if state.is_main_process and not metrics:
        print(f"{directory} is already at step {trainer.step} (train.max_steps); nothing to train, final weights in {directory / 'final'}")
    elif state.is_main_process:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in ("loss", "reward", "seconds"))
        processes = f" on {state.num_processes} processes" if state.num_processes > 1 else ""
        print(f"trained {config.method} to step {trainer.step}{processes} ({summary}); final weights in {directory / 'final'}")


def plan_text(config, processes=None, device_memory_gb=None) -> str:
    """``diffalign train CONFIG --plan``: the memory plan of the run (:mod:`.memory_plan`), no weights read."""
    if processes is not None and processes < 1:
        raise DiffalignError(f"--num-processes must be >= 1, got {processes}")
    if device_memory_gb is not None and not device_memory_gb > 0:
        raise DiffalignError(f"--device-memory must be > 0 GiB, got {device_memory_gb}")
    from .memory_plan import architecture_of, format_table, machine_memory_bytes, plan_table

    processes = processes or 1
    device = int(device_memory_gb * 2**30) if device_memory_gb else machine_memory_bytes()
    mc, tc = config.model, config.train
    network, latent, tokens, what = architecture_of(mc.name)
    rows = plan_table(network, latent, tokens, lora_rank=mc.lora_rank, lora_target_modules=mc.lora_target_modules,
                      needs_reference=_needs_reference(config), ema=tc.ema_decay > 0,
                      mixed_precision=tc.mixed_precision, gradient_checkpointing=mc.gradient_checkpointing,
                      processes=processes, device_bytes=device, offload=tuple(tc.offload), optimizer_kind=tc.optimizer)
    mine = ("full" if mc.full_finetune else "LoRA") + (", fsdp" if tc.sharding == "fsdp" else "")
    notes = [
        f"  * this config. A row = one sample of {what} in one forward pass with gradient;",
        f"    act/row: saved activations (meta-device trace{', gradient checkpointing' if mc.gradient_checkpointing else ''}"
        f"{', x0.5 for ' + tc.mixed_precision if tc.mixed_precision != 'no' else ''}); max rows: (90% of the device - static) / act/row.",
        "    fsdp divides weights, grads, AdamW moments, reference and EMA by P (dim 0, padded); 'gathered' is FSDP's",
        "    transient (root parameters + 2 blocks); activations are never divided. Planned, not measured: see the README's Scaling out section.",
    ]
    if tc.optimizer == "adamw8bit":
        notes.append("    train.optimizer adamw8bit: 'adamw' holds bitsandbytes' 8-bit moments in the unsharded rows; the fsdp rows "
                     "show torch's AdamW (8-bit AdamW does not take FSDP's shards).")
    if tc.offload:
        notes.append(f"    train.offload {list(tc.offload)}: 'host' is held in CPU memory per process, not on the device; 'static' adds the "
                     "offloaded reference's visit (root + 1 block, unsharded) and 'max rows' checks the EMA's visit after backward.")
    return format_table(f"memory plan: {config.method} on {mc.name} (mixed precision {tc.mixed_precision})", rows,
                        processes, device, marked=mine) + "\n" + "\n".join(notes)


def _needs_reference(config) -> bool:
    """Whether the method keeps a reference policy (GRPO decides per config, by its KL term)."""
    from . import get_trainer

    if config.method == "grpo":
        return config.kl_coef > 0
    return bool(get_trainer(config.method).needs_reference)


def _check_writable(directory: Path) -> None:
    import os

    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise DiffalignError(f"output directory {directory} is not writable")
