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
