"""The uniform sampler interface (design.md §3) and the argument checks every sampler shares."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import DiffalignError, SamplingWarning
from ..models.denoiser import Denoiser
from ..models.wrappers import NFECounter
from .progress import progress_bar

RewardLike = Callable[[torch.Tensor], torch.Tensor]

# A pooled output with fewer distinct samples (or a lower ESS) than this fraction of num_samples
# is mostly copies: warn.
MIN_DIVERSITY_FRACTION = 0.5
# Spending less than this fraction of an explicit nfe budget deserves a warning.
MIN_BUDGET_FRACTION = 0.5


@dataclass
class SampleOutput:
    """What every sampler returns.

    Attributes:
        samples: (num_samples, *shape) in model space (x0); with a prompt set, (P x num_samples, *shape),
            prompt by prompt.
        rewards: (num_samples,) rewards of the samples (None when no reward was given).
        nfe: model evaluations actually spent -- all of them, never more than the budget (with a prompt
            set, the sum over prompts; ``info["nfe_per_prompt"]`` lists each prompt's share).
        prompts: each sample's prompt (None without a prompt set).
        metadata: each sample's prompt metadata (None unless given).
        info: plain Python values (or tensors) about the run. Every sampler records ``seconds`` (wall
            time of the call). Samplers that pool samples (sir, smc, dts, dts-star) add ``distinct``
            (distinct rows in ``samples``) and ``ess`` (effective sample size of the weights they
            resampled from; None for dts-star, a search). Per sampler: ancestral ``kernel``;
            best-of-n ``n``, ``candidate_rewards``; sir ``rollouts``; smc ``particles``,
            ``resamples``; dts/dts-star ``nodes``, ``terminals``, ``state_bytes``,
            ``bytes_per_node``, ``iterations``, ``tree_nfe``, ``memory_full``,
            ``nonfinite_rewards``, ``nodes_chosen``. With a prompt set: ``prompts`` (their number),
            ``nfe_per_prompt``, ``nfe_budget_per_prompt``, ``prompt_batching`` ("shared calls" or
            "one prompt at a time"), and the per-prompt statistics (``ess``, ``log_z``, a tree's
            ``nodes`` ...) as lists, one entry per prompt; plan constants equal for every prompt
            (``n``, ``rollouts``, ``particles``, ``kernel``) are given once.
    """

    samples: torch.Tensor
    rewards: Optional[torch.Tensor]
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)
    prompts: Optional[list[str]] = None
    metadata: Optional[list] = None

    def __repr__(self) -> str:
        parts = [f"samples={tuple(self.samples.shape)}", f"nfe={self.nfe}"]
        if self.rewards is not None and self.rewards.numel():
            r = self.rewards.double()
            parts.append(f"reward mean={r.mean().item():.4g} min={r.min().item():.4g} max={r.max().item():.4g}")
        if self.prompts is not None:
            parts.append(f"prompts={len(dict.fromkeys(self.prompts))}")
        if "distinct" in self.info:
            parts.append(f"distinct={self.info['distinct']}")
        if "seconds" in self.info:
            parts.append(f"seconds={self.info['seconds']:.2f}")
        return f"SampleOutput({', '.join(parts)})"


class Sampler:
    """Base class: subclasses implement :meth:`_sample` on an NFE-counted model."""

    name: str = "sampler"
    needs_reward: bool = False
    #: resamples its outputs from a pool (particles, rollouts, a tree), so outputs can be copies
    pools_samples: bool = False
    #: rows of several prompts share model calls (implements :meth:`_sample_prompts`); otherwise a
    #: prompt set runs one prompt after another
    batches_prompts: bool = False
    #: a one-prompt search whose copies can run as a forest over shared model calls (the tree samplers);
    #: such samplers set ``trees_per_prompt`` and ``max_rows``
    runs_as_forest: bool = False
    trees_per_prompt: int = 1
    max_rows: int = 256
    #: how a prompt's trees' outputs combine: "best" (a search) or "resample" (by each tree's Z-hat)
    forest_merge: str = "resample"

    def __init__(self, progress: Optional[bool] = None, batch_size: int = 512):
        self.progress = progress
        self.batch_size = check_positive_int("batch_size", batch_size)

    def sample(
        self,
        model: Denoiser,
        reward: Optional[RewardLike] = None,
        num_samples: int = 1,
        nfe: Optional[int] = None,
        steps: int = 50,
        seed: int = 0,
        cond: Any = None,
        prompts: Optional[list[str]] = None,
        metadata: Optional[list] = None,
    ) -> SampleOutput:
        """Draw ``num_samples`` samples spending at most ``nfe`` model evaluations.

        Args:
            model: any :class:`Denoiser` (wrap it in :class:`CFGDenoiser` for guidance).
            reward: a reward name, a registered reward or any callable x0 -> (B,) (or (x0, prompts) -> (B,)).
            nfe: the whole budget of model evaluations (None: whatever the method needs); with ``prompts``,
                the budget **per prompt**, so P prompts may spend up to P x nfe.
            steps: denoising steps of one rollout.
            seed: seeds the call's generator; same seed, same samples. With ``prompts``, prompt i uses
                seed + i (see :mod:`diffalign.samplers.prompt_groups`).
            cond: the model's conditioning (for the digits models an int label or LongTensor).
            prompts: a prompt set: ``num_samples`` samples per prompt, ordered prompt by prompt; each
                prompt is the model's condition and each sample's reward sees its own prompt.
                Exclusive with ``cond``.
            metadata: one entry per prompt (e.g. the extra fields of a jsonl prompt file), passed to the reward.
        """
        if not isinstance(model, Denoiser):
            raise DiffalignError(f"model must be a diffalign Denoiser (see da.load_model), got {type(model).__name__}")
        num_samples = check_positive_int("num_samples", num_samples)
        steps = check_positive_int("steps", steps)
        if nfe is not None:
            nfe = check_positive_int("nfe", nfe)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DiffalignError(f"seed must be an integer, got {seed!r}")
        reward_fn = None
        if reward is not None:
            from ..rewards import as_reward

            reward_fn = as_reward(reward)
        elif self.needs_reward:
            raise DiffalignError(f"sampler {self.name!r} needs a reward")
        start = time.perf_counter()
        if prompts is not None or metadata is not None:
            if cond is not None:
                raise DiffalignError("give either cond or prompts, not both: with a prompt set, each prompt is its samples' condition")
            if prompts is None:
                raise DiffalignError("metadata needs prompts: give one metadata entry per prompt")
            out = self._sample_prompt_set(model, reward_fn, prompts, metadata, num_samples, nfe, steps, seed)
        elif self.runs_as_forest and self.trees_per_prompt > 1:
            out = self._sample_forest(model, reward_fn, [None], None, num_samples, nfe, steps, seed, cond)
        else:
            counter = NFECounter(model, budget=nfe)
            generator = torch.Generator(device=model.device).manual_seed(seed)
            with torch.no_grad():
                out = self._sample(counter, reward_fn, num_samples, nfe, steps, generator, cond)
            out.nfe = counter.count
        out.info["seconds"] = time.perf_counter() - start
        if self.pools_samples:
            out.info["distinct"] = count_distinct(out.samples)
            self._warn_if_few_distinct(out, num_samples)
        for message in model.sample_warnings(out.samples):  # e.g. reward guidance that left the data range
            warnings.warn(f"{self.name}: {message}", SamplingWarning, stacklevel=2)
        if out.rewards is not None and out.rewards.numel() and not torch.isfinite(out.rewards).any():
            warnings.warn(f"{self.name}: every returned sample's reward is NaN or infinite; the reward is broken on "
                          "these samples (check it on a few images)", SamplingWarning, stacklevel=2)
        budget = None if nfe is None else nfe * (1 if out.prompts is None else out.info["prompts"])
        if budget is not None and out.nfe < MIN_BUDGET_FRACTION * budget:
            warnings.warn(
                f"{self.name} spent {out.nfe} of the nfe={budget} budget ({out.nfe / budget:.1%}); "
                + ("it draws one rollout per sample, so a larger budget buys nothing (a search sampler such as "
                   "best-of-n, sir, smc or dts spends it)" if self.name == "ancestral"
                   else "see out.info for why it stopped"),
                SamplingWarning, stacklevel=2,
            )
        return out

    def _sample_prompt_set(self, model, reward, prompts, metadata, num_samples, nfe, steps, seed) -> SampleOutput:
        """Every prompt's group in shared model calls (:meth:`_sample_prompts`), or one prompt after
        another with the reward bound to it; ``nfe`` is per prompt."""
        from ..prompting import prompt_scope, reads_prompts
        from ..rewards.prompted import PromptBoundReward
        from .prompt_groups import PromptGroups, check_prompt_list

        prompts, metadata = check_prompt_list(prompts, metadata)
        if self.runs_as_forest and not reads_prompts(model):
            out = self._sample_forest(model, reward, prompts, metadata, num_samples, nfe, steps, seed, None)
            per_prompt, batching = out.info["nfe_per_prompt"], "forest"
        elif self.runs_as_forest:
            # a wrapper reads the prompt of the rows it denoises: one forest per prompt (its trees share
            # calls), run in that prompt's scope; tree j of prompt i keeps its seed, seed + i * m + j
            pieces = []
            for i, prompt in enumerate(prompts):
                entry = None if metadata is None else metadata[i]
                with prompt_scope(prompt, entry):
                    pieces.append(self._sample_forest(model, reward, [prompt], None if metadata is None else [entry],
                                                      num_samples, nfe, steps, seed + i * self.trees_per_prompt, None))
            per_prompt = [piece.nfe for piece in pieces]
            out = _concatenate(pieces)
            out.nfe = sum(per_prompt)
            batching = "one forest per prompt"
        elif self.batches_prompts and not reads_prompts(model):
            groups = PromptGroups.build(model, prompts, metadata, seed)
            counter = NFECounter(model, budget=None if nfe is None else nfe * len(prompts))
            with torch.no_grad():
                out = self._sample_prompts(counter, reward, groups, num_samples, nfe, steps)
            out.nfe = counter.count
            per_prompt = [out.nfe // len(prompts)] * len(prompts)  # every group runs the same plan
            batching = "shared calls"
        else:
            pieces, per_prompt = [], []
            for i, prompt in enumerate(prompts):
                entry = None if metadata is None else metadata[i]
                bound = None if reward is None else PromptBoundReward(reward, prompt, entry)
                counter = NFECounter(model, budget=nfe)
                generator = torch.Generator(device=model.device).manual_seed(seed + i)
                with torch.no_grad(), prompt_scope(prompt, entry):
                    piece = self._sample(counter, bound, num_samples, nfe, steps, generator, prompt)
                pieces.append(piece)
                per_prompt.append(counter.count)
            out = _concatenate(pieces)
            out.nfe = sum(per_prompt)
            batching = "one prompt at a time"
        count = out.samples.shape[0] // len(prompts)
        out.prompts = [p for p in prompts for _ in range(count)]
        out.metadata = None if metadata is None else [m for m in metadata for _ in range(count)]
        out.info.update(prompts=len(prompts), nfe_per_prompt=per_prompt, nfe_budget_per_prompt=nfe,
                        prompt_batching=batching)
        return out

    def _sample_prompts(self, model, reward, groups, num_samples, nfe, steps) -> SampleOutput:
        raise NotImplementedError

    def _sample_forest(self, model, reward, prompts, metadata, num_samples, nfe, steps, seed, cond) -> SampleOutput:
        """``trees_per_prompt`` independent trees per prompt (``prompts=[None]``: the one condition ``cond``),
        all sharing model calls (:mod:`diffalign.samplers.forest`). Tree j of prompt i gets seed
        ``seed + i * m + j``, a budget of ``nfe // m`` and ``num_samples`` outputs of its own, exactly as
        alone; a prompt's outputs are its tree's (m = 1), else the best ``num_samples`` of its trees'
        (a search) or ``num_samples`` drawn from their pooled outputs in proportion to each tree's
        estimate of Z (a sampler with ``log_z``; uniform over trees otherwise)."""
        from ..prompting import prompt_scope
        from ..rewards.prompted import PromptBoundReward
        from .forest import run_forest

        m = self.trees_per_prompt
        if nfe is None:
            raise DiffalignError(f"{self.name} needs an nfe budget")
        budget = nfe // m
        if budget < 1:
            raise DiffalignError(f"nfe={nfe} is too small for trees_per_prompt={m} (each tree gets nfe // {m})")

        def job(i: int, j: int):
            prompt = prompts[i]
            entry = None if metadata is None else metadata[i]
            bound = reward if reward is None or prompt is None else PromptBoundReward(reward, prompt, entry)
            tree = self._fresh_copy()

            def run(shared_model):
                counter = NFECounter(shared_model, budget=budget)
                generator = torch.Generator(device=model.device).manual_seed(seed + i * m + j)
                with prompt_scope(prompt, entry):
                    piece = tree._sample(counter, bound, num_samples, budget, steps, generator,
                                         cond if prompt is None else prompt)
                piece.nfe = counter.count
                return piece

            return run

        jobs = [job(i, j) for i in range(len(prompts)) for j in range(m)]
        pieces, stats = run_forest(model, jobs, self.max_rows)
        merged = [self._merge_trees(pieces[i * m:(i + 1) * m], num_samples, seed, i) for i in range(len(prompts))]
        out = _concatenate(merged)
        out.nfe = sum(piece.nfe for piece in pieces)
        out.info.update(trees=len(pieces), trees_per_prompt=m, nfe_per_tree=[piece.nfe for piece in pieces],
                        nfe_per_prompt=[sum(p.nfe for p in pieces[i * m:(i + 1) * m]) for i in range(len(prompts))],
                        model_calls=stats["calls"], rows_per_call=stats["rows_per_call"], max_rows=self.max_rows,
                        network_seconds=stats["network_seconds"], network_cpu_seconds=stats["network_cpu_seconds"])
        if prompts == [None]:  # one condition: per-prompt lists of one entry read as plain values
            out.info = {k: (v[0] if isinstance(v, list) and len(v) == 1 and k != "nfe_per_tree" else v)
                        for k, v in out.info.items()}
        return out

    def _merge_trees(self, pieces: list["SampleOutput"], num_samples: int, seed: int, prompt_index: int) -> "SampleOutput":
        """One prompt's outputs from its trees' (see :meth:`_sample_forest`)."""
        if len(pieces) == 1:
            return pieces[0]
        samples = torch.cat([p.samples for p in pieces])
        rewards = torch.cat([p.rewards for p in pieces])
        if self.forest_merge == "best":
            order = torch.argsort(torch.nan_to_num(rewards.double(), nan=-float("inf")), descending=True, stable=True)
            chosen = order[:num_samples]
        else:
            from .weights import multinomial_resample

            # tree j's outputs are draws from its own estimate of the target: weight it by its Z-hat
            # (an unbiased estimate of Z for the exact dts), split over its outputs
            sizes = torch.tensor([len(p.samples) for p in pieces])
            log_z = torch.tensor([float(p.info.get("log_z", 0.0)) for p in pieces], dtype=torch.float64)
            log_w = (log_z - sizes.double().log()).repeat_interleave(sizes)
            key = int(np.random.SeedSequence([seed, prompt_index, 7]).generate_state(1)[0])
            chosen = multinomial_resample(log_w, num_samples, torch.Generator().manual_seed(key))
        return SampleOutput(samples[chosen], rewards[chosen], nfe=0, info=_tree_info(pieces))

    def _fresh_copy(self) -> "Sampler":
        """A copy with its own search state, for one tree of a forest."""
        import copy

        return copy.copy(self)

    def _warn_if_few_distinct(self, out: SampleOutput, num_samples: int) -> None:
        distinct, ess = out.info["distinct"], out.info.get("ess")
        if isinstance(ess, list):  # a prompt set (or a forest): its worst prompt or tree
            ess = min(_numbers(ess), default=None)
        if out.prompts is not None:  # distinct samples per prompt, on average
            distinct = distinct / out.info["prompts"]
        floor = MIN_DIVERSITY_FRACTION * num_samples
        if num_samples > 1 and (distinct < floor or (ess is not None and ess < floor)):
            ess_text = f", ESS {ess:.1f}" if ess is not None else ""
            where = " per prompt" if out.prompts is not None else ""
            warnings.warn(
                f"{self.name}: only {distinct:g} distinct sample(s){where} among {num_samples}{ess_text}; the outputs are "
                "mostly copies -- raise nfe (or lower lam)",
                SamplingWarning, stacklevel=3,
            )

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond) -> SampleOutput:
        raise NotImplementedError

    def show_progress(self) -> bool:
        """Bars are on unless ``progress=False`` (tqdm.auto: a widget in Jupyter, text elsewhere)."""
        return self.progress is not False

    def progress_bar(self, iterable=None, **kwargs):
        """A tqdm bar that honours ``progress``: None shows it only for runs longer than a few seconds."""
        return progress_bar(iterable, progress=self.progress, **kwargs)


def _numbers(value) -> list[float]:
    """The numbers in a value that may nest lists (per prompt, per tree)."""
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [] if value is None else [float(value)]


def _tree_info(pieces: list[SampleOutput]) -> dict:
    """A prompt's info from its trees': each key as a list with one entry per tree."""
    keys = dict.fromkeys(key for piece in pieces for key in piece.info)
    return {key: [piece.info.get(key) for piece in pieces] for key in keys}


def _concatenate(pieces: list[SampleOutput]) -> SampleOutput:
    """One output from one-prompt outputs: samples and rewards in prompt order; each info value as a list
    with one entry per prompt, except a plan constant (an int, string or flag equal for every prompt,
    such as best-of-n's ``n``), which is given once."""
    rewards = None if pieces[0].rewards is None else torch.cat([p.rewards for p in pieces])
    keys = dict.fromkeys(key for piece in pieces for key in piece.info)
    info = {}
    for key in keys:
        values = [piece.info.get(key) for piece in pieces]
        constant = all(type(v) in (int, str, bool) and v == values[0] for v in values)
        info[key] = values[0] if constant else values
    return SampleOutput(torch.cat([p.samples for p in pieces]), rewards, nfe=0, info=info)


def count_distinct(samples: torch.Tensor) -> int:
    return int(torch.unique(samples.reshape(len(samples), -1), dim=0).shape[0])


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DiffalignError(f"{name} must be a positive integer, got {value!r}")
    return value


def too_small_budget(sampler: str, nfe: int, needed: int, what: str) -> DiffalignError:
    return DiffalignError(f"nfe={nfe} is too small for {sampler}: {what} needs at least {needed} NFE")
