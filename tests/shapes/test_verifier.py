"""shapes-verifier: agreement with the ground truth on rendered scenes (incl. hard cases), per category, partial."""

import numpy as np
import pytest
import torch

import diffalign as da
from diffalign.errors import DiffalignError
from diffalign.shapes.captions import CATEGORIES, all_captions, parse_caption
from diffalign.shapes.scenes import render_batch, sample_scenes, to_tensor
from diffalign.shapes.verifier import caption_clauses, detect_objects

HARD_CASES = {
    "plain": {},
    "touching": {"min_gap": 0},
    "smallest-touching": {"min_gap": 0, "radius": 4},
    "border": {"border": True},
    "smallest-border-touching": {"min_gap": 0, "radius": 4, "border": True},
}


def _agreement(options, seed, repeats=2):
    captions = [c for cat in CATEGORIES for c in all_captions(cat)] * repeats
    scenes = sample_scenes(captions, seed=seed, **options)
    agree = 0
    for caption, scene, image in zip(captions, scenes, render_batch(scenes)):
        found = detect_objects(image)
        same_objects = sorted((o.shape, o.colour) for o in found) == sorted((o.shape, o.colour) for o in scene.objects)
        agree += same_objects and all(caption_clauses(caption, found))
    return agree / len(captions)


def test_verifier_agrees_with_ground_truth_on_99_percent_of_renders_including_hard_cases():
    rates = {name: _agreement(options, seed=i) for i, (name, options) in enumerate(HARD_CASES.items())}
    overall = sum(rates.values()) / len(rates)
    assert overall >= 0.99, rates
    assert min(rates.values()) >= 0.98, rates


def _score(prompt, true_prompt, partial=False, seed=0):
    image = to_tensor(render_batch(sample_scenes([true_prompt], seed=seed)))
    return float(da.rewards.get("shapes-verifier", partial=partial)(image, prompts=[prompt])[0])


@pytest.mark.parametrize("scene_of,right,wrong", [
    ("a circle", "a circle", "a square"),
    ("a circle and a triangle", "a triangle and a circle", "a circle and a square"),
    ("three squares", "three squares", "two squares"),
    ("two red circles", "two red circles", "two blue circles"),
    ("a green triangle", "a green triangle", "a red triangle"),
    ("a circle left of a square", "a square right of a circle", "a circle right of a square"),
    ("a circle above a square", "a square below a circle", "a circle below a square"),
    ("a red circle and a blue square", "a red circle and a blue square", "a blue circle and a red square"),
])
def test_each_category_accepts_the_truth_and_rejects_a_perturbation(scene_of, right, wrong):
    for seed in range(3):
        assert _score(right, scene_of, seed=seed) == 1.0
        assert _score(wrong, scene_of, seed=seed) == 0.0


def test_a_means_at_least_one_and_numbers_mean_exactly():
    assert _score("a circle", "two circles") == 1.0  # GenEval: "a photo of a X" needs at least one X
    assert _score("one circle", "two circles") == 0.0


def test_partial_gives_the_fraction_of_clauses_that_hold():
    assert _score("a red circle and a blue square", "a red circle and a blue square", partial=True) == 1.0
    # colours swapped: both shapes present (2 clauses), neither colour right (2 clauses)
    assert _score("a blue circle and a red square", "a red circle and a blue square", partial=True) == 0.5
    assert _score("a circle right of a square", "a circle left of a square", partial=True) == pytest.approx(2 / 3)
    assert _score("two red circles", "two blue circles", partial=True) == 0.5
    assert _score("a triangle", "a circle", partial=True) == 0.0


def test_blank_image_fails_and_verifier_needs_prompts_and_grammar():
    reward = da.rewards.get("shapes-verifier")
    blank = torch.full((1, 3, 32, 32), 0.16)
    assert float(reward(blank, prompts=["a circle"])[0]) == 0.0
    assert reward.needs_prompts and not reward.differentiable
    with pytest.raises(DiffalignError, match="shapes-verifier"):
        reward(blank)
    with pytest.raises(DiffalignError, match="purple"):
        reward(blank, prompts=["a purple circle"])
    with pytest.raises(DiffalignError, match="partial"):
        da.rewards.get("shapes-verifier", partial="yes")


def test_merged_same_colour_blob_is_split_and_counted():
    captions = [parse_caption("two red squares")] * 20
    scenes = sample_scenes(captions, seed=11, min_gap=0, radius=4)
    counts = [len(detect_objects(img)) for img in render_batch(scenes)]
    assert counts == [2] * 20
