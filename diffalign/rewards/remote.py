"""The ``remote`` reward: a reward served by ``diffalign serve-reward`` (:mod:`.server`), over HTTP.

``da.rewards.get("remote", url="http://127.0.0.1:8123")`` is a :class:`~.base.Reward` whose
scores are those of the served reward, bit for bit: images travel losslessly in their own float
dtype (:mod:`.wire`), and the server scores them in the batches the client sends (``batch_size``,
capped by the server's ``max_batch``), so local and remote scoring see the same tensors in the same
batches. ``name`` and ``needs_prompts`` are taken from the server's ``/info``. Remote scores carry
no gradient, so ``differentiable`` is False whatever the served reward is.

Failure is loud and bounded: a connection refused, a timeout (``timeout`` seconds per operation),
a 5xx or a response that is not ``(B,)`` scores is retried ``retries`` times with a short backoff,
then raises :class:`RemoteRewardError`, one line naming the URL and the failure. 4xx answers (bad
token, a batch over the server's limits, a reward refusing its input) are not retried. Nothing is
ever turned into zeros.

:meth:`RemoteReward.score_async` scores in a background thread and returns a
``concurrent.futures.Future``, so a trainer can score batch k on the server while it rolls out
batch k + 1 (:mod:`.async_scoring`).
"""

from __future__ import annotations

import socket
import time
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
        try:
            import httpx
        except ImportError as err:
            raise DiffalignError(f"the remote reward needs httpx (pip install 'diffalign[server]'): {err}") from None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DiffalignError(f"remote reward url must start with http:// or https://; got {url!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise DiffalignError(f"remote reward batch_size must be a positive integer; got {batch_size!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise DiffalignError(f"remote reward timeout must be a positive number of seconds; got {timeout!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise DiffalignError(f"remote reward retries must be a non-negative integer; got {retries!r}")
        self.url = url.rstrip("/")
        self.retries = retries
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # one pooled client: keep-alive connections make a request cost one round trip; thread-safe
        # TCP_NODELAY: the headers and the body go out as two writes; with Nagle's algorithm the body waits
        # for the ACK of the headers, which the server delays (~40 ms per request on Linux loopback)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(float(timeout)),
                                    transport=transport)
        info = self._request("GET", "/info", None, "the server's /info")
        try:
            info = info.json()
            self.name = str(info["name"])
            self.needs_prompts = bool(info["needs_prompts"])
            self.served_differentiable = bool(info["differentiable"])
            self.batch_size = min(batch_size, int(info["max_batch"]))
        except (ValueError, KeyError, TypeError):
            raise RemoteRewardError(f"remote reward at {self.url}: /info is not a diffalign reward server's answer "
                                    f"(got {info.text[:80]!r})") from None
        self._async: Optional[AsyncScorer] = None

    def _request(self, method: str, path: str, body: Optional[bytes], what: str):
        attempts = self.retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(0.1 * 2 ** (attempt - 1), 2.0))
            try:
                response = self._client.request(
                    method, path, content=body, headers={"Content-Type": CONTENT_TYPE} if body is not None else None)
            except self._httpx.TimeoutException as err:
                failure = f"timed out ({type(err).__name__}, timeout {self._client.timeout.read:g} s)"
                continue
            except self._httpx.TransportError as err:
                failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'connection failed'}"
                continue
            if response.status_code >= 500:
                failure = f"HTTP {response.status_code}: {_detail(response)}"
                continue
            if response.status_code >= 400:
                raise RemoteRewardError(f"remote reward at {self.url} refused {what}: HTTP {response.status_code}: "
                                        f"{_detail(response)}")
            return response
        raise RemoteRewardError(f"remote reward at {self.url}: {what} failed after {attempts} attempt"
                                f"{'s' if attempts > 1 else ''}: {failure}")

    def _score_chunk(self, images: torch.Tensor, prompts, metadata) -> torch.Tensor:
        body = encode_images(images, prompts, metadata)
        batch = images.shape[0]
        failure = ""
        for attempt in range(self.retries + 1):  # a garbled answer is retried like a dropped one
            response = self._request("POST", "/score", body, f"a batch of {batch} images")
            try:
                return decode_scores(response.content, batch)
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

    def close(self) -> None:
        if self._async is not None:
            self._async.shutdown()
        self._client.close()

    def extra_repr(self) -> str:
        return f"url={self.url!r}, name={self.name!r}, batch_size={self.batch_size}"


def _detail(response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail is not None else response.text
    return (text.strip().splitlines() or [""])[0][:300]
