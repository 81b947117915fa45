"""The one exception type diffalign raises for bad input.

The CLI turns it into a one-line message and a non-zero exit; Python users can catch it
(it subclasses ``ValueError``, so ``except ValueError`` keeps working too).
"""

from __future__ import annotations

import sys
import warnings


class DiffalignError(ValueError):
    """Bad input or an impossible request, with a message that names the bad value."""


def choice_error(kind: str, value: object, valid: list[str]) -> DiffalignError:
    """An error for an unknown name that lists the valid choices."""
    return DiffalignError(f"unknown {kind} {value!r}; valid choices: {', '.join(sorted(valid))}")


class JobFailure(RuntimeError):
    """A multi-process job lost a process (stalled, dead, or its launcher gone); the message is one line
    naming the rank. The CLI prints it and exits 1."""


class SamplingWarning(UserWarning):
    """A result that ran but is probably not what the user wanted (few distinct samples, unused budget,
    a full tree). The CLI prints it as one line on stderr; Python shows it through ``warnings``."""


def report_warnings(caught) -> None:
    """Recorded warnings (``warnings.catch_warnings(record=True)``) as the CLI shows them: our own
    :class:`SamplingWarning` as one line each on stderr; anything else as Python would show it."""
    for item in caught:
        if issubclass(item.category, SamplingWarning):
            print(f"diffalign: warning: {item.message}", file=sys.stderr)
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
