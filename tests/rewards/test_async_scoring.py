"""AsyncScorer: a slow reward scored in the background overlaps with the caller's work, in order."""

import time

import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.rewards import AsyncScorer, as_reward

DELAY = 0.2


def _slow(images):
    time.sleep(DELAY)  # like a GPU kernel or a network call: the GIL is free meanwhile
    return images.mean(dim=(1, 2, 3))


def test_scoring_overlaps_with_rollouts_and_keeps_order():
    scorer = AsyncScorer(as_reward(_slow))
    batches = [torch.full((2, 1, 4, 4), float(k)) for k in range(4)]
    start = time.perf_counter()
    futures = []
    for batch in batches:
        time.sleep(DELAY)  # the next rollout
        futures.append(scorer.submit(batch))
    results = [f.result(timeout=10) for f in futures]
    elapsed = time.perf_counter() - start
    scorer.shutdown()
    assert elapsed < 8 * DELAY - 1.5 * DELAY, elapsed  # sequential would be 8 * DELAY; overlapped ~5 * DELAY
    for k, scores in enumerate(results):
        torch.testing.assert_close(scores, torch.full((2,), float(k)))


def test_images_are_snapshotted_and_errors_surface_from_result():
    scorer = AsyncScorer(as_reward(_slow))
    images = torch.ones(1, 1, 4, 4)
    future = scorer.submit(images)
    images.zero_()  # the caller reuses its buffer at once
    assert future.result(timeout=10).item() == 1.0
    bad = scorer.submit(torch.ones(4, 4), prompts=["a"] * 4)  # 2-D: the reward's own error, raised by result()
    with pytest.raises(IndexError):
        bad.result(timeout=10)
    scorer.shutdown()


def test_server_without_its_extra_names_the_extra(monkeypatch):
    import sys

    from diffalign.rewards.server import build_app

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if fastapi were not installed
    with pytest.raises(DiffalignError, match=r"pip install 'diffalign\[server\]'"):
        build_app(as_reward(_slow))
