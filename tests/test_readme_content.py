"""What a newcomer reads in the README: self-contained snippets, accurate claims, caveats after usage."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_every_python_block_imports_what_it_uses():
    for block in PYTHON_BLOCKS:
        if "da." in block:
            assert "import diffalign as da" in block, block.splitlines()[0]
        if "torch." in block:
            assert "import torch" in block, block.splitlines()[0]


def test_rewards_are_described_as_taking_decoded_images():
    assert "Any callable `x0 -> (B,)`" not in README
    assert "receives `model.decode(x0)`" in README


def test_samples_are_not_promised_to_lie_in_minus_one_one():
    assert "in model space ([-1, 1])" not in README


def test_dts_caveat_follows_the_basic_usage_and_is_linked():
    usage = README.index("sampler.tree.num_nodes")
    caveat = README.index("#### DTS bias caveat")
    assert usage < caveat and README.index("(#dts-bias-caveat)") < caveat


def test_demo_time_is_the_measured_one():
    assert "about 20 s on 2 cores" not in README
    assert re.search(r"diffalign demo .*\d+ s measured", README)


def test_compare_samplers_example_and_cpu_install():
    assert "**Compare samplers**" in README and 'for name in ["best-of-n", "sir", "smc", "dts"]' in README
    assert "--index-url https://download.pytorch.org/whl/cpu" in README
    assert "pip install /path/to/diffalign" in README


def test_progress_option_and_save_grid_are_documented():
    assert "progress=False" in README and "da.save_grid(" in README
