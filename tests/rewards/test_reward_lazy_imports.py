import subprocess
import sys

HEAVY = ("open_clip", "transformers", "sklearn", "matplotlib")


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import sys, diffalign.rewards as r\n"
        "assert 'clip' in r.names() and 'aesthetic' in r.names()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at import time: {result.stdout.strip()}"
