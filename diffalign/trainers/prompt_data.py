"""Training on a prompt dataset: which prompts each micro-batch gets, and their encoded rows.

Every peer trains on a prompt file with one group of samples per prompt (Flow-GRPO, Liu et al. 2025,
arXiv:2505.05470, §4: G images per prompt, advantages within the group). Here a micro-batch holds
``groups`` groups; group g is ``group_size`` samples of one prompt, drawn uniformly (with replacement)
from the training file by a generator seeded by (seed, step, micro-batch index) alone -- a stream of
its own, so the rollouts' noise is unchanged. That keeps the two guarantees of the base trainer:
resume is bit-exact, and a 2-process run sees exactly the prompts of a 1-process run with doubled
accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..models.conditioning import Condition, index_condition
from ..prompt_files import PromptSet, balance_groups, read_prompt_file
from .seeding import seeded_generator

# the prompt draw's own stream: a fourth key next to (seed, step, index)
PROMPT_STREAM = 0x9E3779B9


@dataclass
class GroupRows:
    """The rows of a micro-batch's groups: encoded conditions, and each row's prompt and metadata."""

    cond: Condition
    prompts: Optional[list[str]]
    metadata: Optional[list]


class TrainingPrompts:
    """The training prompt file and the draw of each micro-batch's prompts."""

    def __init__(self, path, seed: int, balance_by: Optional[str] = None):
        self.prompt_set: PromptSet = read_prompt_file(path, "data.train_prompts")
        self.seed = int(seed)
        self.balance = None if balance_by is None else balance_groups(self.prompt_set, balance_by)

    def draw(self, step: int, index: int, groups: int) -> list[int]:
        """Prompt indices of micro-batch ``index`` of ``step``: a function of (seed, step, index) alone.

        Uniform over prompts, or, with ``balance_by``, uniform over the key's values and then over
        the prompts that carry the value.
        """
        generator = seeded_generator(self.seed, step, index, PROMPT_STREAM)
        if self.balance is None:
            return torch.randint(len(self.prompt_set), (groups,), generator=generator).tolist()
        chosen = torch.randint(len(self.balance), (groups,), generator=generator).tolist()
        within = torch.rand(groups, generator=generator, dtype=torch.float64).tolist()
        return [self.balance[g][min(int(u * len(self.balance[g])), len(self.balance[g]) - 1)]
                for g, u in zip(chosen, within)]


def group_rows(model, prompts: list[str], metadata: Optional[list], group_size: int) -> GroupRows:
    """``group_size`` rows per prompt, group by group; each distinct prompt is encoded once."""
    distinct = list(dict.fromkeys(prompts))
    encoded = model.encode_condition(distinct if len(distinct) > 1 else distinct[0], len(distinct))
    owners = torch.tensor([distinct.index(p) for p in prompts]).repeat_interleave(group_size)
    cond = index_condition(encoded, owners.to(next(iter(encoded.values())).device)) if encoded else None
    rows = [p for p in prompts for _ in range(group_size)]
    meta = None if metadata is None else [m for m in metadata for _ in range(group_size)]
    return GroupRows(cond, rows, meta)
