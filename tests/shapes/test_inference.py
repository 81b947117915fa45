"""The shapes inference-time methods keep the equal budget per prompt, and name a bad method clearly."""

from __future__ import annotations

import pytest

import diffalign as da
from diffalign.errors import DiffalignError
from diffalign.shapes import inference


@pytest.fixture(scope="module")
def model():
    return da.load_model("shapes")


def test_unknown_method_names_the_valid_ones(model):
    with pytest.raises(DiffalignError, match="unknown shapes inference method 'beam'.*best-of-n.*reno"):
        inference.run_method("beam", model, ["a circle"], 80)


@pytest.mark.parametrize("method", ["smc", "reno"])
def test_smc_and_reno_spend_at_most_the_budget_per_prompt(model, method):
    run = inference.run_method(method, model, ["a red circle", "two squares"], 80)
    assert run.images.shape == (2, 3, 32, 32)
    assert 40 <= run.nfe_per_prompt <= 80
    if method == "reno":  # 4 Euler steps x 2 CFG passes = 8 NFE a forward: (2 I - 1) 8 <= 80 gives I = 5
        assert "5 iterations" in run.settings and run.nfe_per_prompt == 72


def test_per_category_takes_the_first_rows_or_spreads_them():
    from diffalign.shapes.captions import CATEGORIES
    from diffalign.shapes.evaluation import load_prompts, per_category

    rows = load_prompts("train")
    first = per_category(rows, 2)
    assert [r["category"] for r in first] == [c for c in CATEGORIES for _ in range(2)]
    counting = [r for r in rows if r["category"] == "counting"]
    spread = [r for r in per_category(rows, 2, spread=True) if r["category"] == "counting"]
    assert spread == [counting[0], counting[len(counting) // 2]]
    assert len(per_category(rows, 5)) == 5 * len(CATEGORIES) - 2  # single_object has only 3 train captions
