"""Files a user keeps: grids sized by their images, labelled rows, the user's umask, the license field."""

import os
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image

import diffalign as da
from diffalign.atomic import atomic_directory, atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("size,tile,pad", [(8, 64, 4), (32, 64, 1), (64, 64, 1), (512, 512, 1)])
def test_grid_tile_scale_depends_on_image_size(tmp_path, size, tile, pad):
    # issue 22 (newcomer 7): 8x8 digits get 4-px separators; failed before with 1 px
    path = da.save_grid(torch.rand(1, 3, size, size), tmp_path / "g.png")
    assert Image.open(path).size == (tile + 2 * pad, tile + 2 * pad)


def test_grid_row_labels_widen_the_image(tmp_path):
    images = torch.rand(4, 1, 8, 8)
    plain = Image.open(da.save_grid(images, tmp_path / "plain.png", nrow=2))
    labelled = Image.open(da.save_grid(images, tmp_path / "labelled.png", nrow=2, row_labels=["base", "best-of-32"]))
    assert labelled.height == plain.height and labelled.width > plain.width + 20
    with pytest.raises(ValueError, match="2 labels for a grid of 1 rows"):
        da.save_grid(images, tmp_path / "bad.png", nrow=4, row_labels=["a", "b"])


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_keep_the_umask(tmp_path, umask_022):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    da.save_grid(torch.rand(1, 1, 8, 8), tmp_path / "g.png")
    with atomic_directory(tmp_path / "run") as d:
        (d / "f").write_text("x")
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "g.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # the table form is deprecated by setuptools


def test_version_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert da.__version__ == project["version"]


def test_demo_grid_labels_rows_with_method_nfe_and_reward(tmp_path, monkeypatch):
    from diffalign import demo

    saved = {}
    monkeypatch.setattr(demo, "save_grid", lambda images, path, **kw: saved.update(kw))
    rows = demo.run_demo(tmp_path, num_samples=1, candidates=2, steps=2)  # `diffalign demo --world digits`
    labels = saved["row_labels"]
    assert len(labels) == len(rows) == 6
    assert labels[1] == f"digits, best-of-2 (unconditional): {rows[1][2]} NFE, mean reward {rows[1][3]:.2f}"
