"""The ``remote`` reward: a reward served by ``diffalign serve-reward`` (:mod:`.server`), over HTTP.

``da.rewards.get("remote", url="http://127.0.0.1:8123")`` is a :class:`~.base.Reward` whose
scores are those of the served reward, bit for bit: images travel losslessly in their own float
dtype (:mod:`.wire`), and the server scores them in the batches the client sends (``batch_size``,
capped by the server's ``max_batch``), so local and remote scoring see the same tensors in the same
batches. ``name`` and ``needs_prompts`` are taken from the server's ``/info``. Remote scores carry
no gradient, so ``differentiable`` is False whatever the served reward is.

The client is the standard library's ``http.client`` (one keep-alive connection per thread), so
the remote reward needs no extra package; the server needs the ``server`` extra.

Failure is loud and bounded: a connection refused, a timeout (``timeout`` seconds per socket operation),
a 5xx or a response that is not ``(B,)`` scores is retried ``retries`` times with a short backoff,
then raises :class:`RemoteRewardError`, one line naming the URL and the failure. 4xx answers (bad
token, a batch over the server's limits, a reward refusing its input) are not retried. Nothing is
ever turned into zeros.

:meth:`RemoteReward.score_async` scores in a background thread and returns a
``concurrent.futures.Future``, so a trainer can score batch k on the server while it rolls out
batch k + 1 (:mod:`.async_scoring`).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from concurrent.futures import Future
from typing import Any, Optional, Sequence

import torch

from ..errors import DiffalignError
from .async_scoring import AsyncScorer
from .base import Reward
from .registry import REWARDS
from .wire import CONTENT_TYPE, WireError, decode_scores, encode_images

__all__ = ["RemoteReward", "RemoteRewardError"]


class RemoteRewardError(DiffalignError):
    """The reward server could not be reached or gave no valid scores (after the allowed retries)."""


@REWARDS.register("remote")
class RemoteReward(Reward):
    """A reward scored by a ``diffalign serve-reward`` server.

    Options: ``url`` (e.g. ``http://127.0.0.1:8123``), ``token`` (sent as ``Authorization: Bearer``),
    ``batch_size`` (images per request, default 64; capped by the server's ``max_batch``),
    ``timeout`` (seconds per connect/read/write, default 60), ``retries`` (extra attempts after a
    transport failure, 5xx or garbage, default 2).
    """

    differentiable = False  # scores come back as numbers; no graph crosses the wire

    def __init__(self, *, url: str, token: Optional[str] = None, batch_size: int = 64, timeout: float = 60.0,
                 retries: int = 2):
        super().__init__()
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DiffalignError(f"remote reward url must start with http:// or https://; got {url!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise DiffalignError(f"remote reward batch_size must be a positive integer; got {batch_size!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise DiffalignError(f"remote reward timeout must be a positive number of seconds; got {timeout!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise DiffalignError(f"remote reward retries must be a non-negative integer; got {retries!r}")
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if not parts.hostname:
            raise DiffalignError(f"remote reward url has no host: {url!r}")
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._https else 80))
        self._prefix = parts.path.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        # one keep-alive connection per thread (http.client connections are not thread-safe), so a request
        # costs one round trip; the standard library client costs about half of what httpx costs per request
        self._local = threading.local()
        self._async: Optional[AsyncScorer] = None
        answer = self._request("GET", "/info", None, "the server's /info")
        try:
            info = json.loads(answer)
            self.name = str(info["name"])
            self.needs_prompts = bool(info["needs_prompts"])
            self.served_differentiable = bool(info["differentiable"])
            self.batch_size = min(batch_size, int(info["max_batch"]))
            self.default_prompt = info.get("default_prompt")
        except (ValueError, KeyError, TypeError):
            raise RemoteRewardError(f"remote reward at {self.url}: /info is not a diffalign reward server's answer "
                                    f"(got {answer[:80]!r})") from None

    def default_prompts(self, batch_size: int):
        """The served reward's default prompt (e.g. ``clip``'s ``prompt=``), so prompt-free calls work as locally."""
        return None if self.default_prompt is None else [self.default_prompt] * batch_size

    def info(self) -> dict:
        """The server's ``/info`` (reward name, needs_prompts, limits): also a cheap liveness check."""
        return json.loads(self._request("GET", "/info", None, "the server's /info"))

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = kind(*self._address, timeout=self.timeout)
            conn.connect()
            # the request goes out in one write, but the answer may not: no Nagle wait on either side
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _exchange(self, method: str, path: str, body: Optional[bytes]) -> tuple[int, bytes]:
        """One request on this thread's connection; a keep-alive connection the server closed meanwhile is
        reopened once, without counting as a failed attempt (the request never reached the server)."""
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
        for fresh in (False, True):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop_connection()
                if reused and not fresh:
                    continue
                raise
            except BaseException:
                self._drop_connection()
                raise
            if response.getheader("connection", "").lower() == "close":
                self._drop_connection()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, method: str, path: str, body: Optional[bytes], what: str) -> bytes:
        attempts = self.retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(0.1 * 2 ** (attempt - 1), 2.0))
            try:
                status, data = self._exchange(method, path, body)
            except (TimeoutError, socket.timeout):
                failure = f"timed out (timeout {self.timeout:g} s)"
                continue
            except (OSError, http.client.HTTPException) as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else "connection failed"
                failure = f"{type(err).__name__}: {reason}"
                continue
            if status >= 500:
                failure = f"HTTP {status}: {_detail(data)}"
                continue
            if status >= 400:
                raise RemoteRewardError(f"remote reward at {self.url} refused {what}: HTTP {status}: {_detail(data)}")
            return data
        raise RemoteRewardError(f"remote reward at {self.url}: {what} failed after {attempts} attempt"
                                f"{'s' if attempts > 1 else ''}: {failure}")

    def _score_chunk(self, images: torch.Tensor, prompts, metadata) -> torch.Tensor:
        body = encode_images(images, prompts, metadata)
        batch = images.shape[0]
        failure = ""
        for attempt in range(self.retries + 1):  # a garbled answer is retried like a dropped one
            answer = self._request("POST", "/score", body, f"a batch of {batch} images")
            try:
                return decode_scores(answer, batch)
            except WireError as err:
                failure = str(err)
        raise RemoteRewardError(f"remote reward at {self.url}: no valid scores after {self.retries + 1} attempt"
                                f"{'s' if self.retries else ''}: {failure}")

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        try:
            parts = []
            for start in range(0, images.shape[0], self.batch_size):
                stop = start + self.batch_size
                parts.append(self._score_chunk(images[start:stop], None if prompts is None else prompts[start:stop],
                                               None if metadata is None else metadata[start:stop]))
        except WireError as err:  # the request itself could not be encoded
            raise DiffalignError(f"remote reward at {self.url}: {err}") from None
        return torch.cat(parts).to(images.device)

    def score_async(self, images: torch.Tensor, prompts: Optional[Sequence[str]] = None,
                    metadata: Optional[Sequence[Any]] = None) -> Future:
        """Score in a background thread; ``.result()`` gives the (B,) scores or raises the one-line error."""
        if self._async is None:
            self._async = AsyncScorer(self)
        return self._async.submit(images, prompts, metadata)

    def __getstate__(self):
        # connections and the async worker belong to this process and its threads: a copy (deepcopy, pickle
        # into a worker process) opens its own on first use
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_local"], state["_async"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def close(self) -> None:
        """Stop the async worker and close this thread's connection (others close with their threads)."""
        if self._async is not None:
            self._async.shutdown()
        self._drop_connection()

    def extra_repr(self) -> str:
        return f"url={self.url!r}, name={self.name!r}, batch_size={self.batch_size}"


def _detail(data: bytes) -> str:
    """The server's one-line ``detail`` of an error answer, or the start of whatever it sent."""
    try:
        detail = json.loads(data).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail is not None else data[:300].decode("utf-8", "replace")
    return (text.strip().splitlines() or [""])[0][:300]
