"""shapes-clip: a prompt-aware, differentiable CLIPScore on the embedded tiny CLIP."""

import torch

import diffalign as da
from diffalign.shapes.clip import load_shapes_clip
from diffalign.shapes.scenes import render_batch, sample_scenes, to_tensor


def _images(prompts, seed=0):
    return to_tensor(render_batch(sample_scenes(prompts, seed=seed)))


def test_backbone_interface_is_normalised_like_clip_backbone():
    backbone = load_shapes_clip()
    image = backbone.encode_image(_images(["a red circle"]))
    text = backbone.encode_text(["a red circle", "two blue squares"])
    assert image.shape == (1, backbone.embed_dim) and text.shape == (2, backbone.embed_dim)
    assert torch.allclose(image.norm(dim=-1), torch.ones(1), atol=1e-5)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_clip_reward_with_model_shapes_clip_prefers_the_true_caption_and_has_pixel_gradients():
    reward = da.rewards.get("clip", model="shapes-clip")
    assert reward.needs_prompts and reward.differentiable
    prompts = ["a red circle", "a green square", "a yellow triangle", "three blue circles"]
    images = _images(prompts).requires_grad_(True)
    matched = reward(images, prompts=prompts)
    shuffled = reward(images, prompts=prompts[1:] + prompts[:1])
    assert matched.shape == (4,)
    assert (matched > shuffled).all()
    matched.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_unknown_clip_model_names_the_choices():
    import pytest

    with pytest.raises(da.DiffalignError, match="shapes-clip"):
        da.rewards.get("clip", model="tiny-clip")


def test_shape_centroids_place_each_present_shape_and_mask_the_absent_ones():
    from diffalign.shapes.clip import shape_centroids
    from diffalign.shapes.captions import SHAPES

    scenes = sample_scenes(["a circle left of a square", "a triangle above a circle", "two red circles"], seed=3)
    centres, present = shape_centroids(scenes)
    circle, square, triangle = (SHAPES.index(s) for s in ("circle", "square", "triangle"))
    assert centres.shape == (3, len(SHAPES), 2) and present.shape == (3, len(SHAPES))
    assert present[0].tolist() == [i != triangle for i in range(len(SHAPES))]
    assert centres[0, circle, 0] < centres[0, square, 0]  # left of: smaller x
    assert centres[1, triangle, 1] < centres[1, circle, 1]  # above: smaller y (image rows grow downwards)
    assert (centres[~present] == 0).all() and centres.abs().max() <= 1
    expected_x = sum(o.cx for o in scenes[2].objects) / 2 / 31 * 2 - 1  # the mean of the two circles
    assert abs(float(centres[2, circle, 0]) - expected_x) < 1e-6


def test_shipped_shapes_clip_tells_left_from_right():
    # the stage-3 weights scored 0.531 here (chance: the towers merged the relation words); stage 4 added
    # the auxiliary position objective (scripts/train_shapes_clip.py --position-aux-weight)
    from diffalign.shapes.captions import all_captions
    from diffalign.shapes.clip import zero_shot_accuracy

    accuracy = zero_shot_accuracy(load_shapes_clip(), all_captions("position") * 2)
    correct, total = accuracy[("position", "position")]
    assert total == 48 and correct / total >= 0.8
