"""DTS bookkeeping overhead: wall time per NFE of DTS divided by that of plain batched ancestral sampling.

    python benchmarks/overhead.py [--quick]

Same model (the embedded ``digits`` UNet), same number of rows per model call (DTS expands
``leaves_per_iteration`` leaves together; ancestral sampling uses that as its batch size), same steps.
Selection, expansion bookkeeping, node storage, reward calls and backups are all inside the DTS time,
so the ratio is the price of the tree. Also reports bytes stored per node.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402

STEPS = 50


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="*", default=None, help="leaves per iteration / batch sizes")
    args = p.parse_args()
    common.setup(args)
    batches = args.batches or ([64] if args.quick else [16, 64, 256])
    nfe = 20_000 if args.quick else 100_000
    model = da.load_model("digits")
    reward = da.rewards.get("digit", target=3)
    da.sample(model, reward, num_samples=32, steps=5)  # warm-up (lazy imports, allocator)
    rows, ratios = [], {}
    for batch in batches:
        dts, dts_s = timed(lambda: da.sample(model, reward, sampler="dts", num_samples=16, nfe=nfe, steps=STEPS, seed=0,
                                             leaves_per_iteration=batch))
        n = dts.nfe // STEPS
        base, base_s = timed(lambda: da.sample(model, reward, sampler="ancestral", num_samples=n, steps=STEPS, seed=0,
                                               batch_size=batch))
        ratio = (dts_s / dts.nfe) / (base_s / base.nfe)
        ratios[f"ratio_b{batch}"] = f"{ratio:.3f}"
        rows.append([batch, f"{dts.nfe:,}", f"{dts_s / dts.nfe * 1e6:.0f}", f"{base_s / base.nfe * 1e6:.0f}", f"{ratio:.3f}",
                     dts.info["nodes"], dts.info["bytes_per_node"]])
        print(f"batch {batch}: DTS {dts_s / dts.nfe * 1e6:.0f} us/NFE, ancestral {base_s / base.nfe * 1e6:.0f} us/NFE, "
              f"ratio {ratio:.3f}, {dts.info['nodes']} nodes x {dts.info['bytes_per_node']} bytes")
    path = common.write_markdown(
        "overhead", "DTS overhead over batched ancestral sampling (digits UNet)", rows,
        ["rows per call", "NFE", "DTS us/NFE", "ancestral us/NFE", "ratio", "nodes", "bytes/node"],
        f"`python benchmarks/overhead.py{' --quick' if args.quick else ''}`: {STEPS} steps, DTS with default options "
        f"(branch every 10 steps, float32 node states), reward `digit` (target 3) evaluated inside both timings.",
        args.quick,
    )
    print(f"wrote {path}")
    common.result_line("overhead", **ratios)


if __name__ == "__main__":
    main()
