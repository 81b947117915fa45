"""Failure behaviour of a multi-process job: a stalled or dead process ends the job within a bounded time,
naming its rank, and the launcher's death leaves no orphan workers.

* **Collective timeout** (``train.collective_timeout_s``): every collective (gloo or NCCL) of the process
  group gives up after this many seconds instead of accelerate's and gloo's 1,800 s. A process that stops
  answering (SIGSTOP, a hang in a reward call, a dead host) therefore makes the others fail after at most
  that long, and torchrun then ends the rest of the job.
* **Naming the rank**: each process runs a daemon thread (:class:`ProcessWatch`) that publishes a
  heartbeat through the process group's key-value store once a second: a counter, the training step, and
  whether its main thread is at that moment inside ``torch.distributed`` (waiting in a collective). When a
  collective fails, the process reads the others' heartbeats twice, :data:`SETTLE_S` apart: a rank whose
  counter did not move is stopped or dead; a rank that beats but is not inside a collective is stuck
  elsewhere. Those are the ranks the one-line error names. Counters, not clocks, so skewed clocks on
  several machines do not matter.
* **Orphans**: under a launcher (torchrun, ``accelerate launch``; both set ``TORCHELASTIC_RUN_ID``) the
  launcher is the worker's parent. The same thread checks ``os.getppid()``; when the launcher is gone
  (SIGKILL leaves it no chance to stop its workers) the worker prints one line, raises SIGTERM in itself
  (the CLI unwinds as on Ctrl-C: the run lock is released) and, if that has not ended it within
  :data:`GRACE_S` (its main thread blocked in a collective), leaves with ``os._exit(1)``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Callable, Optional

#: seconds between heartbeats (and launcher checks)
INTERVAL_S = 1.0
#: seconds between the two heartbeat reads that tell a stopped process from a live one
SETTLE_S = 3.0
#: seconds a worker whose launcher died is given to unwind after SIGTERM before it is ended outright
GRACE_S = 10.0
_KEY = "diffalign/heartbeat/{}"
_DISTRIBUTED_DIR = f"{os.sep}torch{os.sep}distributed{os.sep}"


def process_group_timeout(seconds: float) -> timedelta:
    """The ``timeout`` of ``torch.distributed.init_process_group``: every collective's bound."""
    return timedelta(seconds=float(seconds))


def launched_by_elastic_agent() -> bool:
    """True under torchrun or ``accelerate launch`` (multi-process): the launcher is this process's parent."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def failure_line(rank: int, timeout_s: float, culprits: dict[int, str], cause: str) -> str:
    """The one line a process prints when a collective fails, naming the ranks to blame."""
    if culprits:
        named = "; ".join(f"rank {r} {why}" for r, why in sorted(culprits.items()))
        return (f"rank {rank}: a collective failed or waited more than train.collective_timeout_s={timeout_s:g} s "
                f"({named}); this process exits, and the launcher ends the others")
    return (f"rank {rank}: a collective failed ({cause}); every other process was alive and waiting in a collective "
            "too; this process exits, and the launcher ends the others")


class ProcessWatch:
    """The heartbeat and launcher watch of one process (see the module docstring)."""

    def __init__(self, rank: int, world_size: int, store, timeout_s: float, step: Callable[[], int],
                 launcher_pid: Optional[int] = None):
        self.rank, self.world_size, self.store, self.timeout_s = rank, world_size, store, timeout_s
        self.step = step
        self.launcher_pid = launcher_pid
        self.beats = 0
        self.main_ident = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="diffalign-process-watch", daemon=True)

    @classmethod
    def start_for(cls, accelerator, timeout_s: float, step: Callable[[], int]) -> Optional["ProcessWatch"]:
        """Start the watch in a multi-process job (None for one process)."""
        if accelerator.num_processes == 1:
            return None
        import torch.distributed as dist

        store = dist.distributed_c10d._get_default_store()
        watch = cls(accelerator.process_index, accelerator.num_processes, store, timeout_s, step,
                    launcher_pid=os.getppid() if launched_by_elastic_agent() else None)
        watch._beat()  # the first heartbeat before training, so a rank that never beats again is seen as stopped
        watch._thread.start()
        return watch

    def stop(self) -> None:
        self._stop.set()

    def running(self) -> "ProcessWatch":
        """This watch, or a fresh one for the same process and launcher once this one was stopped (a trainer
        whose ``train`` is called again)."""
        if not self._stop.is_set():
            return self
        fresh = type(self)(self.rank, self.world_size, self.store, self.timeout_s, self.step, self.launcher_pid)
        fresh.beats = self.beats  # the counter only grows: the others compare it across reads
        fresh._thread.start()
        return fresh

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            if self.launcher_pid is not None and os.getppid() != self.launcher_pid:
                self._leave_orphaned()
                return
            try:
                self._beat()
            except Exception:  # the store went away (the job is ending); the collectives will say why
                return

    def main_thread_in_collective(self) -> bool:
        """Whether the main thread is, right now, inside ``torch.distributed`` (a collective or FSDP's
        gathers): what a live process waiting on a stalled one looks like."""
        frame = sys._current_frames().get(self.main_ident)
        while frame is not None:
            if _DISTRIBUTED_DIR in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def _beat(self) -> None:
        self.beats += 1
        self.store.set(_KEY.format(self.rank), json.dumps({"beats": self.beats, "step": int(self.step()),
                                                          "in_collective": self.main_thread_in_collective()}))

    def _leave_orphaned(self) -> None:
        print(f"diffalign: error: rank {self.rank}: the launcher (pid {self.launcher_pid}) is gone; this worker exits "
              "instead of running on as an orphan", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_S)
        os._exit(1)

    # -- after a failed collective -------------------------------------------------------------
    def heartbeats(self) -> dict[int, dict]:
        """Every other rank's last heartbeat (absent: never beat, or the store is unreachable)."""
        found = {}
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            key = _KEY.format(rank)
            try:
                if self.store.check([key]):
                    found[rank] = json.loads(self.store.get(key))
            except Exception:
                break
        return found

    def culprits(self) -> dict[int, str]:
        """The ranks that stopped (heartbeat counter still after :data:`SETTLE_S`) or that beat but are not
        in a collective, each with why; empty when every other process is alive and waiting."""
        self.stop()
        try:
            self.store.set_timeout(timedelta(seconds=5))  # a store hosted by a stopped process must not hang us
        except Exception:
            pass
        first = self.heartbeats()
        time.sleep(SETTLE_S)
        second = self.heartbeats()
        found = {}
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            before, after = first.get(rank), second.get(rank)
            if after is None:
                found[rank] = "sent no heartbeat (never started, or the store is unreachable)"
            elif before is not None and after["beats"] == before["beats"]:
                found[rank] = f"stopped or died (no heartbeat for {SETTLE_S:g} s, last at step {after['step']})"
            elif not after["in_collective"]:
                found[rank] = f"is alive but not in the collective (stuck elsewhere at step {after['step']})"
        return found

    def failure_line(self, err: BaseException) -> str:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return failure_line(self.rank, self.timeout_s, self.culprits(), cause)


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed or timed-out collective: torch's ``DistError`` family, or a RuntimeError
    raised inside ``torch.distributed`` (gloo reports a timeout or a lost peer that way; FSDP's gathers run
    there too). A RuntimeError of the method's own code (a reward call that timed out) is not one."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    if not isinstance(err, RuntimeError):
        return False
    frame = err.__traceback__
    while frame is not None:
        if _DISTRIBUTED_DIR in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False
