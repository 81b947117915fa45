"""A small, explicit name -> factory registry shared by rewards, samplers and kernels.

Entries are registered by decorator next to the class they name, so there is no string
``getattr`` lookup anywhere: the registry only knows what was explicitly put in it.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str, **options) -> T:
        if name not in self._factories:
            raise choice_error(self.kind, name, self.names())
        return self._factories[name](**options)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
