"""Reward server overhead: ``remote`` scoring through ``diffalign serve-reward`` against local scoring.

    python benchmarks/reward_server.py [--quick]

The ``digit`` reward (target 3) on batches of 64 random 8x8 images, scored (a) locally, (b) by a
``serve-reward`` subprocess on a free loopback port through ``da.rewards.get("remote", ...)``.
Two patterns, each alternating local and remote so load from other processes hits both alike:
(a) back to back, blocks of 20 calls (a sampler scoring batch after batch); (b) interleaved call by
call (a trainer scoring once between rollouts: the server has slept since its last request). Also reported: the bare HTTP round trip
(``GET /info``), the wire encoding/decoding, and the throughput with ``score_async`` keeping
requests in flight. Target: remote <= 1.25x local on loopback (issue 20).

Both processes use ``--threads`` torch threads (default 1 here, see ``main``). Full run: about a
minute on 2 cores; ``--quick``: about 30 seconds.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.rewards.wire import decode_scores, encode_images, encode_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
TARGET = 1.25


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "diffalign", "serve-reward", "digit", "--option", "target=3",
                             "--port", "0", "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "serving reward" not in line:
        proc.kill()
        raise SystemExit(f"the reward server did not start: {line!r}")
    return proc, line.split(" at ")[1].split()[0]


def per_call_ms(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    # one thread per process: the digit net at batch 64 is too small to gain from two, and two threads in
    # each of two processes (client and server) oversubscribe a 2-core machine (local scoring then
    # measured 48 ms instead of 4 ms under load, which made the ratio meaningless)
    p.set_defaults(threads=1)
    args = p.parse_args()
    common.setup(args)
    calls, blocks = (300, 15) if args.quick else (1500, 60)
    proc, url = start_server(args.threads)
    try:
        local = da.rewards.get("digit", target=3)
        remote = da.rewards.get("remote", url=url, batch_size=BATCH)
        images = torch.rand(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        assert torch.equal(remote(images), local(images)), "remote scores differ from local ones"
        answer = encode_scores(local(images))
        with torch.no_grad():
            for _ in range(20):  # warm both paths (allocator, keep-alive connection)
                local(images), remote(images)
            # (a) back to back: blocks of 20 local calls, then 20 remote calls, alternating (a sampler or an
            # evaluation scoring batch after batch)
            block_local, block_remote, block_async = [], [], []
            for _ in range(blocks):
                block_local.append(per_call_ms(lambda: local(images), 20))
                block_remote.append(per_call_ms(lambda: remote(images), 20))
                start = time.perf_counter()  # score_async: the next request is sent while one is scored
                for future in [remote.score_async(images) for _ in range(20)]:
                    future.result()
                block_async.append((time.perf_counter() - start) / 20 * 1e3)
            # (b) interleaved: one local call, one remote call (a trainer scoring one batch between rollouts:
            # the server process has slept since its last request)
            one_local, one_remote, http_ms, wire_ms = [], [], [], []
            for _ in range(calls):
                one_local.append(per_call_ms(lambda: local(images), 1))
                one_remote.append(per_call_ms(lambda: remote(images), 1))
                http_ms.append(per_call_ms(lambda: remote.info(), 1))
                wire_ms.append(per_call_ms(lambda: (encode_images(images, None, None), decode_scores(answer, BATCH)), 1))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)

    med = statistics.median
    p10 = lambda values: statistics.quantiles(values, n=10)[0]  # noqa: E731  (the least disturbed calls)
    ratio_b2b = med(block_remote) / med(block_local)
    ratio_one = med(one_remote) / med(one_local)
    table = [
        ["(a) back to back: local", f"{med(block_local):.2f}", "", "1.00"],
        ["(a) back to back: remote", f"{med(block_remote):.2f}", "", f"{ratio_b2b:.2f}"],
        ["(a) back to back: remote, `score_async` (20 in flight)", f"{med(block_async):.2f}", "",
         f"{med(block_async) / med(block_local):.2f}"],
        ["(b) interleaved: local", f"{med(one_local):.2f}", f"{p10(one_local):.2f}", "1.00"],
        ["(b) interleaved: remote", f"{med(one_remote):.2f}", f"{p10(one_remote):.2f}",
         f"{ratio_one:.2f} (p10: {p10(one_remote) / p10(one_local):.2f})"],
        ["(b) overhead: median of paired (remote - local)", f"{med(r - l for r, l in zip(one_remote, one_local)):.2f}",
         "", ""],
        ["bare HTTP round trip (`GET /info`)", f"{med(http_ms):.2f}", f"{p10(http_ms):.2f}", ""],
        ["wire encode + decode (client side)", f"{med(wire_ms):.3f}", "", ""],
    ]
    notes = (f"`python benchmarks/reward_server.py{' --quick' if args.quick else ''}`: the `digit` reward at batch "
             f"{BATCH}, local vs `diffalign serve-reward` on loopback (uvicorn, one worker) through the `remote` "
             f"reward. (a) {blocks} alternating blocks of 20 local / 20 remote calls, median of the block means; "
             f"(b) {calls} calls alternating one local / one remote, median and 10th percentile per call. Scores "
             f"were checked bit-identical. Target: remote <= {TARGET}x local. Load average (1 min) at the end: "
             f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, shared with other jobs: every remote call wakes "
             "the server process, which waits for a free core when the machine is loaded, so the overhead moves "
             "with the load.")
    path = common.write_markdown("reward_server", "Reward server overhead (loopback)", table,
                                 ["path", "median ms", "p10 ms", "x local"], notes, args.quick)
    print(path.read_text())
    common.result_line("reward_server", local_ms=f"{med(block_local):.2f}", remote_ms=f"{med(block_remote):.2f}",
                       ratio_back_to_back=f"{ratio_b2b:.2f}", ratio_interleaved=f"{ratio_one:.2f}",
                       target=TARGET, met=f"{'yes' if ratio_b2b <= TARGET else 'no'}/{'yes' if ratio_one <= TARGET else 'no'}")


if __name__ == "__main__":
    main()
