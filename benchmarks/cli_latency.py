"""How long the command line takes to answer when it does no sampling: bad names, --help, --version.

    python benchmarks/cli_latency.py [--quick] [--repeats 3]

Each command runs in a fresh interpreter (as a user's shell would start it) and is timed from start to
exit; the median of the repeats is reported. Target (issue 12): any bad-name error within 2 s. Before
validation moved ahead of the torch/diffusers imports, `--sampler bon` took about 14 s and `--help`
4.6 s on 2 CPU cores.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET_S = 2.0
OUT = str(Path(tempfile.gettempdir()) / "diffalign-cli-latency.png")
COMMANDS = {
    "bad sampler (--sampler bon)": ["sample", "--sampler", "bon", "--out", OUT],
    "bad model (--model nope)": ["sample", "--model", "nope", "--out", OUT],
    "bad option (max_bytes on dts)": ["sample", "--sampler", "dts", "--reward", "digit", "--target", "3",
                                      "--option", "max_bytes=1", "--out", OUT],
    "--cfg without --cond": ["sample", "--cfg", "3", "--out", OUT],
    "--help": ["--help"],
    "sample --help": ["sample", "--help"],
    "--version": ["--version"],
}


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffalign.cli", *argv], capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    rows = []
    for label, argv in COMMANDS.items():
        median = statistics.median(seconds(argv) for _ in range(repeats))
        rows.append([label, f"{median:.2f}", "yes" if median <= TARGET_S else "NO"])
        print(f"{label:32s} {median:6.2f} s")
    notes = (f"`python benchmarks/cli_latency.py{' --quick' if args.quick else ''}`: wall time of `python -m "
             f"diffalign.cli ...` in a fresh interpreter, median of {repeats}; target <= {TARGET_S:g} s. "
             "Before this change: `--sampler bon` 13.5 s, `--help` 3.2-4.6 s.")
    path = common.write_markdown("cli_latency", "CLI latency without sampling", rows,
                                 ["command", "seconds", f"<= {TARGET_S:g} s"], notes, args.quick)
    worst = max(float(r[1]) for r in rows)
    print(f"wrote {path}")
    common.result_line("cli_latency", worst_s=f"{worst:.2f}", target_s=TARGET_S)


if __name__ == "__main__":
    main()
