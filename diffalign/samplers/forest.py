"""A forest: many independent one-prompt searches that share every model call (design.md §3b).

A tree has only a dozen rows ready for each model call, and a network's cost per row at 16 rows is
several times its cost at 256 on a CPU (and far more on a GPU). Independent trees -- one per prompt,
or several per prompt (``trees_per_prompt``) -- can share calls without sharing anything else.

:func:`run_forest` runs each tree's unchanged one-tree code in a thread of its own, against a
:class:`SharedCallModel` proxy, one tree at a time: a tree runs until its next model call (or its end)
and hands a baton to the next tree; when every live tree is waiting, the main thread runs all waiting
rows as one network call (``max_rows`` at most; a larger set is cut into several calls, a request's
rows across two if need be), and each tree gets back exactly its rows. A tree that asks for a model
call and a kernel step together (:meth:`~diffalign.models.Denoiser.denoise_step`, what the tree
samplers do) gets its next states back, and the step runs once on all such rows of the call (one
call per distinct kernel), not once per tree: a step is a few dozen small tensor operations whose
cost hardly depends on the rows. Nothing else is shared: each
tree has its own sampler state, generator, NFE budget and reward binding, so its selection, values,
budget and outputs are those it has alone, whenever the network's output for a row does not depend on
its batch mates (the prompt benchmark found the embedded UNet bit-identical across batch compositions;
tests check it on exact oracles; the kernel step is elementwise, so a row's next state does not
depend on its batch mates either).

The trees' Python work runs one tree at a time, so the Python cost per NFE is that of one tree alone,
whatever the number of trees, plus one thread hand-over per tree and call; the network call and the
kernel step, the parts that grow with rows, run once for all of them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..kernels import _times_like
from ..models.conditioning import broadcast_condition, cat_conditions, condition_batch_size
from ..models.denoiser import Denoiser, _time_batch
from ..models.prediction import Prediction
from ..models.wrappers import DenoiserWrapper

__all__ = ["DEFAULT_MAX_ROWS", "SharedCallModel", "run_forest"]

#: rows (samples) per shared network call by default: where the embedded networks are cheapest per row on
#: this project's CPU. Measured on 1 thread (benchmarks/model_speed.py --batch-size 128 256 384 512 1024,
#: results/model_speed-per-row*.md): digits costs 295-318 us per row at 128 rows, 266-268 at 256, 258-271
#: at 384, 275-289 at 512 and 343-361 at 1,024; shapes 1,539 / 1,553 / 1,615 / 1,546 / 1,816 us. 256 is
#: cheapest or within 3% of it (noise between runs) for both, and 1,024 rows cost 25-30% more per row.
#: Under CFG the network sees twice the rows (512 for 256 samples), still on the flat part for shapes.
#: Raise it on a GPU, where 1,000+ rows still get cheaper per row.
DEFAULT_MAX_ROWS = 256


@dataclass
class _Request:
    x: torch.Tensor
    t: torch.Tensor
    cond: Any
    # a denoise_step request: the kernel, the next times (B,) and the noise; result is then x at t_next
    kernel: Any = None
    t_next: Optional[torch.Tensor] = None
    noise: Optional[torch.Tensor] = None
    result: Optional[Prediction | torch.Tensor] = None
    error: Optional[BaseException] = None


class _Coordinator:
    """Runs the trees one at a time by passing a baton, and their waiting rows as shared calls.

    Exactly one thread runs at any moment: a tree runs until its next model call (or its end), then
    hands the baton to the next tree of the round, and the last one hands it to the main thread, which
    runs every waiting row and starts the next round: one wake-up per tree and round, where a shared
    condition variable woke every waiting thread at every request, and the awake trees then passed the
    GIL back and forth at each small torch op (which releases it). The order of the trees in a round
    is fixed (the order of their requests), so the composition of every call is reproducible.
    """

    def __init__(self, model: Denoiser, max_rows: int, trees: int, threads: int = 1):
        self.model, self.max_rows, self.threads = model, max_rows, threads
        # tree i may run once turns[i] is released: a held plain lock, released by whichever thread hands
        # the baton over (a Lock, unlike an RLock or a Semaphore, is one C call each way)
        self.turns = [_held_lock() for _ in range(trees)]
        self.main_turn = _held_lock()
        self.ready = deque(range(trees))  # trees still to run in this round
        self.pending: list[tuple[int, _Request]] = []
        self.calls = 0
        self.rows = 0
        self.network_seconds = 0.0  # wall time in the shared calls
        self.network_cpu_seconds = 0.0  # and the CPU time of the main thread there (what is left is the trees')

    def start(self, tree: int) -> None:
        """A tree's thread waits for its first turn."""
        self.turns[tree].acquire()

    def request(self, tree: int, req: _Request) -> Prediction | torch.Tensor:
        self.pending.append((tree, req))
        self._pass_baton()
        self.turns[tree].acquire()
        if req.error is not None:
            raise req.error
        return req.result

    def finished(self) -> None:
        self._pass_baton()

    def _pass_baton(self) -> None:
        if self.ready:
            self.turns[self.ready.popleft()].release()
        else:
            self.main_turn.release()

    def serve(self) -> None:
        """Main thread: each round, let every live tree run to its next call, then run all their rows together."""
        while True:
            self._pass_baton()
            self.main_turn.acquire()
            if not self.pending:
                return
            batch, self.pending = self.pending, []
            requests = [req for _, req in batch]
            pieces: dict[int, list] = {id(r): [] for r in requests}
            for segments in _pack(requests, self.max_rows):
                self._run(segments, pieces)
            for req in requests:
                if req.error is None:
                    req.result = _assemble(req, pieces[id(req)], self.model.schedule)
            self.ready.extend(tree for tree, _ in batch)

    def _run(self, segments: list[tuple[_Request, slice]], pieces: dict) -> None:
        """One network call on the rows of ``segments`` (a request's rows, or a slice of them)."""
        try:
            start_time, start_cpu = time.perf_counter(), time.thread_time()
            x = torch.cat([r.x[rows] for r, rows in segments])
            t = torch.cat([r.t[rows] for r, rows in segments])
            conds = [_condition_rows(r, rows) for r, rows in segments]
            cond = None if conds[0] is None else cat_conditions(conds)
            torch.set_num_threads(self.threads)  # a tree thread set the process-wide (MKL) count to 1
            with torch.no_grad():
                pred = self.model.predict(x, t, cond)
            self.network_seconds += time.perf_counter() - start_time
            self.network_cpu_seconds += time.thread_time() - start_cpu
            self.calls += 1
            self.rows += x.shape[0]
            places, start = [], 0  # each segment's rows in the call
            for r, rows in segments:
                places.append(slice(start, start + rows.stop - rows.start))
                start = places[-1].stop
            stepped = _steps(pred, segments, places)
            for (r, rows), mine in zip(segments, places):
                if r.kernel is not None:
                    pieces[id(r)].append(stepped[id(r)])
                else:
                    pieces[id(r)].append((pred.x0[mine], pred.eps[mine], _rows(pred.alpha, mine), _rows(pred.sigma, mine)))
        except BaseException as error:  # every waiting tree sees the failure instead of hanging
            for r, _ in segments:
                r.error = error


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _condition_rows(req: _Request, rows: slice):
    cond = broadcast_condition(req.cond, req.x.shape[0])
    return None if cond is None else {key: value[rows] for key, value in cond.items()}


