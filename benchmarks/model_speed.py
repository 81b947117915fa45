"""Cost of one model evaluation of the embedded models, in microseconds per sample.

    python benchmarks/model_speed.py [--quick] [--batch-size 256] [--threads 2]

Times ``Denoiser.predict`` (network + adapter + prediction conversion) under ``torch.no_grad`` at a
fixed batch, after warm-up, and reports the median of several repeats. The target is <= 300 us per
sample at batch 256 on 2 CPU threads, which makes 1e5-1e6 NFE benchmarks feasible on a CPU.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402


def time_model(model, batch: int, repeats: int, calls: int) -> float:
    x = torch.randn(batch, *model.shape)
    t = torch.rand(batch, dtype=torch.float64)
    cond = model.encode_condition(torch.randint(10, (batch,)), batch)
    with torch.no_grad():
        for _ in range(3):
            model.predict(x, t, cond)
        per_call = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                model.predict(x, t, cond)
            per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call) / batch * 1e6


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    common.setup(args)
    repeats, calls = (3, 5) if args.quick else (7, 10)
    rows, results = [], {}
    for name in ("digits", "digits-flow"):
        model = da.load_model(name)
        params = sum(p.numel() for p in model.network.parameters())
        us = time_model(model, args.batch_size, repeats, calls)
        results[name.replace("-", "_") + "_us"] = f"{us:.0f}"
        rows.append([name, type(model.network).__name__, f"{params:,}", args.batch_size, f"{us:.0f}", "yes" if us <= 300 else "NO"])
        print(f"{name}: {us:.0f} us/sample")
    path = common.write_markdown(
        "model_speed", "Embedded model speed", rows,
        ["model", "network", "parameters", "batch", "us / sample", "<= 300 us"],
        f"`python benchmarks/model_speed.py{' --quick' if args.quick else ''}`: median over {repeats} repeats of "
        f"{calls} `predict` calls, after warm-up.", args.quick,
    )
    print(f"wrote {path}")
    common.result_line("model_speed", **results)


if __name__ == "__main__":
    main()
