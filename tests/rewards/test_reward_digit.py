import shutil

import pytest
import torch

from diffalign.datasets import load_digits_split
from diffalign.errors import DiffalignError
from diffalign.rewards import DigitReward, get, load_digit_classifier
from diffalign.rewards.digit import default_classifier_dir


@pytest.fixture(scope="module")
def test_split():
    return load_digits_split("test")


def test_true_label_scores_higher_than_a_wrong_label(test_split):
    images, labels = test_split.images, test_split.labels
    scores = torch.stack([get("digit", target=k)(images) for k in range(10)], dim=1)  # (N, 10)
    true = scores.gather(1, labels[:, None]).squeeze(1)
    wrong = scores.gather(1, ((labels + 1) % 10)[:, None]).squeeze(1)
    assert true.mean() > wrong.mean() + 1.0
    assert (true > wrong).float().mean() > 0.9
    # log-probabilities: non-positive, and they normalise over the classes
    assert (scores <= 0).all()
    torch.testing.assert_close(scores.exp().sum(dim=1), torch.ones(len(labels)))


def test_gradient_flows_to_images_not_to_the_classifier(test_split):
    reward = get("digit", target=3)
    assert reward.differentiable
    images = test_split.images[:4].clone().requires_grad_(True)
    reward(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in reward.parameters())


@pytest.mark.parametrize("target", [10, -1, "3", 2.0, True])
def test_bad_target_lists_valid_values(target):
    with pytest.raises(DiffalignError, match="0, 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        get("digit", target=target)


def test_wrong_image_shape_names_the_expected_shape():
    with pytest.raises(DiffalignError, match=r"\(B, 1, 8, 8\)"):
        get("digit", target=0)(torch.rand(2, 1, 16, 16))


def test_default_classifier_is_cached_and_other_dirs_load(tmp_path):
    default = load_digit_classifier()
    assert load_digit_classifier(default_classifier_dir()) is default
    assert DigitReward(target=1).classifier is default
    copy = tmp_path / "clf"
    shutil.copytree(default_classifier_dir(), copy)
    other = load_digit_classifier(copy)
    assert other is not default
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(other(images), default(images))
    with pytest.raises(DiffalignError, match="does not exist"):
        load_digit_classifier(tmp_path / "missing")


def test_without_a_target_each_prompt_names_its_digit():
    reward = get("digit")
    assert reward.needs_prompts
    torch.manual_seed(0)
    images = torch.rand(3, 1, 8, 8)
    expected = torch.stack([get("digit", target=t)(images[i:i + 1])[0] for i, t in enumerate([3, 7, 3])])
    torch.testing.assert_close(reward(images, prompts=["3", "7", " 3 "]), expected)
    with pytest.raises(DiffalignError, match="'digit' needs prompts"):
        reward(images)
    with pytest.raises(DiffalignError, match="reads each prompt as its digit.*'a cat'"):
        reward(images, prompts=["3", "a cat", "1"])
