"""The sampler registry: ``get(name, **options)`` and ``names()``."""

from __future__ import annotations

from ..registry import Registry

SAMPLERS = Registry("sampler")


def get(name: str, **options):
    """A sampler by registry name, e.g. ``get("best-of-n")``; unknown names list the valid ones."""
    return SAMPLERS.get(name, **options)


def names() -> list[str]:
    return SAMPLERS.names()
