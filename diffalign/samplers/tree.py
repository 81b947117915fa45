"""The search tree of DTS / DTS*: flat, growable storage of node states and statistics.

Nodes live at *levels*: level 0 holds initial noises x_1 (the children of a dummy root), the last
level holds samples x_0, and the levels in between sit at the branching steps of the time grid. A
node stores its state, its soft value ``v`` (the reward, at the last level), its visit count ``N``
and its children. States are kept in ``storage_dtype`` on ``storage_device`` (e.g. float16 on the
CPU for large trees); ``max_bytes`` bounds their total size.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import DiffalignError
from . import tree_math

ROOT = 0


class DiffusionTree:
    def __init__(
        self,
        shape: tuple[int, ...],
        level_steps: list[int],
        storage_dtype: torch.dtype = torch.float32,
        storage_device: str | torch.device = "cpu",
        max_bytes: Optional[int] = None,
    ):
        self.shape = tuple(shape)
        self.level_steps = list(level_steps)
        self.storage_dtype = storage_dtype
        self.storage_device = torch.device(storage_device)
        self.bytes_per_node = int(np.prod(self.shape)) * torch.empty((), dtype=storage_dtype).element_size()
        self.max_bytes = max_bytes
        if max_bytes is not None and max_bytes < self.bytes_per_node * len(level_steps):
            raise DiffalignError(
                f"max_memory_bytes={max_bytes} cannot hold even one path ({len(level_steps)} nodes x {self.bytes_per_node} bytes)"
            )
        # node 0 is the dummy root above t = 1; it has no state
        self.parent: list[int] = [-1]
        self.level: list[int] = [-1]
        self.children: list[list[int]] = [[]]
        self._value = np.zeros(64)
        self._visits = np.ones(64)
        self._states = torch.empty((64, *self.shape), dtype=storage_dtype, device=self.storage_device)
        # per node: log importance weight of the selection that launched the rollout which created it
        # (see DTSSampler.select); only terminals' weights are read
        self._log_weight = np.zeros(64)
        # per node: has a rollout through it returned its reward yet? A node whose rollout is still in flight
        # (tree_rollouts.py) has no value: selection and backups skip it instead of reading a placeholder.
        self._scored = np.zeros(64, dtype=bool)
        self.terminal_nodes: list[int] = []
        self.iterations = 0
        self.nfe = 0

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Stored nodes (the dummy root excluded)."""
        return len(self.parent) - 1

    @property
    def num_levels(self) -> int:
        return len(self.level_steps)

    @property
    def terminal_level(self) -> int:
        return self.num_levels - 1

    @property
    def state_bytes(self) -> int:
        return self.num_nodes * self.bytes_per_node

    def can_add(self, count: int) -> bool:
        return self.max_bytes is None or (self.num_nodes + count) * self.bytes_per_node <= self.max_bytes

    # -- nodes ---------------------------------------------------------------------------------
    @property
    def value(self) -> np.ndarray:
        return self._value[: len(self.parent)]

    @property
    def visits(self) -> np.ndarray:
        return self._visits[: len(self.parent)]

    @property
    def log_weight(self) -> np.ndarray:
        return self._log_weight[: len(self.parent)]

    def scored_children(self, node: int) -> list[int]:
        """The children of ``node`` that hold a value (every rollout through them so far may still be in flight)."""
        kids = self.children[node]
        if not kids:
            return kids
        scored = self._scored[kids]
        return kids if scored.all() else [k for k, ok in zip(kids, scored) if ok]

    def state(self, nodes) -> torch.Tensor:
        return self._states[torch.as_tensor(nodes, dtype=torch.long, device=self.storage_device)]

    def is_terminal(self, node: int) -> bool:
        return self.level[node] == self.terminal_level

    def add(self, parents: list[int], states: torch.Tensor) -> list[int]:
        """Append one child per parent (at the parent's next level) with the given states."""
        first = len(self.parent)
        needed = first + len(parents)
        if needed > self._states.shape[0]:
            capacity = max(needed, 2 * self._states.shape[0])
            grown = torch.empty((capacity, *self.shape), dtype=self.storage_dtype, device=self.storage_device)
            grown[:first] = self._states[:first]
            self._states = grown
            self._value = np.concatenate([self._value, np.zeros(capacity - len(self._value))])
            self._visits = np.concatenate([self._visits, np.ones(capacity - len(self._visits))])
            self._log_weight = np.concatenate([self._log_weight, np.zeros(capacity - len(self._log_weight))])
            self._scored = np.concatenate([self._scored, np.zeros(capacity - len(self._scored), dtype=bool)])
        self._states[first:needed] = states.to(device=self.storage_device, dtype=self.storage_dtype)
        new = list(range(first, needed))
        for node, parent in zip(new, parents):
            self.parent.append(parent)
            self.level.append(self.level[parent] + 1)
            self.children.append([])
            self.children[parent].append(node)
            self._value[node] = 0.0
            self._visits[node] = 1.0
            self._log_weight[node] = 0.0
            self._scored[node] = False
            if self.level[node] == self.terminal_level:
                self.terminal_nodes.append(node)
        return new

    # -- statistics ------------------------------------------------------------------------------
    def backup(self, terminals: list[int], rewards: np.ndarray, lam: float) -> None:
        """Set terminal values to their rewards, then recompute every ancestor once, deepest first, from
        its scored children only (a child whose rollouts are all in flight has no value yet)."""
        touched: set[int] = set()
        for node, r in zip(terminals, rewards):
            self._value[node] = r
            self._scored[node] = True
            node = self.parent[node]
            while node != -1:
                touched.add(node)
                node = self.parent[node]
        for node in sorted(touched, key=lambda n: -self.level[n]):
            kids = self.scored_children(node)
            if kids:
                self._value[node] = tree_math.soft_backup(self._value[kids], lam)
                self._scored[node] = True

    def path_to_root(self, node: int) -> list[int]:
        path = []
        while node != -1:
            path.append(node)
            node = self.parent[node]
        return path

    def terminals(self) -> np.ndarray:
        return np.asarray(self.terminal_nodes, dtype=np.int64)
