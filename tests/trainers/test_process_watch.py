"""Failure behaviour of a multi-process job (process_watch.py): a stalled worker ends the job within
train.collective_timeout_s with one line naming its rank, and killing the launcher leaves no orphans."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from diffalign.trainers import process_watch
from diffalign.trainers.process_watch import ProcessWatch

from .conftest import tiny_raw
from .test_sharding import _env

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the workers")


def _store():
    from torch.distributed import TCPStore

    return TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5))


def test_a_rank_whose_heartbeat_stops_or_that_is_not_in_a_collective_is_named(monkeypatch):
    """Two watches on one real TCPStore: rank 1 beats once and then stops (as under SIGSTOP); then it beats
    on outside any collective (as when it hangs in a reward call). Rank 0 names it both times."""
    monkeypatch.setattr(process_watch, "SETTLE_S", 0.3)
    store = _store()
    me, other = (ProcessWatch(r, 2, store, 7.0, lambda: 4) for r in (0, 1))
    other._beat()
    assert me.culprits() == {1: "stopped or died (no heartbeat for 0.3 s, last at step 4)"}
    import threading

    stop = threading.Event()

    def beat_on():
        while not stop.is_set():
            other._beat()  # called from this thread: the test's main thread is not inside torch.distributed
            time.sleep(0.05)

    beating = threading.Thread(target=beat_on)
    beating.start()
    try:
        culprits = me.culprits()
    finally:
        stop.set()
        beating.join()
    assert culprits == {1: "is alive but not in the collective (stuck elsewhere at step 4)"}
    line = me.failure_line(RuntimeError("Timed out waiting 7000ms for recv operation to complete"))
    assert line.startswith("rank 0: a collective failed or waited more than train.collective_timeout_s=7 s (rank 1 ")
    assert "\n" not in line


def test_a_stopped_watch_is_replaced_by_a_running_one_for_the_same_process():
    """A trainer trained twice (Trainer.train stops the watch when it returns) watches again the second time."""
    watch = ProcessWatch(0, 2, _store(), 7.0, lambda: 1, launcher_pid=os.getppid())
    watch._thread.start()
    assert watch.running() is watch
    watch.stop()
    watch._thread.join()
    again = watch.running()
    assert again is not watch and again._thread.is_alive() and again.launcher_pid == os.getppid()
    again.stop()


def test_a_collective_timeout_is_recognised_and_other_errors_are_not():
    import torch.distributed as dist

    from diffalign.errors import JobFailure

    # a real gloo failure: a one-process group of size 2 gives up waiting for its peer after the timeout
    try:
        dist.init_process_group("gloo", store=_store(), rank=0, world_size=2, timeout=timedelta(seconds=1))
    except Exception as err:
        raised = err
    assert process_watch.is_collective_failure(raised), repr(raised)
    # the same words from the method's own code (a reward call) are not a collective failure
    assert not process_watch.is_collective_failure(RuntimeError("Timed out waiting 3000ms for the reward server"))
    assert not process_watch.is_collective_failure(ValueError("timed out"))
    assert not process_watch.is_collective_failure(JobFailure("rank 0: ..."))


def test_collective_timeout_must_be_positive(tiny_config):
    from diffalign.errors import DiffalignError

    with pytest.raises(DiffalignError, match="train.collective_timeout_s"):
        tiny_config("rwr", train={"collective_timeout_s": 0}).validate()


def _workers(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher_pid:
            rank = [v for v in environ if v.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(entry.name)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its parent may be gone and nobody reaps it)


def _kill_survivors(workers: dict[int, int]) -> None:
    """SIGKILL whichever of the test's own workers still run (a failed test must not leave them training)."""
    for pid in workers.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _launch_long_run(tmp_path, **train):
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(tiny_raw("rwr", train={"max_steps": 100000, "checkpoint_every": 1, "keep_checkpoints": 1,
                                                            "report_to": "none", **train})))
    out = tmp_path / "run"
    # files, not pipes: the workers inherit them, and a pipe would stay open as long as any worker lives
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffalign",
                                     "train", str(config), "--output-dir", str(out)], env=_env(), stdout=stdout, stderr=stderr)
    deadline = time.time() + 240
    while not list((out / "checkpoints").glob("step-*")) and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert launcher.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
    workers = _workers(launcher.pid)
    assert sorted(workers) == [0, 1], workers
    return launcher, workers


@linux_only
@pytest.mark.slow
def test_a_stopped_worker_ends_the_job_within_the_collective_timeout_with_one_line_naming_it(tmp_path):
    timeout = 4
    launcher, workers = _launch_long_run(tmp_path, collective_timeout_s=timeout)
    os.kill(workers[1], signal.SIGSTOP)
    stopped = time.time()
    try:
        while _alive(workers[0]) and time.time() - stopped < 120:
            time.sleep(0.1)
        elapsed = time.time() - stopped
    finally:
        _kill_survivors(workers)  # rank 1: what torchrun does 30 s after rank 0 failed; sooner, to keep the test short
        launcher.wait(timeout=120)
    err = (tmp_path / "stderr").read_text()
    # the timeout, the heartbeat settling time, and the unwinding of a process; never accelerate's 1,800 s
    print(f"rank 0 exited {elapsed:.1f} s after rank 1 stopped")
    assert elapsed <= timeout + process_watch.SETTLE_S + 15, elapsed
    lines = [line for line in err.splitlines() if "diffalign:" in line]
    assert all(line.startswith("diffalign:") for line in lines), lines  # its own line, not after tqdm's bar
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"diffalign: error: rank 0: a collective failed or waited more than train.collective_timeout_s={timeout} s "
                               "(rank 1 stopped or died"), lines
    assert launcher.returncode != 0


@linux_only
@pytest.mark.slow
def test_killing_the_launcher_leaves_no_orphan_workers(tmp_path):
    launcher, workers = _launch_long_run(tmp_path)
    launcher.send_signal(signal.SIGKILL)  # torchrun gets no chance to stop its workers
    launcher.wait()
    killed = time.time()
    try:
        while any(_alive(pid) for pid in workers.values()) and time.time() - killed < 60:
            time.sleep(0.1)
        elapsed = time.time() - killed
        print(f"workers gone {elapsed:.1f} s after the launcher's SIGKILL")
        assert not any(_alive(pid) for pid in workers.values()), f"orphans after {elapsed:.0f} s: {workers}"
        assert elapsed <= process_watch.INTERVAL_S + process_watch.GRACE_S + 5
    finally:
        _kill_survivors(workers)