def _steps(pred: Prediction, segments: list[tuple[_Request, slice]], places: list[slice]) -> dict:
    """The next states of the denoise_step segments of one call: one kernel step per distinct kernel (and
    noise or none) over all its rows. Returns {id(request): its rows of the result}."""
    groups: dict = {}
    for (r, rows), mine in zip(segments, places):
        if r.kernel is not None:
            groups.setdefault((r.kernel, r.noise is None), []).append((r, rows, mine))
    stepped = {}
    for (kernel, noiseless), members in groups.items():
        whole = len(members) == len(segments)  # the usual case: every row of the call steps with one kernel
        part = pred if whole else _prediction_rows(pred, [mine for _, _, mine in members])
        t_next = torch.cat([r.t_next[rows] for r, rows, _ in members])
        noise = None if noiseless else torch.cat([r.noise[rows] for r, rows, _ in members])
        x_next = kernel.step(part, t_next, noise)
        start = 0
        for r, rows, _ in members:
            size = rows.stop - rows.start
            stepped[id(r)] = x_next[start:start + size]
            start += size
    return stepped


def _prediction_rows(pred: Prediction, places: list[slice]) -> Prediction:
    """The rows ``places`` of a prediction, as one prediction."""
    def take(value):
        return torch.cat([value[mine] for mine in places]) if _per_row(value) else value

    return Prediction(take(pred.x), take(pred.t), take(pred.x0), take(pred.eps), pred.schedule, take(pred.alpha),
                      take(pred.sigma))


