"""DTS, exact: a branching tree of base rollouts with importance weights that keep it unbiased.

The target is the DTS paper's (Jain et al., "Diffusion Tree Sampling", NeurIPS 2025, arXiv 2506.20701,
eq. (1)): pi*(x0) proportional to p(x0) exp(lambda r(x0)), with p the law of the base chain. Like DTS,
the sampler grows a tree of partially denoised states whose children are base-kernel draws, so
rollouts share their prefixes. Unlike the paper's algorithm (``preset="paper"``, ``dts_paper.py``),
whose soft-value descent under-tilts at every finite budget we measured, every leaf carries an
importance weight that makes the output exact in the sense below.

**The tree, stage by stage.** Branching levels sit at steps s_1 < ... < s_L of the time grid
(default: one level, a fifth of the steps before x0).

* Stage 0: N0 roots, x_1 ~ N(0, I), each rolled out to x0 by the base kernel. Every rollout leaves
  one node at each branching level it passes and one leaf (x0, reward r).
* Stage l = 1..L: the N_l nodes at level l get M_l = round((children - 1) N_l) extra children. Node i
  receives n_i of them with E[n_i | past] = M_l q_i (systematic sampling, so sum n_i = M_l exactly);
  each child is rolled out from x_{s_l} to x0 by the base kernel, leaving nodes at the deeper levels.
  ``allocation="uniform"`` takes q_i proportional to the node's mass w_i (value-independent: every
  leaf of the tree gets the same weight); ``allocation="value"`` takes
  q = (1 - eps) softmax(log w + lambda v) + eps w / sum(w), where v_i is the reward of the leaf below
  node i (its own rollout's x0, known at that stage).

**Weights.** A root has mass 1. At level l, with beta_l = N_l / (N_l + M_l) fixed by the plan (it does
not depend on any outcome), the rollout that passes through node i carries w_i beta_l on, and each
extra child of node i gets mass w_i (1 - beta_l) / (M_l q_i). A leaf's weight is W = mass exp(lambda r).

**Why it is exact (proof sketch).** Let h(x) = E_p[exp(lambda r(x0)) f(x0) | x] for a test function f.
Order all draws in time and let F be everything drawn so far. Every new state is a base-kernel draw
from its parent given F, and every branching factor is F-measurable at the moment the children are
drawn. By induction from the deepest level up, the leaves below a node x of mass w satisfy
E[sum W f | node created] = w h(x): the continuation contributes beta w h(x); the extra children
contribute E[n_i | F] (1 - beta) w / (M q_i) h(x) = (1 - beta) w h(x), since given F and n_i the
children are independent base draws (q_i may depend on anything in F, e.g. the value v_i). At the
roots, (1/N0) sum_leaves W f(x0) is therefore an **unbiased** estimate of Z E_pi*[f] for every f
(with f = 1, of Z = E_p[exp(lambda r)]: ``out.info["log_z"]`` is the log of that unbiased estimate).
The output resamples leaves proportionally to W, a self-normalised ratio of two unbiased estimates:
it is **consistent** (its error falls like N0^(-1/2), no plateau) but, like SIR, biased at O(1/N0).
With ``children=1`` there is no branching and the sampler is SIR, draw for draw (tested).

**Where it saves.** A leaf that hangs below level l shares the prefix x_1 -> x_{s_l} with its
siblings: ``out.info["prefix_reuse"]`` = 1 - NFE spent / (leaves x steps x passes), the share of model
calls the tree saved against drawing every leaf independently (default: 40%). Siblings are
correlated, so a leaf is worth less than an independent one: the price is at most a factor
sqrt(1 + (children - 1) k / T) in standard error (k = steps below the level), and nothing when the
reward is decided below the branching level.

**Speed.** The stages run as plain batched rollouts: every model call carries up to
``leaves_per_iteration`` rows (default 512, as SIR), the states stay on the model's device, and
allocation and weights are a few vector operations per level -- no per-node Python.

Anytime: ``reuse_tree=True`` grows a second, independent forest on the next :meth:`sample` call and
pools both (roots have mass 1, so pooled weights stay exact); :meth:`draw` resamples without model
calls. ``max_memory_bytes`` caps stored states (branching nodes and leaves): the plan shrinks to fit
and ``out.info["memory_full"]`` says so (``on_memory_full="error"`` raises instead). Without it the
cap is half the storage device's memory (``tree_common.DEFAULT_MEMORY_FRACTION``), and a budget whose
plan needs more is refused at once, in one line (``--nfe 1e12`` used to try to allocate 667 GB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import DiffalignError, choice_error
from ..kernels import Kernel
from ..models.conditioning import index_condition
from . import tree_math
from .base import SampleOutput, Sampler, check_positive_int
from .dts_paper import PaperDTSSampler, branching_steps
from .registry import SAMPLERS
from .rollout import evaluate_reward, initial_noise
from .forest import DEFAULT_MAX_ROWS
from .tree_common import (
    branching_setup, check_forest_options, check_storage_options, memory_cap, tree_key, warn_memory_full,
)
from .weights import effective_sample_size, multinomial_resample

PRESETS = ("exact", "paper")
ALLOCATIONS = ("uniform", "value")
# options that exist only for the paper's algorithm, and only for the exact tree
PAPER_ONLY = ("c_pw", "alpha", "c_uct", "output", "max_idle_iterations")
EXACT_ONLY = ("children", "allocation", "exploration")
DEFAULT_ROWS = 512
# the default branching level: this share of the steps lies below it
DEFAULT_BRANCH_FRACTION = 0.2


def default_branch_steps(steps: int) -> list[int]:
    """One level, DEFAULT_BRANCH_FRACTION of the steps before x0 (none when steps < 2)."""
    below = max(1, round(DEFAULT_BRANCH_FRACTION * steps))
    return [steps - below] if steps - below > 0 else []


def plan_extra_children(roots: int, remaining: list[int], children: float, evals: int, budget: int,
                        fill: bool) -> tuple[list[int], int]:
    """Extra children per level (top-down) for ``roots`` roots within ``budget``; and the NFE it costs.

    ``remaining[l]``: steps from level l to x0. Level l asks for (children - 1) x its node count,
    capped by what the budget still buys; with ``fill`` the budget left at the end buys extra children
    at the last level (so a budget is spent, not wasted on a partial root).
    """
    nodes, extras = roots, []
    left = budget
    for rem in remaining:
        want = int(math.floor((children - 1.0) * nodes + 1e-9))
        m = min(want, left // (evals * rem)) if rem > 0 else 0
        extras.append(m)
        left -= m * evals * rem
        nodes += m
    if fill and remaining:
        more = left // (evals * remaining[-1])
        extras[-1] += more
        left -= more * evals * remaining[-1]
    return extras, budget - left


def stored_nodes(roots: int, extras: list[int]) -> int:
    """Branching-level nodes plus leaves of a planned forest."""
    nodes, total = roots, 0
    for m in extras:
        total += nodes  # the nodes at this level
        nodes += m
    return total + nodes  # + leaves: one per rollout


@dataclass
class Forest:
    """The leaves of the trees grown so far (branching-level states are dropped once their stage is done)."""

    leaves: list[torch.Tensor] = field(default_factory=list)  # x0 states, storage dtype/device
    log_mass: list[torch.Tensor] = field(default_factory=list)  # float64, CPU
    rewards: list[torch.Tensor] = field(default_factory=list)  # float64, CPU (-inf for broken rewards)
    roots: int = 0
    nfe: int = 0
    rollout_steps: int = 0  # steps the leaves would have cost as independent rollouts
    peak_nodes: int = 0
    stages: int = 0

    bytes_per_node: int = 0

    @property
    def num_nodes(self) -> int:
        """Stored states (the leaves; branching-level states are freed after their stage)."""
        return sum(len(x) for x in self.leaves)

    @property
    def state_bytes(self) -> int:
        return self.num_nodes * self.bytes_per_node

    def cat(self):
        return torch.cat(self.leaves), torch.cat(self.log_mass), torch.cat(self.rewards)


class DTSSampler(Sampler):
    """Diffusion Tree Sampling with exact importance weights (default), or the paper's algorithm.

    Args:
        lam: inverse temperature lambda of the target p(x0) exp(lambda r(x0)) (finite, > 0; the paper
            preset also takes inf).
        preset: "exact" (default; module docstring) or "paper" (:class:`~.dts_paper.PaperDTSSampler`:
            Boltzmann selection, progressive widening c_pw = 2, alpha = 0.8, descent output; under-tilts
            at finite budgets -- measured in benchmarks/dts_bias.py and benchmarks/gmm.py).
        children: children per branching node, counting the rollout that passes through it (default 2;
            a float spreads the extras, e.g. 1.5 branches half the nodes). 1 is SIR.
        branch_every / branch_steps: branching levels every ``branch_every`` steps, or at explicit step
            indices. Default (exact): one level a fifth of the steps before x0; (paper): every 10 steps.
        allocation: "uniform" (default, value-independent) or "value" (extra children where the leaf
            below scored high; exact too, see the docstring), with ``exploration`` eps (default 0.2).
        leaves_per_iteration: rows per model call (exact: default 512; paper: selections per batch).
        kernel, kernel_options: the base stochastic kernel (default: DDPM for VP, the flow SDE for flow).
        max_memory_bytes, on_memory_full, storage_dtype, storage_device, nonfinite_reward, reuse_tree:
            as in the paper preset (see ``dts_paper.py``).
        c_pw, alpha, c_uct, output, max_idle_iterations: the paper preset's options.
        trees_per_prompt: independent trees per prompt (or for the one ``cond``), sharing the prompt's
            ``nfe`` (each gets nfe // m) and every model call; their outputs are pooled in proportion to
            each tree's unbiased Z-hat (:mod:`~diffalign.samplers.forest`).
        max_rows: rows per shared model call of a forest (default 256).
    """

    name = "dts"
    pools_samples = True
    needs_reward = True
    runs_as_forest = True

    def __init__(
        self,
        lam: float = 1.0,
        preset: str = "exact",
        children: Optional[float] = None,
        branch_every: Optional[int] = None,
        branch_steps: Optional[list[int]] = None,
        allocation: Optional[str] = None,
        exploration: Optional[float] = None,
        leaves_per_iteration: Optional[int] = None,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        max_memory_bytes: Optional[int] = None,
        on_memory_full: str = "stop",
        storage_dtype: str | torch.dtype = "float32",
        storage_device: Optional[str] = None,
        nonfinite_reward: str = "-inf",
        reuse_tree: bool = False,
        c_pw: Optional[float] = None,
        alpha: Optional[float] = None,
        c_uct: Optional[float] = None,
        output: Optional[str] = None,
        max_idle_iterations: Optional[int] = None,
        trees_per_prompt: int = 1,
        max_rows: int = DEFAULT_MAX_ROWS,
        progress: Optional[bool] = None,
    ):
        super().__init__(progress=progress)
        self.trees_per_prompt, self.max_rows = check_forest_options(trees_per_prompt, max_rows, reuse_tree)
        if preset not in PRESETS:
            raise choice_error("preset", preset, list(PRESETS))
        self.preset = preset
        given = {"c_pw": c_pw, "alpha": alpha, "c_uct": c_uct, "output": output, "max_idle_iterations": max_idle_iterations,
                 "children": children, "allocation": allocation, "exploration": exploration}
        wrong = [k for k, v in given.items() if v is not None and k in (EXACT_ONLY if preset == "paper" else PAPER_ONLY)]
        if wrong:
            other = "exact" if preset == "paper" else "paper"
            raise DiffalignError(f"option(s) {', '.join(wrong)} belong to dts preset={other!r}, not preset={preset!r}")
        self.paper: Optional[PaperDTSSampler] = None
        if preset == "paper":
            self.paper = PaperDTSSampler(
                lam=lam, c_pw=c_pw, alpha=alpha, c_uct=c_uct, branch_every=10 if branch_every is None and branch_steps is None
                else branch_every, branch_steps=branch_steps, leaves_per_iteration=leaves_per_iteration or 16,
                kernel=kernel, kernel_options=kernel_options, max_memory_bytes=max_memory_bytes,
                on_memory_full=on_memory_full, storage_dtype=storage_dtype, storage_device=storage_device,
                nonfinite_reward=nonfinite_reward, reuse_tree=reuse_tree, output=output or "descend",
                max_idle_iterations=max_idle_iterations or 1000, progress=progress,
            )
            self.lam = self.paper.lam
            return
        if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and 0 < lam < math.inf):
            raise DiffalignError(f"lam must be a positive finite number for the exact dts, got {lam!r} "
                                 "(lam=inf is a search: use dts-star, or preset='paper')")
        children = 2.0 if children is None else children
        if isinstance(children, bool) or not isinstance(children, (int, float)) or not children >= 1:
            raise DiffalignError(f"children must be a number >= 1, got {children!r}")
        allocation = allocation or "uniform"
        if allocation not in ALLOCATIONS:
            raise choice_error("allocation", allocation, list(ALLOCATIONS))
        exploration = 0.2 if exploration is None else exploration
        if not (isinstance(exploration, (int, float)) and 0 < exploration <= 1):
            raise DiffalignError(f"exploration must lie in (0, 1], got {exploration!r}")
        storage_dtype = check_storage_options(nonfinite_reward, on_memory_full, storage_dtype, max_memory_bytes)
        if branch_every is not None:
            check_positive_int("branch_every", branch_every)
        self.lam = float(lam)
        self.children = float(children)
        self.branch_every, self.branch_steps = branch_every, branch_steps
        self.allocation, self.exploration = allocation, float(exploration)
        self.rows = check_positive_int("leaves_per_iteration", leaves_per_iteration or DEFAULT_ROWS)
        self.kernel, self.kernel_options = kernel, dict(kernel_options or {})
        self.max_memory_bytes, self.on_memory_full = max_memory_bytes, on_memory_full
        self.storage_dtype, self.storage_device = storage_dtype, storage_device
        self.nonfinite_reward = nonfinite_reward
        self.reuse_tree = bool(reuse_tree)
        self.forest: Optional[Forest] = None
        self._forest_key: Optional[tuple] = None

    def _fresh_copy(self):
        clone = super()._fresh_copy()
        clone.forest, clone._forest_key = None, None
        if self.paper is not None:
            clone.paper = self.paper._fresh_copy()
        return clone

    @property
    def tree(self):
        """The paper preset's tree (``DiffusionTree``), or the exact preset's pooled :class:`Forest`."""
        return self.paper.tree if self.paper is not None else self.forest

    # -- entry points ----------------------------------------------------------------------------------
    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        if self.paper is not None:
            self.paper.name = self.name
            return self.paper._sample(model, reward, num_samples, nfe, steps, generator, cond)
        kernel, encoded, evals = branching_setup(self.name, model, self.kernel, self.kernel_options, cond, nfe, steps)
        if self.branch_steps is None and self.branch_every is None:
            levels = default_branch_steps(steps)
        else:
            levels = branching_steps(steps, self.branch_every, self.branch_steps)[1:-1]
        key = tree_key(model, reward, cond, steps)
        if not (self.reuse_tree and self.forest is not None and self._forest_key == key):
            self.forest, self._forest_key = Forest(), key
        forest = self.forest
        bytes_per_node = math.prod(model.shape) * torch.empty((), dtype=self.storage_dtype).element_size()
        forest.bytes_per_node = bytes_per_node
        storage_device = torch.device(self.storage_device) if self.storage_device else model.device
        roots, extras, memory_full, cap = self._plan(forest, steps, levels, evals, nfe, bytes_per_node, storage_device)
        grid = model.schedule.time_grid(steps)
        info = self._grow(forest, model, reward, kernel, grid, encoded, generator, levels, roots, extras, evals,
                          memory_full)
        out = self._output(forest, num_samples, generator)
        out.info.update(info)
        out.info["bytes_per_node"] = bytes_per_node
        out.info["state_bytes"] = forest.peak_nodes * bytes_per_node
        out.info["max_memory_bytes"] = cap
        if memory_full:
            warn_memory_full(self.name, cap, info)
        return out

    def draw(self, num_samples: int, seed: int = 0) -> SampleOutput:
        """More samples from the current tree, with no model calls (anytime)."""
        if self.paper is not None:
            return self.paper.draw(num_samples, seed)
        if self.forest is None or not self.forest.leaves:
            raise DiffalignError(f"{self.name} has no tree yet: call sample() first")
        generator = torch.Generator().manual_seed(seed)
        return self._output(self.forest, check_positive_int("num_samples", num_samples), generator)

    # -- planning -------------------------------------------------------------------------------------------
    def _plan(self, forest, steps, levels, evals, budget, bytes_per_node, storage_device):
        """Roots and extra children per level that the budget and the memory cap allow, whether the cap
        bound, and the cap (``max_memory_bytes``, or the default share of the device's memory)."""
        remaining = [steps - s for s in levels]
        fill = self.children > 1

        def full_cost(roots):  # the unconstrained plan's cost
            extras = plan_extra_children(roots, remaining, self.children, evals, 1 << 62, False)[0]
            return evals * (roots * steps + sum(m * r for m, r in zip(extras, remaining)))

        hi = budget // (steps * evals)
        roots = max(1, _largest(lambda n: full_cost(n) <= budget, hi))
        memory_full = False
        have = sum(len(x) for x in forest.leaves)
        # the unconstrained plan: returned as is unless an explicit cap binds
        extras = plan_extra_children(roots, remaining, self.children, evals, budget - roots * steps * evals, fill)[0]
        max_bytes = memory_cap(self.name, self.max_memory_bytes, (stored_nodes(roots, extras) + have) * bytes_per_node,
                               storage_device, budget)
        if self.max_memory_bytes is not None:
            cap = self.max_memory_bytes // bytes_per_node - have
            if stored_nodes(1, [0] * len(levels)) > cap:
                raise DiffalignError(f"max_memory_bytes={self.max_memory_bytes} cannot hold even one path "
                                     f"({len(levels) + 1} nodes x {bytes_per_node} bytes)")

            def fits(n):
                shrunk = plan_extra_children(n, remaining, self.children, evals, budget - n * steps * evals, False)[0]
                return stored_nodes(n, shrunk) <= cap

            if stored_nodes(roots, extras) > cap:
                memory_full = True
                if self.on_memory_full == "error":
                    raise DiffalignError(
                        f"{self.name}: tree memory budget of {self.max_memory_bytes} bytes is full; raise "
                        "max_memory_bytes or use on_memory_full='stop'")
                roots = max(1, _largest(fits, roots))
                extras = plan_extra_children(roots, remaining, self.children, evals, budget - roots * steps * evals, False)[0]
        return roots, extras, memory_full, max_bytes

    # -- growing ---------------------------------------------------------------------------------------------
    def _grow(self, forest, model, reward, kernel, grid, cond, generator, levels, roots, extras, evals, memory_full):
        steps = len(grid) - 1
        storage_device = torch.device(self.storage_device) if self.storage_device else model.device
        total = evals * (roots * steps + sum(m * (steps - s) for m, s in zip(extras, levels)))
        bar = self.progress_bar(total=total, desc=self.name, unit="nfe")
        nonfinite = 0
        # node arrays per level: states (model device), log mass of the rollout passing through, reward below
        level_states: list[list[torch.Tensor]] = [[] for _ in levels]
        level_mass: list[list[torch.Tensor]] = [[] for _ in levels]
        level_reward: list[list[torch.Tensor]] = [[] for _ in levels]
        counts = [roots]
        for m in extras:
            counts.append(counts[-1] + m)
        log_beta = [math.log(counts[i] / counts[i + 1]) for i in range(len(levels))]
        nodes_stored = 0
        previous_leaves = sum(len(x) for x in forest.leaves)

        def launch(x_start, start_level, log_mass):
            """Roll rows out from level ``start_level`` (0: fresh noise) to x0, recording the levels below."""
            nonlocal nonfinite, nodes_stored
            start = 0 if start_level == 0 else levels[start_level - 1]
            record = {s: i for i, s in enumerate(levels) if s > start}
            for lo in range(0, len(log_mass), self.rows):
                hi = min(len(log_mass), lo + self.rows)
                x = initial_noise(model, hi - lo, generator) if x_start is None else x_start[lo:hi].to(model.device, model.dtype)
                rows_cond = index_condition(cond, torch.zeros(hi - lo, dtype=torch.long, device=model.device))
                passed = []
                for i in range(start, steps):
                    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                    x = model.denoise_step(x, grid[i], rows_cond, kernel, grid[i + 1], noise)
                    if i + 1 in record:
                        passed.append((record[i + 1], x))
                    bar.update(evals * (hi - lo))
                r = evaluate_reward(reward, model, x, DEFAULT_ROWS).double().cpu()
                bad = ~torch.isfinite(r)
                if bad.any():
                    if self.nonfinite_reward == "error":
                        raise DiffalignError(f"{self.name}: reward returned {r[bad][0].item()} (nonfinite_reward='error')")
                    r[bad] = -math.inf
                    nonfinite += int(bad.sum())
                mass = log_mass[lo:hi]
                for level, state in passed:  # the rollout carries beta of its mass past each level
                    level_states[level].append(state)
                    level_mass[level].append(mass.clone())
                    level_reward[level].append(r)
                    mass = mass + log_beta[level]
                forest.leaves.append(x.to(device=storage_device, dtype=self.storage_dtype))
                forest.log_mass.append(mass)
                forest.rewards.append(r)
                nodes_stored += (hi - lo) * (1 + len(passed))
            forest.rollout_steps += len(log_mass) * steps

        launch(None, 0, torch.zeros(roots, dtype=torch.float64))
        forest.roots += roots
        for level, m in enumerate(extras):
            if m == 0 or not level_states[level]:
                level_states[level] = []
                continue
            states = torch.cat(level_states[level])
            mass, value = torch.cat(level_mass[level]), torch.cat(level_reward[level])
            log_q = tree_math.allocation_log_probabilities(mass, value, self.lam, self.exploration,
                                                           self.allocation == "value")
            u = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device).item()
            n = tree_math.systematic_counts(log_q, m, u)
            parents = torch.repeat_interleave(torch.arange(len(n)), n)
            child_mass = mass[parents] + math.log1p(-math.exp(log_beta[level])) - math.log(m) - log_q[parents]
            level_states[level] = []  # the states below are recorded afresh by the children
            launch(states[parents.to(states.device)], level + 1, child_mass)
            forest.stages += 1
        forest.nfe += total
        forest.peak_nodes = max(forest.peak_nodes, previous_leaves + nodes_stored)
        if memory_full:
            bar.set_postfix_str("tree memory full", refresh=False)
        bar.close()
        leaves = sum(len(x) for x in forest.leaves)
        return {
            "nodes": nodes_stored,
            "terminals": leaves,
            "roots": forest.roots,
            "iterations": forest.stages,
            "tree_nfe": forest.nfe,
            "memory_full": memory_full,
            "nonfinite_rewards": nonfinite,
            "prefix_reuse": 1.0 - forest.nfe / (evals * forest.rollout_steps) if forest.rollout_steps else 0.0,
        }

    # -- output ------------------------------------------------------------------------------------------------
    def _output(self, forest: Forest, num_samples: int, generator: torch.Generator) -> SampleOutput:
        leaves, log_mass, rewards = forest.cat()
        log_w = torch.where(torch.isfinite(rewards), log_mass + self.lam * rewards, torch.full_like(rewards, -math.inf))
        if not torch.isfinite(log_w.max()):
            raise DiffalignError(f"{self.name}: every sample in the tree has reward -inf (or NaN/+inf); nothing to resample")
        chosen = multinomial_resample(log_w, num_samples, generator).to(leaves.device)
        samples = leaves[chosen].to(torch.float64 if self.storage_dtype == torch.float64 else torch.float32)
        log_z = float(torch.logsumexp(log_w, 0) - math.log(forest.roots))
        return SampleOutput(samples, rewards[chosen.cpu()].float(), nfe=0,
                            info={"ess": effective_sample_size(log_w), "log_z": log_z})


SAMPLERS.register("dts")(DTSSampler)


def _largest(predicate, hi: int) -> int:
    """Largest n in [1, hi] with predicate(n) (monotone: true then false); 0 if none."""
    lo, best = 1, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if predicate(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
