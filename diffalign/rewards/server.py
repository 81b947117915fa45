"""``diffalign serve-reward``: any registered reward behind an HTTP endpoint (FastAPI on uvicorn).

Why a server: rewards with conflicting dependencies (an ImageReward or VLM judge pinned to another
transformers), or on another GPU or machine, plug into sampling and training as
``da.rewards.get("remote", url=...)`` (:mod:`.remote`). The protocol (:mod:`.wire`):

- ``GET /info`` -> JSON: the reward's ``name``, ``needs_prompts``, ``differentiable``, its
  ``default_prompt`` when it has one, and the server's ``max_batch`` / ``max_bytes`` limits;
- ``POST /score`` with a safetensors body (``images`` in their own float dtype, prompts and metadata
  as JSON in the header) -> a safetensors body with ``scores`` (B,).

Errors are JSON ``{"detail": "..."}`` with 400 (malformed body), 401 (missing or wrong token),
413 (body over ``max_bytes``), 422 (the reward refused the input, e.g. prompts missing) or 500.
Requests score one at a time (a lock: rewards cache prompt embeddings and share one device), so
concurrent clients queue rather than race; small requests are scored on the event loop, large ones
in a worker thread (see ``INLINE_MAX_BYTES``). With ``token``, every request must
carry ``Authorization: Bearer <token>``; serving on a non-loopback address without a token is
refused unless forced, since anyone who can reach the port could then use the GPU.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at runtime

import hmac
import socket
import sys
import threading
from typing import Optional

import torch

from ..cli_validation import is_loopback
from ..errors import DiffalignError
from .wire import CONTENT_TYPE, WireError, decode_images, encode_scores

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BYTES", "build_app", "open_socket", "serve"]

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: 64 RGB 1024x1024 float32 images are 805 MB
# Requests up to this size are scored on the event loop itself. Handing a request to a worker thread
# costs two thread wake-ups, 0.5-1 ms on a loaded 2-core machine (benchmarks/reward_server.py: the
# server overhead on a 3-5 ms reward went from 0.9-1.7 ms to 0.1-0.4 ms without it). Scoring is
# serialised by a lock anyway, so the loop loses nothing but the chance to read the next request's
# body meanwhile -- which matters for large bodies (uploads of big images over a real network), so
# those still go to a worker thread and overlap with the scoring of the previous request.
INLINE_MAX_BYTES = 1 << 20


def build_app(reward, *, token: Optional[str] = None, max_batch: int = DEFAULT_MAX_BATCH,
              max_bytes: int = DEFAULT_MAX_BYTES):
    """The FastAPI application serving ``reward`` (a :class:`~.base.Reward`)."""
    try:
        import fastapi  # noqa: F401
    except ImportError as err:
        raise DiffalignError(f"the reward server needs fastapi and uvicorn (pip install 'diffalign[server]'): {err}") from None
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title=f"diffalign reward server: {reward.name}", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    expected = f"Bearer {token}".encode() if token else None
    device = next((p.device for p in reward.parameters()), None) or next(
        (b.device for b in reward.buffers()), torch.device("cpu"))
    info = {"name": reward.name, "needs_prompts": bool(reward.needs_prompts),
            "differentiable": bool(reward.differentiable), "max_batch": int(max_batch), "max_bytes": int(max_bytes),
            "protocol": 1}
    defaults = reward.default_prompts(1) if reward.needs_prompts else None
    if defaults:  # e.g. clip --option prompt=...: clients may then call without prompts, as locally
        info["default_prompt"] = defaults[0]

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: no guessing the token byte by byte
            raise HTTPException(401, "missing or wrong token (send Authorization: Bearer <token>)")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(413, f"request of {int(declared)} bytes is over this server's limit of {max_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"request is over this server's limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def score(body: bytes) -> bytes:
        try:
            images, prompts, metadata = decode_images(body, max_batch)
        except WireError as err:
            raise HTTPException(400, str(err)) from None
        with lock, torch.no_grad():
            try:
                scores = reward(images.to(device), prompts=prompts, metadata=metadata)
            except DiffalignError as err:
                raise HTTPException(422, str(err)) from None
        return encode_scores(scores)

    @app.get("/info")
    async def get_info(request: Request):
        authorize(request)
        return info

    @app.post("/score")
    async def post_score(request: Request):
        authorize(request)
        body = await read_body(request)
        if len(body) <= INLINE_MAX_BYTES:
            return Response(content=score(body), media_type=CONTENT_TYPE)
        return Response(content=await run_in_threadpool(score, body), media_type=CONTENT_TYPE)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):  # one line, never a traceback page
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return JSONResponse({"detail": f"{type(err).__name__}: {message}"}, status_code=500)

    return app


def open_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free port), so a busy port is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # inherited by accepted connections: a response's headers and body are separate writes, and with
    # Nagle's algorithm the body would wait for the client's delayed ACK (~40 ms per request)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise DiffalignError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(reward, *, host: str = "127.0.0.1", port: int = 8123, token: Optional[str] = None,
          max_batch: int = DEFAULT_MAX_BATCH, max_bytes: int = DEFAULT_MAX_BYTES, force: bool = False) -> None:
    """Serve ``reward`` until interrupted; prints one line with the URL once listening."""
    try:
        import uvicorn
    except ImportError as err:
        raise DiffalignError(f"the reward server needs fastapi and uvicorn (pip install 'diffalign[server]'): {err}") from None

    if not is_loopback(host) and not token and not force:
        raise DiffalignError(f"refusing to serve on non-loopback host {host!r} without a token; pass token=..., "
                             "or force=True to serve without one")
    if max_batch < 1 or max_bytes < 1:
        raise DiffalignError(f"max_batch and max_bytes must be positive; got {max_batch} and {max_bytes}")
    sock = open_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    app = build_app(reward, token=token, max_batch=max_batch, max_bytes=max_bytes)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30)
    print(f"diffalign: serving reward {reward.name!r} at http://{shown}:{bound} "
          f"(max batch {max_batch}{', token required' if token else ''})", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
