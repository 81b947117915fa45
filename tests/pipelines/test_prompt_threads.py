"""Prompt encoding is safe from several threads at once: a forest's trees (dts, dts-star) encode in
threads of their own, and a fast tokenizer's padding setting is shared state."""

from __future__ import annotations

import threading

import diffalign as da

PROMPTS = ["a circle", "a triangle and a square", "a red circle and a blue square", "three red squares"]


def test_concurrent_prompt_encoding_keeps_the_padded_length():
    model = da.load_model("shapes")
    expected = model.encode_condition(PROMPTS[0], 1)["encoder_hidden_states"].shape
    shapes, errors = [], []

    def encode(offset: int):
        try:
            for k in range(40):
                prompt = PROMPTS[(offset + k) % len(PROMPTS)]
                shapes.append(tuple(model.encode_condition(prompt, 1)["encoder_hidden_states"].shape))
        except Exception as error:  # a failure in a thread must fail the test, not vanish
            errors.append(error)

    threads = [threading.Thread(target=encode, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(shapes) == {tuple(expected)}, f"unpadded conditions from concurrent encoding: {set(shapes)}"