def _assemble(req: _Request, pieces: list, schedule) -> Prediction | torch.Tensor:
    """A request's prediction (or, for a denoise_step, its next states) from the slices of one or more calls
    (exact: rows never mix)."""
    if req.kernel is not None:
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if len(pieces) == 1:
        x0, eps, alpha, sigma = pieces[0]
    else:
        x0, eps = torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
        alpha = None if pieces[0][2] is None else torch.cat([p[2] for p in pieces])
        sigma = None if pieces[0][3] is None else torch.cat([p[3] for p in pieces])
    return Prediction(req.x, req.t, x0, eps, schedule, alpha, sigma)


def _rows(coefficient: Optional[torch.Tensor], rows: slice):
    return coefficient[rows] if _per_row(coefficient) else coefficient


def _per_row(value: Optional[torch.Tensor]) -> bool:
    """Whether a prediction field has a row per sample (a coefficient may be one value for the batch)."""
    return value is not None and value.ndim > 0 and value.shape[0] != 1


def _pack(batch: list[_Request], max_rows: int) -> list[list[tuple[_Request, slice]]]:
    """The waiting rows, request by request, into calls of at most ``max_rows`` rows (a request is cut
    between calls when it must be)."""
    calls, current, filled = [], [], 0
    for req in batch:
        start, total = 0, req.x.shape[0]
        while start < total:
            size = min(total - start, max_rows - filled)
            current.append((req, slice(start, start + size)))
            filled += size
            start += size
            if filled == max_rows:
                calls.append(current)
                current, filled = [], 0
    if current:
        calls.append(current)
    return calls


class SharedCallModel(DenoiserWrapper):
    """What one tree of a forest sees as its model: every call joins the forest's next shared call."""

    def __init__(self, inner: Denoiser, coordinator: _Coordinator, tree: int):
        super().__init__(inner)
        self._coordinator, self._tree = coordinator, tree

    def predict(self, x, t, cond=None) -> Prediction:
        return self._coordinator.request(self._tree, self._request(x, t, cond))

    def denoise_step(self, x, t, cond, kernel, t_next, noise) -> torch.Tensor:
        """x at ``t_next``, with the kernel step run once for the rows of every tree in the shared call."""
        req = self._request(x, t, cond)
        # the next times as Kernel.step reads them (float64: a Python float must not pass through float32)
        req.kernel, req.t_next, req.noise = kernel, _times_like(t_next, req.t), noise
        return self._coordinator.request(self._tree, req)

    @staticmethod
    def _request(x, t, cond) -> _Request:
        if cond is not None and condition_batch_size(cond) not in (None, 1, x.shape[0]):
            raise ValueError(f"conditioning has batch {condition_batch_size(cond)} but x has {x.shape[0]}")
        return _Request(x, _time_batch(t, x), cond)


def run_forest(model: Denoiser, jobs: list[Callable[[Denoiser], Any]], max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list, dict]:
    """Run ``jobs`` (each a one-tree search taking its model) concurrently over shared model calls.

    Returns each job's result, in order, and ``{"calls": ..., "rows_per_call": ...}``. A job's error is
    raised here (the first one, once every job has stopped).
    """
    coordinator = _Coordinator(model, max_rows, len(jobs), torch.get_num_threads())
    results: list = [None] * len(jobs)
    errors: list = [None] * len(jobs)

    def work(i: int) -> None:
        # The trees' own torch ops are small: run them on this thread alone. A tree thread that ran a parallel
        # op would hold an OpenMP team of its own, and 16 such teams slowed the main thread's network calls
        # (best-of-n in the main thread beside 16 blocked threads that had each run one conv: 1.3x the wall
        # time at 2 threads). torch's thread count is per thread under OpenMP; the main thread restores its
        # own before each shared call (the MKL setting is process-wide).
        torch.set_num_threads(1)
        coordinator.start(i)
        try:
            with torch.no_grad():  # grad mode is per thread
                results[i] = jobs[i](SharedCallModel(model, coordinator, i))
        except BaseException as error:
            errors[i] = error
        finally:
            coordinator.finished()

    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"diffalign-tree-{i}") for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    coordinator.serve()
    for thread in threads:
        thread.join()
    torch.set_num_threads(coordinator.threads)  # the process-wide count, as the caller had it
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    stats = {"calls": coordinator.calls, "rows_per_call": coordinator.rows / max(1, coordinator.calls),
             "network_seconds": coordinator.network_seconds, "network_cpu_seconds": coordinator.network_cpu_seconds}
    return results, stats
