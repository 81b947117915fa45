"""The caption grammar: GenEval's six categories, parse round trips, and the held-out composition split."""

import json

import pytest

from diffalign.errors import DiffalignError
from diffalign.shapes.captions import (CATEGORIES, HELD_OUT_COUNTS, HELD_OUT_PAIRS, PERTURBATIONS, all_captions,
                                       parse_caption, perturbations, evaluation_captions, train_captions, write_prompt_files)
from diffalign.shapes.verifier import caption_clauses
from diffalign.shapes.scenes import sample_scenes
from diffalign.zoo import DATA_DIR


def test_every_caption_parses_back_to_itself_and_its_category():
    for category in CATEGORIES:
        captions = all_captions(category)
        assert captions, category
        for caption in captions:
            assert parse_caption(caption.text()) == caption
            assert caption.category == category


@pytest.mark.parametrize("text,category", [
    ("a circle", "single_object"), ("a circle and a square", "two_object"), ("three triangles", "counting"),
    ("two red circles", "counting"), ("a blue square", "colors"), ("a circle left of a triangle", "position"),
    ("a square below a circle", "position"), ("a red circle and a blue square", "color_attr"),
])
def test_examples_of_each_category(text, category):
    assert parse_caption(text).category == category
    assert parse_caption(text).text() == text


@pytest.mark.parametrize("text,words", [
    ("a purple circle", ["purple", "red"]), ("a hexagon", ["hexagon", "circle"]), ("five circles", ["five"]),
    ("two circle", ["plural"]), ("a circle and a circle", ["same shape"]), ("a red circle left of a square", ["position"]),
    ("", ["grammar"]),
])
def test_bad_captions_raise_one_line_naming_the_problem(text, words):
    with pytest.raises(DiffalignError) as err:
        parse_caption(text)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words)


def test_held_out_compositions_never_occur_in_training_captions_but_do_in_test():
    train = train_captions()
    for caption in train:
        for group in caption.groups:
            assert (group.colour, group.shape) not in HELD_OUT_PAIRS
            assert not (group.exact and (group.count, group.shape) in HELD_OUT_COUNTS)
    test = evaluation_captions()
    assert {c.category for c in test if c.held_out} >= {"counting", "colors", "color_attr"}
    train_texts = {c.text() for c in train}
    assert all(c.text() not in train_texts for c in test if c.held_out)


def test_test_set_has_64_rows_per_category():
    test = evaluation_captions()
    assert all(sum(c.category == cat for c in test) == 64 for cat in CATEGORIES)


def test_shipped_prompt_files_match_the_grammar(tmp_path):
    write_prompt_files(tmp_path)
    shipped = DATA_DIR / "shapes" / "prompts"
    for name in ("train.txt", "test.txt", "train.jsonl", "test.jsonl"):
        assert (shipped / name).read_text() == (tmp_path / name).read_text(), name
    row = json.loads((shipped / "test.jsonl").read_text().splitlines()[0])
    assert {"prompt", "category", "held_out", "objects", "relation"} <= set(row)


def test_perturbations_are_false_for_a_scene_of_the_true_caption():
    for category in CATEGORIES:
        captions = all_captions(category)[:6]
        for caption, scene in zip(captions, sample_scenes(captions, seed=3)):
            assert all(caption_clauses(caption, scene.objects))
            for kind in PERTURBATIONS[category]:
                for wrong in perturbations(caption, kind):
                    assert wrong.text() != caption.text()
                    assert parse_caption(wrong.text()) == wrong
