"""The `Trainer` base: one small loop on accelerate that every method (DPO, RWR, GRPO) shares.

A method supplies two things (and may override :meth:`Trainer._trainable_parameters`,
:meth:`Trainer.trainable_module` and :meth:`Trainer.write_final` to train a network of its own):

* :meth:`Trainer.make_micro_batch` -- the data of one micro-batch (pairs, weighted samples, rollouts),
  built from a generator seeded by (seed, step, micro-batch index) alone;
* :meth:`Trainer.compute_loss` -- its loss and metrics.

The base does the rest: LoRA or full fine-tuning, AdamW with warm-up and schedule, mixed precision,
gradient accumulation, multi-process gradient averaging, clipping, EMA, tracker logging, a tqdm bar on
the main process, atomic checkpoints and exact resume.

**Data layout.** One optimizer step consumes ``gradient_accumulation_steps x num_processes``
micro-batches; process p takes micro-batches p, p + P, p + 2P, ... Because each micro-batch depends
only on (seed, step, index) and the current weights, a 2-process run sees exactly the micro-batches of
a 1-process run with twice the accumulation, and a resumed run sees exactly those of an uninterrupted
one: resume is bit-exact on CPU.

**Gradient averaging.** Gradients are summed over micro-batches, then averaged across processes with
one all-reduce per step. The model is not wrapped in DDP, because the methods call the network many
times per loss (timesteps, reference passes with the adapters disabled), which DDP's reducer does
not support without static-graph assumptions.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from tqdm.auto import tqdm

from ..errors import DiffalignError
from ..models.lora import adapters_disabled, add_lora, load_lora, save_lora
from . import checkpoint as ckpt
from .config import TrainerConfig
from .offload import HOST, hold_blocks_on_host, on_device
from .process_watch import ProcessWatch, is_collective_failure, process_group_timeout
from .seeding import seeded_generator
from .sharding import full_tensor, gathered, local_tensor, shard_like

CHECKPOINTS = "checkpoints"
FINAL = "final"


def no_accelerator() -> bool:
    """True on a CPU-only machine. accelerate forms a multi-process CPU group (gloo) only when told
    ``cpu=True``; without it, processes started by torchrun or ``accelerate launch --multi_gpu`` each
    believe they are alone."""
    return not torch.cuda.is_available()


def _check_precision_is_free(mixed_precision: str) -> None:
    """accelerate fixes the mixed precision once per process; say so plainly instead of its traceback."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        raise DiffalignError(
            f"train.mixed_precision={mixed_precision!r} differs from the {AcceleratorState().mixed_precision!r} of an "
            "earlier trainer in this process; accelerate sets it once per process, so run this one in a new process"
        )


