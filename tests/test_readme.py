"""The README's Python examples run as written (in order, sharing one namespace)."""

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    shutil.copytree(README.parent / "configs", tmp_path / "configs")  # examples run from the repository root
    monkeypatch.chdir(tmp_path)  # the examples write files (e.g. threes.png)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
