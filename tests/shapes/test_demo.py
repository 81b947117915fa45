"""`diffalign demo` on shapes: a labelled grid (one row per method), a report, and the digits demo behind
``--world digits``."""

from __future__ import annotations

import pytest

from diffalign.cli import main


def test_shapes_demo_rows_are_labelled_with_method_nfe_and_verifier_score(tmp_path, monkeypatch):
    from diffalign.shapes import demo

    saved = {}
    monkeypatch.setattr(demo, "save_grid", lambda images, path, **kw: saved.update(kw, count=len(images)))
    prompts = ["a red circle", "a circle left of a square"]
    rows = demo.run_shapes_demo(tmp_path, prompts=prompts, nfe=80)
    assert [row[0] for row in rows] == list(demo.METHODS)
    assert saved["nrow"] == len(prompts) and saved["count"] == len(prompts) * len(rows)
    method, _, nfe, accuracy, *_ = rows[1]
    assert saved["row_labels"][1] == f"best-of-n: {nfe:.0f} NFE/prompt, verifier {accuracy:.2f}"
    assert all(row[2] <= 80 for row in rows)  # the equal budget per prompt holds for every method
    report = (tmp_path / "report.md").read_text()
    assert "1. a red circle; 2. a circle left of a square" in report and "| smc | shapes-verifier" in report


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--target", "3"], "--target go with --world digits"),
    (["demo", "--world", "digits", "--nfe", "100"], "--nfe goes with --world shapes"),
])
def test_demo_options_of_the_other_world_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    assert main(argv + ["--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "demo").exists()