class Trainer:
    """Base trainer. Subclasses set ``name``, ``config_class`` and implement the two hooks."""

    name = ""
    config_class: type = TrainerConfig
    #: whether the method needs the reference policy (adapters off, or a frozen copy under full fine-tuning)
    needs_reference = False

    def __init__(self, config: TrainerConfig, output_dir, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs
        from diffusers.training_utils import EMAModel

        from .. import rewards
        from ..zoo import load_model

        config.validate()
        self.config = config
        self.output_dir = Path(output_dir)
        tc = config.train
        _check_precision_is_free(tc.mixed_precision)
        self.accelerator = accelerator or Accelerator(
            cpu=no_accelerator(),
            mixed_precision=tc.mixed_precision,
            log_with=None if tc.report_to == "none" else tc.report_to,
            project_dir=str(self.output_dir / "logs"),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=process_group_timeout(tc.collective_timeout_s))],
        )
        from .sharding import refuse_accelerate_fsdp

        refuse_accelerate_fsdp(self.accelerator)
        device = self.accelerator.device
        self.model = load_model(config.model.name).to(device)
        self.network = getattr(self.model, "network", None)
        if self.network is None:
            raise DiffalignError(f"model {config.model.name!r} has no diffusers network to train")
        self.params = self._trainable_parameters()
        self.reference = None
        if config.model.full_finetune and self.needs_reference:
            self.reference = copy.deepcopy(self.model).requires_grad_(False)  # full FT: the one extra copy
        if config.model.gradient_checkpointing:
            if not getattr(self.network, "_supports_gradient_checkpointing", False):
                raise DiffalignError(f"{type(self.network).__name__} does not support gradient checkpointing")
            self.network.enable_gradient_checkpointing()
        # FSDP2 (sharding.py); one process has nothing to shard with, and runs as unsharded
        self.sharded = tc.sharding == "fsdp" and self.accelerator.num_processes > 1
        if self.sharded:
            from .sharding import shard_trainer

            self.params = shard_trainer(self)
        self.reward = rewards.get(config.reward.name, **config.reward.options)
        if isinstance(self.reward, torch.nn.Module):
            self.reward = self.reward.to(device)
        self.cond = config.model.cond
        self.train_prompts = None
        if config.data.train_prompts is not None:
            from .prompt_data import TrainingPrompts

            self.train_prompts = TrainingPrompts(config.data.train_prompts, config.seed, config.data.balance_by)
        self.scorer = None
        if tc.async_scoring:
            from ..rewards.async_scoring import AsyncScorer

            self.scorer = AsyncScorer(self.reward)
        self.evaluator = None
        if config.data.test_prompts is not None:
            from .prompt_eval import PromptEvaluator

            self.evaluator = PromptEvaluator(self)
        from .optimizers import build_optimizer

        optimizer = build_optimizer(self.params, tc)
        # The LR scheduler stays unprepared: accelerate's wrapper steps it once per process.
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.optimizer = self.accelerator.prepare(optimizer)
        # diffusers ramps the decay as (1 + n) / (10 + n) whatever ema_decay says; min_decay = decay turns
        # the ramp off (its first update still copies the weights, decay 0)
        self.ema = EMAModel(self.params, decay=tc.ema_decay, min_decay=0.0 if tc.ema_warmup else tc.ema_decay) if tc.ema_decay > 0 else None
        if "reference" in tc.offload and self.reference is not None and not self.sharded:
            hold_blocks_on_host(self.reference.network, device)  # sharded: FSDP's CPUOffloadPolicy (sharding.py)
        self._place_offloaded()
        self.step = 0
        # heartbeats and the launcher check (process_watch.py); None on one process
        self.watch = ProcessWatch.start_for(self.accelerator, tc.collective_timeout_s, lambda: self.step)

    # -- hooks ---------------------------------------------------------------------------------
    def make_micro_batch(self, step: int, index: int, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def compute_loss(self, batch: Any, update: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def updates_per_step(self) -> int:
        """Optimizer updates on one step's micro-batches (GRPO's inner epochs; 1 otherwise)."""
        return 1

    def data_position(self, step: int) -> int:
        """Micro-batches consumed before ``step`` (recorded in checkpoints)."""
        return step * self.micro_batches_per_step

    # -- prompts and rollouts ------------------------------------------------------------------
    def rollout_rows(self, step: int, index: int, groups: int, group_size: int):
        """Conditions of a micro-batch's ``groups x group_size`` rollouts, group by group, with each row's
        prompt: one prompt per group from the training file, or the fixed ``model.cond``."""
        from .prompt_data import GroupRows, group_rows

        if self.train_prompts is None:
            return GroupRows(self.model.encode_condition(self.cond, groups * group_size), None, None)
        chosen = self.train_prompts.draw(step, index, groups)
        prompt_set = self.train_prompts.prompt_set
        metadata = None if prompt_set.metadata is None else [prompt_set.metadata[i] for i in chosen]
        return group_rows(self.model, [prompt_set.prompts[i] for i in chosen], metadata, group_size)

    def score_rollouts(self, samples: torch.Tensor, rows):
        """The rewards of a micro-batch's samples (``rows``: their prompts), as a tensor, or -- with
        ``train.async_scoring`` -- a Future resolved by :meth:`finish_micro_batch` after the step's
        other micro-batches have rolled out."""
        from .regression import score

        if self.scorer is None:
            return score(self.reward, self.model, samples, rows.prompts, rows.metadata)
        with torch.no_grad():
            images = self.model.decode(samples)
        return self.scorer.submit(images, rows.prompts, rows.metadata)

    def finish_micro_batch(self, batch: Any) -> Any:
        """Complete a micro-batch once all of this process's micro-batches of the step have rolled out
        (a hook: a method that scores asynchronously resolves its rewards here)."""
        return batch

    def policy(self, model):
        """The policy that rolls out (and, for GRPO, whose log-probs are trained): ``model`` under CFG
        when ``model.guidance_scale > 1`` and ``train.rollout_cfg`` (Flow-GRPO samples and computes
        log-probs with CFG), else the conditional model alone."""
        from ..models.wrappers import CFGDenoiser

        scale = self.config.model.guidance_scale
        if scale > 1.0 and self.config.train.rollout_cfg:
            return CFGDenoiser(model, scale)
        return model

    def evaluate(self) -> None:
        """Evaluate the test prompts now (main process; the others wait)."""
        if self.evaluator is None:
            return
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.evaluator.evaluate(self.step)
        acc.wait_for_everyone()

    # -- setup ---------------------------------------------------------------------------------
    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        mc = self.config.model
        self.model.requires_grad_(False)
        if mc.full_finetune:
            self.network.requires_grad_(True)
            return [p for p in self.network.parameters()]
        return add_lora(self.network, mc.lora_rank, mc.lora_alpha, mc.lora_target_modules, self.config.seed)

    def _lr_factor(self, step: int) -> float:
        tc = self.config.train
        if tc.lr_warmup_steps and step < tc.lr_warmup_steps:
            return (step + 1) / tc.lr_warmup_steps
        span = max(1, tc.max_steps - tc.lr_warmup_steps)
        progress = min(1.0, (step - tc.lr_warmup_steps) / span)
        if tc.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if tc.lr_schedule == "linear":
            return 1.0 - progress
        return 1.0

    @property
    def micro_batches_per_step(self) -> int:
        return self.config.train.gradient_accumulation_steps * self.accelerator.num_processes

    def my_micro_batches(self) -> list[int]:
        p, n = self.accelerator.process_index, self.accelerator.num_processes
        return [a * n + p for a in range(self.config.train.gradient_accumulation_steps)]

    @contextlib.contextmanager
    def reference_policy(self) -> Iterator:
        """The reference model for the block: the frozen copy (full FT) or the network with adapters off."""
        if self.reference is not None:
            yield self.reference
        else:
            with adapters_disabled(self.network):
                yield self.model

    def _place_offloaded(self) -> None:
        """Put the EMA shadows on the host under ``train.offload: [ema]`` (after construction, and after a
        resume has written them where the parameters live)."""
        if "ema" in self.config.train.offload and self.ema is not None:
            self.ema.to(device=HOST)

    def trainable_module(self) -> torch.nn.Module:
        """The module whose trainable parameters checkpoints hold (the denoiser; a method that trains a
        separate network, such as the noisy reward model, returns that network)."""
        return self.model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        # under sharding a collective (every process calls it, in the same order); the main process gets the
        # whole tensors on its CPU, the others an empty dict
        state = {name: gathered(p.detach()) for name, p in self.trainable_module().named_parameters() if p.requires_grad}
        return {name: t.clone() for name, t in state.items() if t is not None}

    # -- the loop ------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One step: build this process's micro-batches, then ``updates_per_step`` optimizer updates."""
        acc, tc = self.accelerator, self.config.train
        with acc.autocast():
            batches = [self.make_micro_batch(self.step, i, seeded_generator(self.config.seed, self.step, i))
                       for i in self.my_micro_batches()]
            batches = [self.finish_micro_batch(batch) for batch in batches]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}

        def record(key, value):
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1

        for update in range(self.updates_per_step()):
            finite = True
            for batch in batches:
                with acc.autocast():
                    loss, metrics = self.compute_loss(batch, update)
                finite = finite and bool(torch.isfinite(loss.detach()).all())
                acc.backward(loss / tc.gradient_accumulation_steps)
                for key, value in metrics.items():
                    record(key, value)
            self._average_gradients_across_processes()
            if tc.max_grad_norm > 0:
                record("grad_norm", full_tensor(acc.clip_grad_norm_(self.params, tc.max_grad_norm)))
            if self._update_is_finite(finite):
                self.nonfinite_streak = 0
                self.optimizer.step()
                if self.ema is not None:
                    with on_device(self.ema, self.accelerator.device, "ema" in tc.offload):
                        self.ema.step(self.params)
                    record("ema_decay", self.ema.cur_decay_value)  # the effective decay, below ema_decay during warm-up
            else:
                self._skip_nonfinite_update()
            record("skipped_updates", float(self.nonfinite_streak > 0))
            self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self.step += 1
        totals = {key: sums[key] / counts[key] for key in sums}
        totals["lr"] = self.lr_scheduler.get_last_lr()[0]
        return self._mean_across_processes(totals)

    nonfinite_streak = 0

    def _update_is_finite(self, loss_finite: bool) -> bool:
        """Whether every process's loss and the (averaged) gradient are finite; the processes agree."""
        scaler = getattr(self.accelerator, "scaler", None)
        # under fp16's GradScaler an overflowing gradient is routine (the scaler skips that step and lowers
        # its scale), so only the loss counts there
        grads = [] if scaler is not None and scaler.is_enabled() else [local_tensor(p.grad) for p in self.params if p.grad is not None]
        finite = loss_finite and (not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()))
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.accelerator.device)
            finite = float(self.accelerator.reduce(flag, reduction="sum")[0]) == 0.0
        return finite

    def _skip_nonfinite_update(self) -> None:
        """A NaN/inf loss or gradient: the weights are left as they were (the step count, the data and the
        LR schedule move on), the skip is reported, and ``max_nonfinite_updates`` in a row stop the run
        before anything non-finite can reach a checkpoint."""
        tc = self.config.train
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            self.optimizer.step()  # fp16: the GradScaler skips this step itself and lowers its scale
        self.nonfinite_streak += 1
        if self.accelerator.is_main_process:
            tqdm.write(f"diffalign: warning: step {self.step + 1}: non-finite loss or gradient, update skipped "
                       f"({self.nonfinite_streak} in a row)", file=sys.stderr)
        if self.nonfinite_streak >= tc.max_nonfinite_updates:
            raise DiffalignError(
                f"{self.nonfinite_streak} updates in a row had a non-finite loss or gradient (step {self.step + 1}); "
                f"the run stopped, its last good checkpoint is kept in {self.checkpoints_dir} "
                "(lower train.learning_rate, or check the reward for NaN/inf)"
            )

    def _average_gradients_across_processes(self) -> None:
        if self.accelerator.num_processes == 1 or self.sharded:  # FSDP2 reduce-scatters (averages) in backward
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p, g in zip(self.params, grads):
            p.grad = flat[offset: offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def _mean_across_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.accelerator.num_processes == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist()))

    def train(self, max_steps: Optional[int] = None) -> dict[str, float]:
        """Run (or resume) to ``max_steps``; write checkpoints and the final weights. Returns the last metrics.
        In a multi-process job a failed or timed-out collective becomes a :class:`~diffalign.errors.JobFailure`
        whose one line names the stalled or dead rank."""
        if self.watch is not None:
            self.watch = self.watch.running()
        try:
            return self._train(max_steps)
        except Exception as err:
            if self.watch is None or not is_collective_failure(err):
                raise
            from ..errors import JobFailure

            raise JobFailure(self.watch.failure_line(err)) from None
        finally:
            if self.watch is not None:
                self.watch.stop()

    def _train(self, max_steps: Optional[int]) -> dict[str, float]:
        tc, acc = self.config.train, self.accelerator
        max_steps = max_steps or tc.max_steps
        self.resume()
        if self.step and self.step < max_steps and acc.is_main_process:
            self._retire_final()
        if acc.is_main_process and tc.report_to != "none":
            self._start_trackers()
        bar = tqdm(total=max_steps, initial=self.step, desc=f"train {self.name}", disable=not acc.is_main_process,
                   dynamic_ncols=True)
        metrics: dict[str, float] = {}
        if self.step == 0 and self.config.data.eval_every:
            self.evaluate()  # the base model's line: what every later evaluation is compared with
        start = time.perf_counter()
        try:
            while self.step < max_steps:
                metrics = self.train_step()
                metrics["seconds"] = time.perf_counter() - start
                if self.step % tc.log_every == 0 or self.step == max_steps:
                    acc.log(metrics, step=self.step)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in self.progress_keys})
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and self.step < max_steps:
                    self.save_checkpoint()
                every = self.config.data.eval_every
                if every and self.step % every == 0 and self.step < max_steps:
                    self.evaluate()
        finally:
            bar.close()  # ends the bar's line, so an error (a failed collective's one line) starts a line of its own
        self.save_checkpoint()
        self.evaluate()
        self.save_final()
        acc.end_training()
        return metrics

    progress_keys = ("loss", "reward")

    def _retire_final(self) -> None:
        """An extension (resumed below a larger max_steps) moves the earlier end's final/ aside first."""
        from .run_dir import retire_final

        moved = retire_final(self.output_dir, self.step)
        if moved is not None:
            print(f"diffalign: {self.output_dir / FINAL} (step {self.step}) moved to {moved}: this run extends it and "
                  "writes a new final/ when it ends", file=sys.stderr)

    def _start_trackers(self) -> None:
        """One logging run per run directory. The hyperparameters are recorded once, when the run first
        logs (TensorBoard's add_hparams makes a new sub-directory per call), and a resumed run purges
        what the interrupted one logged after its checkpoint (TensorBoard's ``purge_step``), so no step
        is shown twice; resume is exact, so the purged values are the ones logged again."""
        tc, acc = self.config.train, self.accelerator
        first = not (self.output_dir / "logs" / "diffalign").exists()
        init_kwargs = {"tensorboard": {"purge_step": self.step + 1}} if tc.report_to == "tensorboard" else {}
        acc.init_trackers("diffalign", config=_flat_scalars(self.config) if first else None, init_kwargs=init_kwargs)

    # -- persistence ---------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / CHECKPOINTS

    def save_checkpoint(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        extra = {"data_position": self.data_position(self.step), "method": self.name, **self._scaler_state()}
        if self.sharded:  # each process writes its own shards (DCP); nothing is gathered
            from .sharded_checkpoint import save_sharded_checkpoint

            ema_step = {} if self.ema is None else {"ema_optimization_step": self.ema.optimization_step}
            save_sharded_checkpoint(self.checkpoints_dir, self.step, tensors=self._checkpoint_tensors(),
                                    param_groups=self._param_groups(), scheduler=self.lr_scheduler.state_dict(),
                                    extra={**extra, **ema_step}, keep=self.config.train.keep_checkpoints)
        elif acc.is_main_process and not any(s == self.step for s, _ in ckpt.list_checkpoints(self.checkpoints_dir)):
            ckpt.save_checkpoint(
                self.checkpoints_dir, self.step, trainable=self.trainable_state(),
                optimizer=self.optimizer.optimizer.state_dict(), scheduler=self.lr_scheduler.state_dict(), ema=self._full_ema(),
                extra=extra, keep=self.config.train.keep_checkpoints,
            )
        acc.wait_for_everyone()

    def _checkpoint_tensors(self, saved_names=None) -> dict[str, torch.Tensor]:
        """The training state as flat names -> this process's tensors (DTensor shards under sharding), what a
        sharded checkpoint holds: ``trainable/<param>``, ``optimizer/<param>/<state>``, ``ema/<param>``. The
        tensors share storage with the run's, so reading a checkpoint into them restores the run in place.
        ``saved_names`` (a checkpoint's tensor names and metadata, on resume) creates the AdamW state a fresh
        optimizer does not hold yet: zeros shaped like the parameter, or a scalar ``step``."""
        named = {name: p for name, p in self.trainable_module().named_parameters() if p.requires_grad}
        name_of = {id(p): name for name, p in named.items()}
        tensors = {f"trainable/{name}": p.detach() for name, p in named.items()}
        optimizer = self.optimizer.optimizer
        for p in self.params:
            state = optimizer.state[p]
            prefix = f"optimizer/{name_of[id(p)]}/"
            for key, meta in (saved_names or {}).items():
                if key.startswith(prefix) and key[len(prefix):] not in state:
                    dtype = meta.properties.dtype
                    state[key[len(prefix):]] = (torch.zeros((), dtype=dtype) if len(meta.size) == 0
                                                else torch.zeros_like(p.detach(), dtype=dtype))
            tensors.update({prefix + key: value for key, value in state.items() if torch.is_tensor(value)})
        if self.ema is not None:
            tensors.update({f"ema/{name_of[id(p)]}": shadow for p, shadow in zip(self.params, self.ema.shadow_params)})
        return tensors

    def _param_groups(self) -> list[dict]:
        return [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.optimizer.param_groups]

    def _full_ema(self):
        if self.ema is None:
            return None
        ema = {f"{i}": gathered(t) for i, t in enumerate(self.ema.shadow_params)}
        ema["optimization_step"] = torch.tensor([self.ema.optimization_step], dtype=torch.int64)
        return ema

    def _shard_optimizer_state(self, state: dict) -> dict:
        """An unsharded checkpoint's AdamW state cut into this run's shards (a no-op unsharded)."""
        if not self.sharded:
            return state
        state = dict(state)
        state["state"] = {i: {k: (shard_like(v, self.params[int(i)]) if torch.is_tensor(v) and v.dim() > 0 else v)
                              for k, v in s.items()} for i, s in state["state"].items()}
        return state

    def resume(self) -> bool:
        """Load the latest complete checkpoint, if any. A corrupt one is an error, never skipped."""
        if (self.output_dir / "config.yaml").is_file():  # the API checks a recorded run as the CLI does
            from .recorded_config import check_recorded_config
            from .config import to_dict

            check_recorded_config(self.output_dir, to_dict(self.config))
        if self.accelerator.is_main_process:
            from .run_dir import remove_leftovers

            ckpt.remove_partial_checkpoints(self.checkpoints_dir)
            remove_leftovers(self.output_dir)  # .final.* / .final.old-* of a run killed while writing final/
        found = ckpt.list_checkpoints(self.checkpoints_dir)
        if not found:
            return False
        from .sharded_checkpoint import is_sharded_checkpoint, load_sharded_checkpoint

        sharded = is_sharded_checkpoint(found[-1][1])
        state = load_sharded_checkpoint(found[-1][1]) if sharded else ckpt.load_checkpoint(found[-1][1])
        recorded = state["extra"].get("data_position")
        if recorded is not None and recorded != self.data_position(state["step"]):
            raise DiffalignError(
                f"checkpoint {found[-1][1]} is at data position {recorded} after step {state['step']}, this run would be at "
                f"{self.data_position(state['step'])}: keep train.gradient_accumulation_steps x processes as the run had it")
        if sharded:
            self._read_sharded_state(state)
        else:
            self._load_unsharded_state(state)
        try:
            self.lr_scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise DiffalignError(f"checkpoint {found[-1][1]} holds a scheduler state this run cannot use "
                                 f"({type(err).__name__}); delete it to resume from the previous checkpoint") from None
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state["extra"].get("grad_scaler"):
            scaler.load_state_dict(state["extra"]["grad_scaler"])
        ckpt.restore_rng(state["rng"], state["python_rng"], state["directory"])
        self.step = state["step"]
        self._place_offloaded()
        return True

    def _load_unsharded_state(self, state: dict) -> None:
        """Weights, AdamW and EMA from an unsharded checkpoint, cut into this run's shards when sharded."""
        named = {name: p for name, p in self.trainable_module().named_parameters() if p.requires_grad}
        if set(named) != set(state["trainable"]):
            raise DiffalignError(f"checkpoint {state['directory']} does not match this model's trainable parameters")
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(shard_like(state["trainable"][name], p))
        try:
            self.optimizer.optimizer.load_state_dict(self._shard_optimizer_state(state["optimizer"]))
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise DiffalignError(f"checkpoint {state['directory']} holds an optimizer state this run cannot use "
                                 f"({type(err).__name__}); delete it to resume from the previous checkpoint") from None
        if self.ema is not None and state["ema"] is not None:
            ema = state["ema"]
            self.ema.shadow_params = [shard_like(ema[str(i)], p) for i, p in enumerate(self.params)]
            self.ema.optimization_step = int(ema["optimization_step"][0])

    def _read_sharded_state(self, state: dict) -> None:
        """Weights, AdamW and EMA from a sharded (DCP) checkpoint, written by any number of processes, read
        in place into this run's tensors (shards, or whole tensors when unsharded)."""
        import torch.distributed.checkpoint as dcp

        from .sharded_checkpoint import SHARDS, read_sharded_tensors

        saved = dcp.FileSystemReader(str(state["directory"] / SHARDS)).read_metadata().state_dict_metadata
        tensors = self._checkpoint_tensors(saved_names=saved)
        if not any(k.startswith("ema/") for k in saved):  # EMA switched on at resume starts from the weights
            tensors = {k: v for k, v in tensors.items() if not k.startswith("ema/")}
        expected = {k for k in saved if self.ema is not None or not k.startswith("ema/")}  # EMA switched off: ignored
        if set(tensors) != expected:
            raise DiffalignError(f"checkpoint {state['directory']} does not match this model's trainable parameters")
        with torch.no_grad():
            read_sharded_tensors(state["directory"], tensors)
        for group, saved_group in zip(self.optimizer.optimizer.param_groups, state["extra"]["param_groups"]):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved_group.items()})
        if self.ema is not None and "ema_optimization_step" in state["extra"]:
            self.ema.optimization_step = int(state["extra"]["ema_optimization_step"])

    def _scaler_state(self) -> dict:
        """fp16's GradScaler (loss scale and growth tracker): without it a resumed fp16 run restarts at
        the initial scale of 65,536 and skips steps an uninterrupted run would take."""
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return {}
        return {"grad_scaler": {k: (float(v) if isinstance(v, float) else int(v)) for k, v in scaler.state_dict().items()}}

    def save_final(self) -> Path:
        """``final/``: the LoRA in diffusers format, or (full fine-tuning) a complete model directory
        (whatever :meth:`write_final` writes), with the EMA weights when EMA is on."""
        from ..atomic import atomic_directory

        acc = self.accelerator
        target = self.output_dir / FINAL
        acc.wait_for_everyone()
        if self.sharded:
            from .sharding import unsharded_copy

            with self._ema_weights():
                plain = unsharded_copy(self)  # gathered on every process, held by the main one
            if acc.is_main_process:
                sharded, self.network = self.network, plain
                try:
                    ckpt.check_finite({n: p for n, p in plain.named_parameters()}, f"final weights {target}")
                    with atomic_directory(target) as tmp:
                        self.write_final(tmp)
                finally:
                    self.network = sharded
        elif acc.is_main_process:
            with self._ema_weights():
                ckpt.check_finite(self.trainable_state(), f"final weights {target}")
                with atomic_directory(target) as tmp:
                    self.write_final(tmp)
        acc.wait_for_everyone()
        return target

    def write_final(self, directory: Path) -> None:
        """Write the final weights into ``directory`` (a hook: the LoRA, or the full model directory)."""
        if self.config.model.full_finetune:
            self._save_full_model(directory)
        else:
            save_lora(self.network, directory)

    @contextlib.contextmanager
    def _ema_weights(self):
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def _save_full_model(self, directory: Path) -> None:
        from ..zoo import _network_dir, _resolve

        source = _resolve(self.config.model.name)
        network_dir = _network_dir(source)
        for child in source.iterdir():
            if child != network_dir:
                (shutil.copytree if child.is_dir() else shutil.copy2)(child, directory / child.name)
        self.network.save_pretrained(directory / network_dir.name, safe_serialization=True)


def _flat_scalars(config: TrainerConfig) -> dict:
    """The config flattened to scalar values (what tensorboard's hparams accept)."""
    from .config import to_dict

    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[prefix + key] = value
            else:
                flat[prefix + key] = str(value)

    walk(to_dict(config), "")
    return flat


def load_lora_into(model, path) -> None:
    """Attach a saved LoRA to a loaded denoiser's network."""
    network = getattr(model, "network", None)
    if network is None:
        raise DiffalignError(f"{type(model).__name__} has no diffusers network to load a LoRA into")
    load_lora(network, path)
