"""The reward registry: ``get(name, **options)`` builds a reward, ``names()`` lists them.

Each reward class registers itself with ``@REWARDS.register(name)`` in its own module;
:mod:`diffalign.rewards` imports those modules, so ``import diffalign.rewards`` is all it takes
for every name to be known. Options are checked against the reward's constructor before it
is called (see :class:`~diffalign.registry.Registry`).
"""

from __future__ import annotations

from ..registry import Registry

__all__ = ["REWARDS", "get", "names"]

REWARDS = Registry("reward")


def get(name: str, **options):
    """Build the reward registered as ``name`` with the given options."""
    return REWARDS.get(name, **options)


def names() -> list[str]:
    """Sorted names of all registered rewards."""
    return REWARDS.names()
