"""A small, explicit name -> factory registry shared by rewards, samplers and kernels.

Entries are registered by decorator next to the class they name, so there is no string
``getattr`` lookup anywhere: the registry only knows what was explicitly put in it. Options are
checked against the factory's signature first, so an unknown or missing option is a one-line
:class:`~diffalign.errors.DiffalignError` that lists the valid ones, not a bare ``TypeError``.
"""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

from .errors import DiffalignError, choice_error

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
        _check_options(self.kind, name, self._factories[name], options)
        return self._factories[name](**options)

    def options(self, name: str) -> dict[str, object]:
        """Option -> default for a registered name (``inspect.Parameter.empty`` when required).

        A None default that the factory resolves from a ``default_<option>`` class attribute (DTS and
        DTS* share a signature but not their defaults) is shown as that value.
        """
        if name not in self._factories:
            raise choice_error(self.kind, name, self.names())
        factory = self._factories[name]
        params = inspect.signature(factory).parameters.values()
        return {p.name: getattr(factory, f"default_{p.name}", None) if p.default is None else p.default
                for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


def _check_options(kind: str, name: str, factory, options: dict) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the factory decide
        return
    named = {
        key: p for key, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(named))
    if unknown and not takes_any:
        valid = ", ".join(named) or "(none)"
        raise DiffalignError(f"unknown option(s) {', '.join(unknown)} for {kind} {name!r}; valid options: {valid}")
    missing = [key for key, p in named.items() if p.default is inspect.Parameter.empty and key not in options]
    if missing:
        raise DiffalignError(f"{kind} {name!r} needs option(s): {', '.join(missing)}")
