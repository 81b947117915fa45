"""The paper's DTS and DTS* (Jain et al., "Diffusion Tree Sampling", NeurIPS 2025, arXiv 2506.20701).

``da.samplers.get("dts", preset="paper")`` runs :class:`PaperDTSSampler`; ``"dts-star"`` runs
:class:`DTSStarSampler`. The default ``dts`` is the exact tree sampler of ``dts.py``.

The tree reuses every rollout: a node is a partially denoised state, its soft value estimates
V_t(x_t) = (1/lambda) log E[exp(lambda r(x0)) | x_t], and new children are drawn from the *base*
stochastic kernel (their Prop. 1 claims convergence to pi*(x0) proportional to p(x0) exp(lambda r(x0))).

One iteration (their Algorithm 1), run for many rollouts at once:

1. *select*: from the dummy root, descend while a node is fully widened (|children| >= C N^alpha),
   choosing a child with probability proportional to exp(lambda v) (DTS) or by UCT (DTS*);
   visit counts are incremented on the way down, so the selections in flight spread out;
2. *expand + roll out*: each selected node gets one new child from the base kernel, and the rollout
   continues to x0, adding a node at every branching level. Up to ``leaves_per_iteration`` rollouts
   are in flight, each at its own step, one batched model call per step; a finished rollout's row is
   refilled by a new selection at once (continuous batching, ``tree_rollouts.py``);
3. *reward*: r(x0) for each new sample -- the only reward calls;
4. *backup*: soft values (log-mean-exp over all children; max for lambda = inf) from the new
   leaves to the root.

Output: DTS draws each sample by descending from the root with P(child) proportional to
exp(lambda v), which needs no model call -- the method is anytime (see ``draw``).

**Measured bias.** With the paper's widening (c_pw = 2, alpha = 0.8) this output under-tilts at every
budget we can afford, and the error does not fall with budget: on the linear-Gaussian oracle the
tilted mean is 0.51-0.55 against the exact 0.71 at 2k-8k rollouts (benchmarks/dts_bias.py), and on
the 2-D GMM the mode TV stays near 0.11 from 1e4 to 1e6 NFE while SIR falls below 0.01
(benchmarks/gmm.py). The cause is the sample mean under data-dependent allocation: a child whose
first rollouts scored high is selected, widened and averaged down by later rollouts, while a child
that scored low is left alone. The default ``dts`` (``dts.py``) is exact instead.

``output="reweight"`` (experimental, not in the paper) instead resamples the tree's samples with
their selection's importance weight against a uniform descent. It is a heuristic correction, not
exact: a uniform descent over an adaptively widened tree is not the base law (a node's child count
depends on its children's values), selections discarded within a batch condition the proposal, and
-inf children change the support. It shrinks the descent's bias on the Gaussian oracle
(benchmarks/dts_bias.py) without any guarantee.
DTS* returns the highest-reward samples it found.

Bounded memory: ``max_memory_bytes`` caps stored states. When the next batch of nodes would not
fit, the search stops growing the tree and samples from the tree it has (``on_memory_full="stop"``,
the default; ``out.info["memory_full"]`` says so) or raises (``"error"``).

Non-finite rewards: ``nonfinite_reward="-inf"`` (default) scores NaN/inf samples as -inf, so they get
zero probability and never poison a soft value; ``"error"`` raises instead.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DiffalignError, choice_error
from ..kernels import Kernel
from . import tree_math
from .base import SampleOutput, Sampler, check_positive_int
from .registry import SAMPLERS
from .rollout import evaluate_reward
from .tree import ROOT, DiffusionTree
from .forest import DEFAULT_MAX_ROWS
from .tree_common import (
    branching_setup, check_forest_options, check_storage_options, memory_cap, tree_key, warn_memory_full,
)
from .tree_rollouts import RolloutPool

OUTPUT_CHOICES = ("descend", "reweight")
# selections tried per free row before the next model call goes ahead with the rows it has
SELECTIONS_PER_SLOT = 16


def branching_steps(steps: int, branch_every: Optional[int], branch_steps: Optional[list[int]]) -> list[int]:
    """Step indices of the tree levels: 0 (x_1), the branching steps, and ``steps`` (x_0)."""
    if branch_steps is not None:
        inner = sorted(set(int(s) for s in branch_steps))
        if any(s <= 0 or s >= steps for s in inner):
            raise DiffalignError(f"branch_steps must lie strictly between 0 and steps={steps}, got {branch_steps}")
    else:
        every = check_positive_int("branch_every", branch_every)
        inner = list(range(every, steps, every))
    return [0, *inner, steps]


def most_new_nodes(levels: list[int], nfe: int, evals: int) -> int:
    """An upper bound on the nodes a budget of ``nfe`` can add to a tree with these levels: a rollout
    from level l (the root: l = -1, from step 0) costs ``(steps - levels[l]) * evals`` and stores one
    node per level below l, so no rollout stores more nodes per NFE than the best ratio of the two."""
    steps, terminal = levels[-1], len(levels) - 1
    starts = [(-1, 0)] + [(level, levels[level]) for level in range(terminal)]
    ratio = max((terminal - level) / ((steps - start) * evals) for level, start in starts)
    return int(nfe * ratio) + 1


class PaperDTSSampler(Sampler):
    """Diffusion Tree Sampling as in the paper (``dts`` with ``preset="paper"``): biased at finite budgets.

    Args:
        lam: inverse temperature lambda (> 0; ``float("inf")`` makes backups and selection greedy);
            default 1 for DTS and inf (max backup) for DTS*.
        c_pw, alpha: progressive widening, a node widens while |children| < c_pw N^alpha. Default: the
            paper's (2, 0.8). Real branching under-tilts at finite budgets (module docstring,
            benchmarks/dts_bias.py). DTS* (search, where that bias is harmless) defaults to (1, 0.5)
            with c_uct = 0.3.
        branch_every: steps between branching levels (paper: 10 of 50 steps); or ``branch_steps``,
            an explicit list of step indices.
        leaves_per_iteration: rollouts kept in flight, i.e. rows per model call (default 16). A finished
            rollout's row is refilled by a new selection at once (tree_rollouts.py), so every call is
            full. Fewer rows let more selections see earlier rewards (the paper selects one at a time);
            more rows make a small model's calls cheaper per row but change the algorithm: DTS's tilt on
            the Gaussian oracle moves from 0.50 at 16 rows to 0.63 at 64, and DTS* searches worse (on
            the held-out search reward at 1e4 NFE, rows growing to 78 found -1.65 against -1.41 at 16).
            Selections that end on an existing sample launch nothing, so up to 16 selections per free
            row are tried; widening counts the rollouts still in flight.
        kernel: the base stochastic kernel (default: DDPM for VP models, the flow SDE for flow models).
        max_memory_bytes: cap on stored node states; ``on_memory_full`` is "stop" or "error". Default
            (None): half the storage device's memory (RAM on the CPU), and a budget whose tree could
            outgrow that is refused at once with one line (``tree_common.memory_cap``).
        storage_dtype, storage_device: where node states live (e.g. "float16", "cpu").
        nonfinite_reward: "-inf" (default) or "error".
        reuse_tree: if True, a second :meth:`sample` call with the same model, reward, condition and
            steps grows the existing tree by ``nfe`` more evaluations instead of starting afresh.
        output: "descend" (the paper's Algorithm 2: root to leaf with P(child) proportional to
            exp(lambda v)) or "reweight" (experimental, not in the paper): resample the tree's samples
            proportionally to w exp(lambda r), where w is the importance weight of the selection that
            produced each one against a uniform descent -- a heuristic against the adaptive-allocation
            bias described above, not exact: uniform descent over an adaptively widened tree is not
            the base law, discarded selections condition the proposal and -inf children change the
            support. Measured in benchmarks/dts_bias.py.
        trees_per_prompt: independent trees per prompt (or for the one ``cond``), sharing the prompt's
            ``nfe`` (each gets nfe // m) and every model call (:mod:`~diffalign.samplers.forest`).
        max_rows: rows per shared model call of a forest (default 256).
        fast_forward: DTS* only: apply at once the selections that would retrace a dead end
            (:meth:`DTSStarSampler.repeat_dead_end`; the tree is identical, a test checks it). False
            selects one at a time, as before -- there to measure what it saves.
    """

    name = "dts"
    pools_samples = True
    needs_reward = True
    runs_as_forest = True
    greedy_output = False
    default_lam = 1.0
    default_c_pw, default_alpha, default_c_uct = 2.0, 0.8, 1.0

    def __init__(
        self,
        lam: Optional[float] = None,
        c_pw: Optional[float] = None,
        alpha: Optional[float] = None,
        c_uct: Optional[float] = None,
        branch_every: Optional[int] = 10,
        branch_steps: Optional[list[int]] = None,
        leaves_per_iteration: int = 16,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        max_memory_bytes: Optional[int] = None,
        on_memory_full: str = "stop",
        storage_dtype: str | torch.dtype = "float32",
        storage_device: Optional[str] = None,
        nonfinite_reward: str = "-inf",
        reuse_tree: bool = False,
        output: str = "descend",
        max_idle_iterations: int = 1000,
        trees_per_prompt: int = 1,
        max_rows: int = DEFAULT_MAX_ROWS,
        fast_forward: bool = True,
        progress: Optional[bool] = None,
    ):
        super().__init__(progress=progress)
        self.trees_per_prompt, self.max_rows = check_forest_options(trees_per_prompt, max_rows, reuse_tree)
        if not isinstance(fast_forward, bool):
            raise DiffalignError(f"fast_forward must be true or false, got {fast_forward!r}")
        self.fast_forward = fast_forward
        lam = self.default_lam if lam is None else lam
        c_pw = self.default_c_pw if c_pw is None else c_pw
        alpha = self.default_alpha if alpha is None else alpha
        c_uct = self.default_c_uct if c_uct is None else c_uct
        if not (isinstance(lam, (int, float)) and lam > 0):
            raise DiffalignError(f"lam must be a positive number (or inf), got {lam!r}")
        if not c_pw > 0 or not 0 <= alpha <= 1:
            raise DiffalignError(f"progressive widening needs c_pw > 0 and 0 <= alpha <= 1, got c_pw={c_pw}, alpha={alpha}")
        storage_dtype = check_storage_options(nonfinite_reward, on_memory_full, storage_dtype, max_memory_bytes)
        if output not in OUTPUT_CHOICES:
            raise choice_error("output", output, list(OUTPUT_CHOICES))
        if output == "reweight" and math.isinf(lam):
            raise DiffalignError("output='reweight' needs a finite lam (it weights samples by exp(lam r))")
        self.lam = float(lam)
        self.c_pw, self.alpha, self.c_uct = float(c_pw), float(alpha), float(c_uct)
        self.branch_every, self.branch_steps = branch_every, branch_steps
        self.leaves_per_iteration = check_positive_int("leaves_per_iteration", leaves_per_iteration)
        self.kernel, self.kernel_options = kernel, dict(kernel_options or {})
        self.max_memory_bytes, self.on_memory_full = max_memory_bytes, on_memory_full
        self.storage_dtype, self.storage_device = storage_dtype, storage_device
        self.nonfinite_reward = nonfinite_reward
        self.reuse_tree = bool(reuse_tree)
        self.output = output
        self.max_idle_iterations = check_positive_int("max_idle_iterations", max_idle_iterations)
        self.tree: Optional[DiffusionTree] = None
        self._tree_key: Optional[tuple] = None
        self._last_reward = None

    def _fresh_copy(self):
        clone = super()._fresh_copy()
        clone.tree, clone._tree_key, clone._last_reward = None, None, None
        return clone

    # -- selection rules (DTS: Boltzmann; DTS*: UCT) ------------------------------------------------
    def choose_child(self, tree: DiffusionTree, node: int, kids: list[int], rng: np.random.Generator) -> tuple[int, float]:
        """The child (among ``kids``, the scored children of ``node``) to descend into, and the probability
        with which it was chosen."""
        probs = tree_math.boltzmann_probabilities(tree.value[kids], self.lam)
        i = tree_math.sample_index(probs, rng)
        return kids[i], float(probs[i])

    def select(self, tree: DiffusionTree, rng: np.random.Generator, pending: Optional[dict[int, int]] = None,
               path: Optional[list[int]] = None) -> tuple[Optional[int], float]:
        """Descend to a node to expand (or a terminal, or None), counting a visit on every node passed
        (and appending it to ``path``, if given).

        ``pending`` counts the children already promised to each node by earlier selections of the
        same batch; widening counts them too, so a batch widens exactly as the same selections made
        one at a time would (otherwise 16 selections of a fresh node would give it 16 children).

        Also returns the log design weight of the descent, sum of -log(|children| P(chosen child)):
        the importance weight of this selection against a descent that picks children uniformly
        (used by ``output="reweight"``).
        """
        pending = {} if pending is None else pending
        node, log_weight = ROOT, 0.0
        while True:
            tree.visits[node] += 1
            if path is not None:
                path.append(node)
            children = len(tree.children[node]) + pending.get(node, 0)
            if tree.is_terminal(node) or tree_math.may_widen(children, tree.visits[node], self.c_pw, self.alpha):
                return node, log_weight
            kids = tree.scored_children(node)
            if not kids:
                return None, log_weight  # fully widened, but every child's rollout is still in flight
            count = len(kids)
            node, probability = self.choose_child(tree, node, kids, rng)
            log_weight -= math.log(count * probability)

    def repeat_dead_end(self, tree: DiffusionTree, path: list[int], pending: dict[int, int], allowance: int) -> int:
        """Apply, at once, the selections that would repeat a dead end ``path`` exactly; return their count.

        Boltzmann selection draws afresh each time, so nothing is known to repeat: 0.
        """
        return 0

    # -- the public entry points ----------------------------------------------------------------------
    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        kernel, encoded, _ = branching_setup(self.name, model, self.kernel, self.kernel_options, cond, nfe, steps)
        # the user's own objects identify a tree (``reward`` may be a fresh wrapper of their callable)
        key = tree_key(model, reward, cond, steps)
        levels = branching_steps(steps, self.branch_every, self.branch_steps)
        device = torch.device(self.storage_device or model.device)
        reuse = self.reuse_tree and self.tree is not None and self._tree_key == key
        have = self.tree.num_nodes if reuse else 0
        bytes_per_node = math.prod(model.shape) * torch.empty((), dtype=self.storage_dtype).element_size()
        needed = (have + most_new_nodes(levels, nfe, model.evals_for(encoded))) * bytes_per_node
        cap = memory_cap(self.name, self.max_memory_bytes, needed, device, nfe)
        if not reuse:
            self.tree = DiffusionTree(model.shape, levels, self.storage_dtype, device, cap)
            self._tree_key = key
        self._last_reward = reward
        # selection randomness comes from its own stream, so model noise matches ancestral sampling
        rng = np.random.default_rng(generator.initial_seed())
        info = self._grow(self.tree, model, reward, kernel, model.schedule.time_grid(steps), encoded, generator, rng, nfe)
        out = self._output(self.tree, num_samples, rng)
        out.info.update(info)
        out.info["max_memory_bytes"] = self.tree.max_bytes
        if info["memory_full"]:
            warn_memory_full(self.name, self.tree.max_bytes, info)
        return out

    def draw(self, num_samples: int, seed: int = 0) -> SampleOutput:
        """More samples from the current tree, with no model calls (DTS is anytime)."""
        if self.tree is None or not self.tree.terminal_nodes:
            raise DiffalignError(f"{self.name} has no tree yet: call sample() first")
        return self._output(self.tree, check_positive_int("num_samples", num_samples), np.random.default_rng(seed))

    # -- growing the tree ------------------------------------------------------------------------------
    def _grow(self, tree, model, reward, kernel, grid, cond, generator, rng, budget) -> dict[str, Any]:
        """Select, roll out, score and back up until the budget is spent, with up to ``rows`` rollouts in
        flight (tree_rollouts.py): a slot is refilled by a new selection as soon as its rollout returns."""
        evals = model.evals_for(cond)
        rows = self.leaves_per_iteration
        pool = RolloutPool(tree, model, kernel, grid, cond, generator)
        spent_before, memory_full, idle, nonfinite = tree.nfe, False, 0, 0
        cheapest = evals * (len(grid) - 1 - tree.level_steps[tree.terminal_level - 1])
        bar = self.progress_bar(total=budget, desc=self.name, unit="nfe")
        while True:
            left = budget - (tree.nfe - spent_before)
            launch, log_weights, new_nodes, selections = [], [], 0, 0
            free = rows - len(pool)
            # A selection that ends on a terminal (a fully widened node chose an existing sample), on a
            # node whose children are all still in flight, or on a node too costly for the budget left
            # launches nothing -- a dead end; keep selecting, up to a cap.
            while free > len(launch) and left >= cheapest and not memory_full:
                allowance = SELECTIONS_PER_SLOT * (free - len(launch)) - selections
                if allowance <= 0:
                    break
                selections += 1
                path: list[int] = []
                node, log_weight = self.select(tree, rng, pool.pending, path)
                row_cost, row_nodes = (0, 0) if node is None else pool.cost(node, evals)
                if node is None or tree.is_terminal(node) or row_cost > left:
                    # (a shallower node may still fit the budget)
                    if self.fast_forward:
                        selections += self.repeat_dead_end(tree, path, pool.pending, allowance - 1)
                    continue
                if not tree.can_add(pool.reserved_nodes + new_nodes + row_nodes):
                    memory_full = True
                    break
                pool.promise(node)
                launch.append(node)
                log_weights.append(log_weight)
                new_nodes += row_nodes
                left -= row_cost
                tree.nfe += row_cost
                bar.update(row_cost)
            tree.iterations += selections
            if memory_full and self.on_memory_full == "error":
                raise DiffalignError(
                    f"{self.name}: tree memory budget of {self.max_memory_bytes} bytes is full "
                    f"({tree.num_nodes} nodes); raise max_memory_bytes or use on_memory_full='stop'"
                )
            pool.launch(launch, log_weights, new_nodes)
            if len(pool) == 0:
                idle += 1
                if memory_full or left < cheapest or idle >= self.max_idle_iterations:
                    break
                continue
            idle = 0
            leaves, x0, leaf_log_weights = pool.advance()
            if leaves:
                rewards = evaluate_reward(reward, model, x0, 512).double().cpu().numpy()
                bad = ~np.isfinite(rewards)
                if bad.any():
                    if self.nonfinite_reward == "error":
                        raise DiffalignError(f"{self.name}: reward returned {rewards[bad][0]} (nonfinite_reward='error')")
                    rewards[bad] = -np.inf
                    nonfinite += int(bad.sum())
                tree.backup(leaves, rewards, self.lam)
                tree.log_weight[leaves] = leaf_log_weights
        if bar.n < bar.total:  # stopped early (memory, idle): end the bar where it is, not at "0%, ETA 70 h"
            bar.total = bar.n
            bar.set_postfix_str("tree memory full" if memory_full else "stopped", refresh=False)
        bar.close()
        return {
            "nodes": tree.num_nodes,
            "terminals": len(tree.terminal_nodes),
            "state_bytes": tree.state_bytes,
            "bytes_per_node": tree.bytes_per_node,
            "iterations": tree.iterations,
            "tree_nfe": tree.nfe,
            "memory_full": memory_full,
            "nonfinite_rewards": nonfinite,
            "rows_in_flight": rows,
            "model_calls": pool.calls,
        }

    # -- output ------------------------------------------------------------------------------------------
    def _output(self, tree: DiffusionTree, num_samples: int, rng: np.random.Generator) -> SampleOutput:
        if self.greedy_output:
            terminals = tree.terminals()
            order = np.argsort(-tree.value[terminals], kind="stable")
            chosen = terminals[order[np.arange(num_samples) % len(order)]]
            ess = None  # a search: no weights to resample from
        elif self.output == "reweight":
            terminals = tree.terminals()
            logits = tree.log_weight[terminals] + self.lam * tree.value[terminals]
            if not np.isfinite(logits.max()):
                raise DiffalignError(f"{self.name}: every sample in the tree has reward -inf; nothing to resample")
            weights = np.exp(logits - logits.max())
            chosen = terminals[rng.choice(len(terminals), size=num_samples, p=weights / weights.sum())]
            ess = tree_math.effective_sample_size(weights)
        else:
            chosen = np.array([self._descend(tree, rng) for _ in range(num_samples)], dtype=np.int64)
            ess = tree_math.effective_sample_size(self._descent_probabilities(tree))
        samples = tree.state(chosen.tolist()).to(torch.float32 if tree.storage_dtype != torch.float64 else torch.float64)
        rewards = torch.as_tensor(tree.value[chosen], dtype=torch.float32)
        return SampleOutput(samples, rewards, nfe=0, info={"nodes_chosen": torch.as_tensor(chosen), "ess": ess})

    def _descent_probabilities(self, tree: DiffusionTree) -> np.ndarray:
        """Probability that one descent ends at each terminal (the distribution the output samples)."""
        reach, stack, leaves = {ROOT: 1.0}, [ROOT], []
        while stack:
            node = stack.pop()
            if tree.is_terminal(node):
                leaves.append(reach[node])
                continue
            kids = tree.children[node]
            for kid, p in zip(kids, tree_math.boltzmann_probabilities(tree.value[kids], self.lam)):
                reach[kid] = reach[node] * p
                stack.append(kid)
        return np.array(leaves)

    def _descend(self, tree: DiffusionTree, rng: np.random.Generator) -> int:
        node = ROOT
        while not tree.is_terminal(node):
            kids = tree.children[node]
            node = kids[tree_math.sample_index(tree_math.boltzmann_probabilities(tree.value[kids], self.lam), rng)]
        return node




class DTSStarSampler(PaperDTSSampler):
    """Diffusion Tree Search (DTS*): UCT selection, greedy output -- for finding high-reward samples.

    Same options as :class:`PaperDTSSampler`; ``lam = inf`` (max backup, the paper's choice for search)
    and ``c_uct`` control the search. Returns the ``num_samples`` highest-reward samples found.
    """

    name = "dts-star"
    greedy_output = True
    forest_merge = "best"  # a prompt's trees: its best samples over all of them
    default_lam = math.inf
    # Search tolerates (and needs) a narrow, deep tree: see benchmarks/search.py and the README
    default_c_pw, default_alpha, default_c_uct = 1.0, 0.5, 0.3

    def choose_child(self, tree, node, kids, rng):
        scores = tree_math.uct_scores(tree.value[kids], tree.visits[kids], tree.visits[node], self.c_uct)
        best = np.flatnonzero(scores == scores.max())
        return kids[best[rng.integers(len(best))] if len(best) > 1 else best[0]], 1.0 / len(best)

    def repeat_dead_end(self, tree, path, pending, allowance):
        """Fast-forward the selections that would retrace a dead end, by closed-form bounds.

        Between two model calls no value changes, so a selection that ended in a dead end (an existing
        sample, a node whose children are all in flight, a node too costly for the budget left) is
        retraced by the next one unless some node on the path widens or UCT picks another child there.
        With widening at C N^alpha (alpha = 0.5) a well-valued node needs 2c + 1 selections per new child,
        so at 3e4 NFE about 140 selections were spent per rollout, almost all of them retracing.

        Repeats k = 1..K are certain when, at every node p of the path with chosen child c:

        * widening stays off: |C(p)| + pending < c_pw (N_p + K)^alpha is false at K, hence at every
          k <= K (it is monotone in the visits); a dead end that is itself widenable stays so;
        * c stays the unique UCT argmax. At repeat k, p has N_p + k visits and c has N_c + k - 1, so c
          scores f(k) = v_c + c_uct sqrt(log(N_p + k) / (N_c + k - 1)), a quasi-concave function of k
          whose minimum over [1, K] is at an end point, and every other child j scores at most
          v_j + c_uct sqrt(log(N_p + K) / N_j). c stays ahead if min(f(1), f(K)) beats the largest of
          those by a margin far above rounding.

        The bounds are conservative, so the tree is the one that selecting one at a time gives (the
        tests check it draw for draw). K grows 4, 16, 64, ... up to ``allowance``; each test costs about
        one selection, so a dead end about to change costs one wasted test.
        """
        done, k = 0, min(4, allowance)
        while k > done and self._retraced(tree, path, pending, k):
            done, k = k, min(4 * k, allowance)
        if done:
            tree.visits[path] += done
        return done

    def _retraced(self, tree: DiffusionTree, path: list[int], pending: dict[int, int], repeats: int) -> bool:
        """Would the next ``repeats`` selections all retrace ``path``? (Conservative: see repeat_dead_end.)"""
        visits, value = tree.visits, tree.value
        for depth, node in enumerate(path):
            children = len(tree.children[node]) + pending.get(node, 0)
            if depth == len(path) - 1:  # the dead end itself
                widens_now = tree_math.may_widen(children, visits[node], self.c_pw, self.alpha)
                return (tree.is_terminal(node) or widens_now
                        or not tree_math.may_widen(children, visits[node] + repeats, self.c_pw, self.alpha))
            if tree_math.may_widen(children, visits[node] + repeats, self.c_pw, self.alpha):
                return False
            chosen, kids = path[depth + 1], tree.scored_children(node)
            parent_visits = visits[node]

            def chosen_score(k):
                return value[chosen] + self.c_uct * math.sqrt(math.log(parent_visits + k) / (visits[chosen] + k - 1))

            others = [kid for kid in kids if kid != chosen]
            if not others:
                continue
            rival = float(np.max(value[others] + self.c_uct * np.sqrt(math.log(parent_visits + repeats) / visits[others])))
            worst = min(chosen_score(1), chosen_score(repeats))
            margin = 1e-9 * max(1.0, abs(rival)) if math.isfinite(rival) else 0.0  # rivals all at -inf: no rounding
            if not worst > rival + margin:
                return False
        return True


SAMPLERS.register("dts-star")(DTSStarSampler)
