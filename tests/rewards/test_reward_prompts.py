"""The §3b reward contract: reward(images, prompts=None, metadata=None) -> (B,)."""

import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.rewards import CallableReward, Reward, as_reward, get


class PromptLength(Reward):
    name = "prompt-length"
    needs_prompts = True

    def forward(self, images, prompts=None, metadata=None):
        return torch.tensor([float(len(p)) for p in prompts])


class MetadataScore(Reward):
    name = "metadata-score"

    def forward(self, images, prompts=None, metadata=None):
        return torch.tensor([float(m["score"]) if m else 0.0 for m in (metadata or [None] * len(images))])


class ImagesOnly(Reward):
    name = "images-only"

    def forward(self, images):
        return images.flatten(1).mean(1)


IMAGES = torch.rand(3, 1, 4, 4)
PROMPTS = ["a", "bb", "cccc"]


def test_prompt_reading_reward_gets_each_images_prompt():
    assert PromptLength().needs_prompts
    torch.testing.assert_close(PromptLength()(IMAGES, prompts=PROMPTS), torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(PromptLength()(IMAGES, prompts="xyz"), torch.tensor([3.0] * 3))


def test_prompt_reading_reward_without_prompts_is_one_line_naming_it():
    with pytest.raises(DiffalignError, match="'prompt-length' needs prompts") as error:
        PromptLength()(IMAGES)
    assert "\n" not in str(error.value)


def test_wrong_number_of_prompts_or_metadata():
    with pytest.raises(DiffalignError, match="2 prompts for 3 images"):
        PromptLength()(IMAGES, prompts=PROMPTS[:2])
    with pytest.raises(DiffalignError, match="list of strings"):
        PromptLength()(IMAGES, prompts=[1, 2, 3])
    with pytest.raises(DiffalignError, match="one entry per image"):
        MetadataScore()(IMAGES, metadata=[{}])


def test_metadata_reaches_the_reward():
    meta = [{"score": 1}, {"score": 2}, {"score": 5}]
    torch.testing.assert_close(MetadataScore()(IMAGES, metadata=meta), torch.tensor([1.0, 2.0, 5.0]))


def test_images_only_rewards_ignore_prompts():
    reward = ImagesOnly()
    assert not reward.needs_prompts
    torch.testing.assert_close(reward(IMAGES, prompts=PROMPTS), reward(IMAGES))
    for name in ("compressibility", "incompressibility"):
        r = get(name)
        assert not r.needs_prompts
        torch.testing.assert_close(r(IMAGES, prompts=PROMPTS), r(IMAGES))


def test_plain_one_argument_callable_never_receives_prompts():
    seen = []

    def mean(x):
        seen.append(x.shape[0])
        return x.flatten(1).mean(1)

    reward = as_reward(mean)
    assert isinstance(reward, CallableReward) and not reward.needs_prompts
    torch.testing.assert_close(reward(IMAGES, prompts=PROMPTS), IMAGES.flatten(1).mean(1))
    assert seen == [3]


def test_callable_with_prompts_parameter_receives_them():
    reward = as_reward(lambda x, prompts: [len(p) for p in prompts])
    assert reward.needs_prompts
    torch.testing.assert_close(reward(IMAGES, prompts=PROMPTS), torch.tensor([1.0, 2.0, 4.0]))
    optional = as_reward(lambda x, prompts=None, metadata=None: [0.0 if prompts is None else 1.0] * len(x))
    assert not optional.needs_prompts
    torch.testing.assert_close(optional(IMAGES), torch.zeros(3))
    torch.testing.assert_close(optional(IMAGES, prompts=PROMPTS), torch.ones(3))


def test_weighted_sum_passes_prompts_to_each_term():
    reward = get("weighted-sum", rewards=[PromptLength(), ImagesOnly(), MetadataScore()], weights=[2.0, 1.0, 10.0])
    assert reward.needs_prompts
    meta = [{"score": 1}, {"score": 0}, {"score": 0}]
    expected = 2 * torch.tensor([1.0, 2.0, 4.0]) + IMAGES.flatten(1).mean(1) + 10 * torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(reward(IMAGES, prompts=PROMPTS, metadata=meta), expected)
    with pytest.raises(DiffalignError, match="'prompt-length' needs prompts"):
        reward(IMAGES)
    images_only = get("weighted-sum", rewards=[ImagesOnly(), "compressibility"])
    assert not images_only.needs_prompts
    torch.testing.assert_close(images_only(IMAGES), images_only(IMAGES, prompts=PROMPTS))
