import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.rewards import ClipScore, get, load_clip_backbone


@pytest.fixture
def clip_reward(tiny_clip):
    name, weights = tiny_clip
    return get("clip", prompt="a photo of the digit three", model_name=name, pretrained=str(weights))


@pytest.fixture
def aligned_reward(clip_reward):
    """The tiny CLIP's text embedding is random, so its cosines may all be negative (score 0).
    Aim the reward at a reference image instead, so images near it score well above 0."""
    torch.manual_seed(123)
    reference = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        clip_reward._text_cache[clip_reward.prompt] = clip_reward.backbone.encode_image(reference)[0]
    clip_reward.reference = reference
    return clip_reward


def test_shape_nonnegative_and_deterministic(aligned_reward):
    torch.manual_seed(0)
    images = (aligned_reward.reference + 0.3 * torch.randn(3, 3, 32, 32)).clamp(0, 1)
    batch = torch.cat([images, images[:1], aligned_reward.reference])
    scores = aligned_reward(batch)
    assert scores.shape == (5,) and scores.dtype == torch.float32
    assert (scores > 0).all() and (scores <= 100 + 1e-3).all()
    assert scores[4].item() == pytest.approx(100.0, abs=1e-3)
    torch.testing.assert_close(scores[0], scores[3])
    torch.testing.assert_close(aligned_reward(batch), scores)
    torch.testing.assert_close(aligned_reward(images[:1]), scores[:1], atol=1e-4, rtol=1e-4)


def test_score_is_clamped_cosine(clip_reward):
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    backbone = clip_reward.backbone
    cosine = backbone.encode_image(images) @ backbone.encode_text([clip_reward.prompt])[0]
    scores = clip_reward(images)
    assert (scores >= 0).all()
    torch.testing.assert_close(scores, (100 * cosine).clamp(min=0), atol=1e-4, rtol=1e-4)


def test_gradient_flows_to_images(aligned_reward):
    assert aligned_reward.differentiable
    torch.manual_seed(0)
    # digit-sized grayscale images: repeated to RGB and resized inside the reward
    images = torch.rand(4, 1, 8, 8).requires_grad_(True)
    scores = aligned_reward(images)
    assert (scores > 0).all()
    scores.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert (images.grad.flatten(1).abs().sum(dim=1) > 0).all()
    assert all(not p.requires_grad for p in aligned_reward.parameters())


def test_grayscale_equals_repeated_rgb_and_any_size_works(clip_reward):
    gray = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(clip_reward(gray), clip_reward(gray.repeat(1, 3, 1, 1)))
    assert clip_reward(torch.rand(2, 3, 40, 56)).shape == (2,)
    with pytest.raises(DiffalignError, match="1 or 3 channels"):
        clip_reward(torch.rand(1, 2, 8, 8))


def test_preprocess_at_model_size_only_normalises(clip_reward):
    backbone = clip_reward.backbone
    images = torch.rand(2, 3, *backbone.image_size)
    torch.testing.assert_close(backbone.preprocess(images), (images - backbone.mean) / backbone.std)


def test_backbone_is_shared(tiny_clip, clip_reward):
    name, weights = tiny_clip
    assert load_clip_backbone(name, weights) is clip_reward.backbone


def test_offline_missing_tag_weights_say_what_to_download(hub_offline):
    with pytest.raises(DiffalignError) as info:
        ClipScore(prompt="a cat", model_name="ViT-L-14", pretrained="openai")
    message = str(info.value)
    for part in ("ViT-L-14", "openai", "download", "pretrained=/path/to/", "quick_gelu=True", "HF_HUB_OFFLINE"):
        assert part in message, part


def test_bad_weights_arguments(tiny_clip, tmp_path):
    name, _ = tiny_clip
    with pytest.raises(DiffalignError, match="does not exist"):
        ClipScore(prompt="x", model_name=name, pretrained=str(tmp_path / "missing.bin"))
    with pytest.raises(DiffalignError, match="known tags: openai"):
        ClipScore(prompt="x", model_name="ViT-L-14", pretrained="no-such-tag")
    with pytest.raises(DiffalignError, match="unknown open_clip model"):
        ClipScore(prompt="x", model_name="ViT-L-15", pretrained="openai")
    with pytest.raises(DiffalignError, match="needs weights"):
        ClipScore(prompt="x", model_name=name, pretrained=None)
    with pytest.raises(DiffalignError, match="prompt"):
        ClipScore(prompt="", model_name=name, pretrained="openai")

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DiffalignError, match="could not load"):
        ClipScore(prompt="x", model_name=name, pretrained=str(garbage))


def test_each_image_is_scored_against_its_own_prompt(tiny_clip):
    name, weights = tiny_clip
    reward = get("clip", model_name=name, pretrained=str(weights))  # no default prompt
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    prompts = ["a red circle", "two blue squares", "a red circle", "a green triangle"]
    backbone = reward.backbone
    expected = (100 * (backbone.encode_image(images) * backbone.encode_text(prompts)).sum(-1)).clamp(min=0)
    torch.testing.assert_close(reward(images, prompts=prompts), expected, atol=1e-4, rtol=1e-4)
    # each score depends on its own prompt only: reordering the batch reorders the scores
    order = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(reward(images[order], prompts=[prompts[i] for i in order]), expected[order],
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(DiffalignError, match="'clip' needs prompts"):
        reward(images)


def test_default_prompt_serves_prompt_free_calls(clip_reward):
    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(clip_reward(images), clip_reward(images, prompts=[clip_reward.prompt] * 3))
