"""Cost of one model evaluation of the embedded models, in microseconds per sample.

    python benchmarks/model_speed.py [--quick] [--batch-size 256 [512 ...]] [--models digits shapes ...] [--threads 2]

Times ``Denoiser.predict`` (network + adapter + prediction conversion) under ``torch.no_grad`` at fixed
batches, after warm-up, and reports the median of several repeats. The target is <= 300 us per sample
at batch 256 on 2 CPU threads, which makes 1e5-1e6 NFE benchmarks feasible on a CPU.

With several ``--batch-size`` values it measures the cost per row against the batch (the repeats go
round the batch sizes, so a change in the machine's load touches every size alike): the forest of
trees (``samplers/forest.py``) caps its shared calls at the row count where the network is cheapest
per row (``DEFAULT_MAX_ROWS``). Those runs write ``model_speed-per-row[-quick].md``.
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

DEFAULT_MODELS = ["digits", "digits-flow"]
CONDITIONS = {  # a batch of conditions each embedded model takes
    "digits": lambda batch: torch.randint(10, (batch,)),
    "digits-flow": lambda batch: torch.randint(10, (batch,)),
    "shapes": lambda batch: [["a circle", "two red squares", "a blue triangle above a green circle"][i % 3]
                             for i in range(batch)],
}


def time_model(model, name: str, batches: list[int], repeats: int, calls: int) -> dict[int, float]:
    """Median µs per sample of ``predict`` at each batch size."""
    inputs = {}
    for batch in batches:
        inputs[batch] = (torch.randn(batch, *model.shape), torch.rand(batch, dtype=torch.float64),
                         model.encode_condition(CONDITIONS[name](batch), batch))
    per_row = {batch: [] for batch in batches}
    with torch.no_grad():
        for batch in batches:
            for _ in range(3 if len(batches) == 1 else 1):
                model.predict(*inputs[batch])
        for _ in range(repeats):
            for batch in batches:
                start = time.perf_counter()
                for _ in range(calls):
                    model.predict(*inputs[batch])
                per_row[batch].append((time.perf_counter() - start) / calls / batch * 1e6)
    return {batch: statistics.median(values) for batch, values in per_row.items()}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, nargs="+", default=[256], help="rows per call (several: cost per row)")
    p.add_argument("--models", nargs="+", choices=sorted(CONDITIONS), default=DEFAULT_MODELS)
    args = p.parse_args()
    common.setup(args)
    repeats, calls = (3, 5) if args.quick else (7, 10)
    rows, results = [], {}
    per_row_run = args.batch_size != [256] or args.models != DEFAULT_MODELS
    for name in args.models:
        model = da.load_model(name)
        params = sum(p.numel() for p in model.network.parameters())
        costs = time_model(model, name, args.batch_size, repeats, calls)
        fastest = min(costs, key=costs.get)
        for batch, us in costs.items():
            key = name.replace("-", "_") + (f"_{batch}" if len(costs) > 1 else "") + "_us"
            results[key] = f"{us:.0f}"
            rows.append([name, type(model.network).__name__, f"{params:,}", batch, f"{us:.0f}",
                         "yes" if us <= 300 else "NO", "fastest" if batch == fastest and len(costs) > 1 else ""])
            print(f"{name} batch {batch}: {us:.0f} us/sample", flush=True)
    command = "python benchmarks/model_speed.py" + (" --quick" if args.quick else "") + (
        f" --batch-size {' '.join(map(str, args.batch_size))}" if args.batch_size != [256] else "") + (
        f" --models {' '.join(args.models)}" if args.models != DEFAULT_MODELS else "") + (
        f" --threads {args.threads}" if args.threads != 2 else "")
    path = common.write_markdown(
        "model_speed-per-row" if per_row_run else "model_speed", "Embedded model speed", rows,
        ["model", "network", "parameters", "batch", "us / sample", "<= 300 us", "cheapest per row"],
        f"`{command}`: median over {repeats} repeats of {calls} `predict` calls (wall time), after warm-up"
        + (", the repeats going round the batch sizes" if len(args.batch_size) > 1 else "") + ".", args.quick,
    )
    print(f"wrote {path}")
    common.result_line("model_speed", **results)


if __name__ == "__main__":
    main()
