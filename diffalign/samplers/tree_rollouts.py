"""Continuous batching of the rollouts of a search tree (the paper's DTS and DTS*).

A tree's rollouts start at different levels: a rollout from a deep node needs a few steps, one from
the root needs all of them. Launched together, a batch drains: the model calls near its end carry a
handful of rows, and a small model evaluates a handful of rows almost as slowly as a full batch (on
2 CPU cores the digits UNet costs ~10 ms per call at 1 row, ~1.3 ms per row at 16 rows and ~0.4 ms
per row at 256).

:class:`RolloutPool` keeps up to ``rows`` rollouts in flight, each at its own time step, and the
sampler refills a slot as soon as its rollout reaches x0 -- the continuous batching of LLM serving.
Every model call then carries a full batch, and every selection sees the reward of every rollout
that has finished. A rollout still in flight counts as a *pending* child of the node it is about to
extend, so progressive widening sees it, and the visits its selection added steer UCT away from its
path until it returns (the "virtual loss" of parallel MCTS).
"""

from __future__ import annotations

import torch

from ..models.conditioning import index_condition
from .rollout import initial_noise
from .tree import ROOT, DiffusionTree


class RolloutPool:
    """Rollouts in flight through a :class:`DiffusionTree`; one batched model call per :meth:`advance`."""

    def __init__(self, tree: DiffusionTree, model, kernel, grid: torch.Tensor, cond, generator: torch.Generator):
        self.tree, self.model, self.kernel, self.generator = tree, model, kernel, generator
        # read once: Module.device walks the wrapped modules' parameters, and advance() runs per model call
        self.device, self.dtype = model.device, model.dtype
        self.grid = grid.to(self.device)
        self.final = len(grid) - 1
        self.cond = cond
        self._cond_rows: dict[int, object] = {}  # rows in flight -> the condition repeated to that many rows
        self.level_of_step = {s: level for level, s in enumerate(tree.level_steps)}
        self.x = torch.empty((0, *model.shape), device=model.device, dtype=model.dtype)
        self.step = torch.empty(0, dtype=torch.long)  # grid index of each row (CPU: it drives Python bookkeeping)
        self.last: list[int] = []  # the newest tree node on each row's path
        self.log_weight: list[float] = []  # the selection's log design weight (PaperDTSSampler.select)
        # node -> rollouts in flight whose next node will be its child (widening counts them)
        self.pending: dict[int, int] = {}
        # tree nodes the rollouts in flight will still add (the memory budget counts them)
        self.reserved_nodes = 0
        self.calls = 0  # batched model calls made (rows per call = NFE / calls / passes)

    def __len__(self) -> int:
        return len(self.last)

    def cost(self, node: int, evals: int) -> tuple[int, int]:
        """(NFE, new nodes) of one rollout launched from ``node``."""
        tree = self.tree
        start = tree.level_steps[tree.level[node]] if node != ROOT else 0
        return (self.final - start) * evals, tree.terminal_level - tree.level[node]

    def promise(self, node: int) -> None:
        """Count a rollout about to start from ``node`` (before :meth:`launch`, so that the next
        selection of the same refill already sees it)."""
        self.pending[node] = self.pending.get(node, 0) + 1

    def launch(self, nodes: list[int], log_weights: list[float], new_nodes: int) -> None:
        """Start one rollout from each of ``nodes`` (each promised); rows from the root start from fresh noise."""
        if not nodes:
            return
        tree, model = self.tree, self.model
        x = torch.empty((len(nodes), *model.shape), device=self.device, dtype=self.dtype)
        last = list(nodes)
        from_root = [i for i, n in enumerate(nodes) if n == ROOT]
        if from_root:
            x[from_root] = initial_noise(model, len(from_root), self.generator)
            # the root's new children (level 0) hold the fresh noise at once
            for i, node in zip(from_root, tree.add([ROOT] * len(from_root), x[from_root])):
                last[i] = node
                self._arrived(ROOT, node)
        deeper = [i for i, n in enumerate(nodes) if n != ROOT]
        if deeper:
            x[deeper] = tree.state([nodes[i] for i in deeper]).to(device=self.device, dtype=self.dtype)
        self.x = torch.cat([self.x, x])
        self.step = torch.cat([self.step, torch.tensor([tree.level_steps[tree.level[n]] for n in last], dtype=torch.long)])
        self.last += last
        self.log_weight += log_weights
        self.reserved_nodes += new_nodes - len(from_root)

    def _arrived(self, parent: int, node: int) -> None:
        self.pending[parent] -= 1
        if not self.tree.is_terminal(node):
            self.pending[node] = self.pending.get(node, 0) + 1

    def advance(self) -> tuple[list[int], torch.Tensor, list[float]]:
        """One model call on every row in flight; store the states that reach a tree level. Returns the
        rollouts that reached x0 -- their terminal nodes, x0 (model dtype) and selection log weights --
        and frees their slots."""
        model, tree = self.model, self.tree
        s = self.step
        self.calls += 1
        s_device = s.to(self.device)
        noise = torch.randn(self.x.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        self.x = model.denoise_step(self.x, self.grid[s_device], self._rows_cond(len(s)), self.kernel,
                                    self.grid[s_device + 1], noise)
        self.step = s + 1
        # the bookkeeping below reads the steps as Python ints: one conversion instead of a tensor op per test
        steps = self.step.tolist()
        arrived = [i for i, step in enumerate(steps) if step in self.level_of_step]
        if arrived:
            new = tree.add([self.last[i] for i in arrived], self.x[arrived])
            for i, node in zip(arrived, new):
                self._arrived(self.last[i], node)
                self.last[i] = node
            self.reserved_nodes -= len(arrived)
        done = [i for i, step in enumerate(steps) if step == self.final]
        if not done:
            return [], self.x[:0], []
        kept = [i for i, step in enumerate(steps) if step != self.final]
        keep = torch.tensor(kept, dtype=torch.long)
        finished = ([self.last[i] for i in done], self.x[done], [self.log_weight[i] for i in done])
        self.x, self.step = self.x[keep.to(self.device)], self.step[keep]
        self.last = [self.last[i] for i in kept]
        self.log_weight = [self.log_weight[i] for i in kept]
        return finished

    def _rows_cond(self, rows: int):
        """The condition for ``rows`` rows, built once per row count (the rows of one tree share one condition)."""
        if rows not in self._cond_rows:
            self._cond_rows[rows] = index_condition(self.cond, torch.zeros(rows, dtype=torch.long, device=self.device))
        return self._cond_rows[rows]
