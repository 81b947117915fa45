"""The samplers' progress bars: tqdm, shown at once with ``progress=True``, never with ``False``, and with
``None`` (the default) only once a run has lasted :data:`PROGRESS_DELAY_S`, so short calls stay quiet."""

from __future__ import annotations

from typing import Optional

PROGRESS_DELAY_S = 3.0


def progress_bar(iterable=None, progress: Optional[bool] = None, **kwargs):
    from tqdm.auto import tqdm

    delay = PROGRESS_DELAY_S if progress is None else 0.0
    # pop first: `progress is False or kwargs.pop(...)` would short-circuit and leave "disable" in kwargs
    disable = kwargs.pop("disable", False)
    return tqdm(iterable, disable=progress is False or disable, delay=delay, **kwargs)
