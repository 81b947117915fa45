"""``diffalign serve-reward`` as a real subprocess on a free loopback port, and the ``remote`` reward.

Two servers per module: the ``digit`` reward behind a token, and a slow prompt-aware reward
(``sleepy_reward.py``, loaded with ``--import``) for prompts, timeouts, asynchronous scoring and a
kill mid-request. Port 0 lets the server pick a free port; it prints the URL once listening.
"""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from diffalign.cli import main
from diffalign.rewards import RemoteRewardError, get
from diffalign.rewards.wire import encode_images

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
SLEEPY = "sleepy_reward"
DELAY = 0.5  # seconds the sleepy reward sleeps per call (passed to the server as SLEEPY_REWARD_DELAY)


def _start(*args):
    # the server scores with as many torch threads as this process: a CPU convolution's result depends on
    # the thread count in its last bits, and the tests compare scores bit for bit
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), HF_HUB_OFFLINE="1", SLEEPY_REWARD_DELAY=str(DELAY),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "rewards")]))
    env.pop("DIFFALIGN_REWARD_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "diffalign", "serve-reward", *args, "--port", "0", "--device", "cpu"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the server listens, or the process dies (EOF)
    if "serving reward" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.split(" at ")[1].split()[0]


def _post(url, body, headers):
    """(status, detail) of a raw POST /score: for requests the remote reward would never send."""
    import http.client
    import json
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/score", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())["detail"]
    finally:
        conn.close()


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def digit_server():
    proc, url = _start("digit", "--option", "target=3", "--token", TOKEN, "--max-batch", "128", "--max-mb", "1")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def sleepy_server():
    proc, url = _start("sleepy", "--import", SLEEPY, "--option", "prompt=hello")
    yield proc, url
    _stop(proc)


def test_scores_are_bit_identical_to_local(digit_server):
    remote = get("remote", url=digit_server, token=TOKEN, batch_size=64)
    local = get("digit", target=3)
    assert remote.name == "digit" and not remote.needs_prompts and not remote.differentiable
    torch.manual_seed(0)
    images = torch.rand(100, 1, 8, 8)
    scores = remote(images)
    assert scores.shape == (100,) and scores.dtype == torch.float32
    # the client sends batches of 64: local scoring of the same batches gives the same bits
    assert torch.equal(scores, torch.cat([local(images[:64]), local(images[64:])]))
    doubles = images.to(torch.float64)  # any float dtype travels as is
    assert torch.equal(remote(doubles), torch.cat([local(doubles[:64]), local(doubles[64:])]))


def test_eight_concurrent_clients_lose_nothing(digit_server):
    local = get("digit", target=3)
    batches = [torch.rand(37 + i, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(8)]

    def client(i):
        remote = get("remote", url=digit_server, token=TOKEN, batch_size=16)
        return [remote(batches[i]) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    for i, runs in enumerate(results):
        expected = torch.cat([local(chunk) for chunk in batches[i].split(16)])
        for scores in runs:
            assert torch.equal(scores, expected)


def test_copies_and_pickles_open_their_own_connections(digit_server):
    import copy
    import pickle

    remote = get("remote", url=digit_server, token=TOKEN)
    images = torch.rand(4, 1, 8, 8)
    expected = remote(images)
    remote.score_async(images).result(timeout=30)  # a worker thread and a connection exist now
    for clone in (copy.deepcopy(remote), pickle.loads(pickle.dumps(remote))):
        assert torch.equal(clone(images), expected)
        assert torch.equal(clone.score_async(images).result(timeout=30), expected)


def test_token_is_required_and_checked(digit_server):
    for token in (None, "wrong"):
        with pytest.raises(RemoteRewardError) as info:
            get("remote", url=digit_server, token=token)
        message = str(info.value)
        assert "\n" not in message and digit_server in message and "HTTP 401" in message and "token" in message


def test_oversized_and_malformed_requests_are_refused(digit_server):
    remote = get("remote", url=digit_server, token=TOKEN, retries=0)
    assert remote.batch_size == 64  # min(asked 64, the server's --max-batch 128)
    with pytest.raises(RemoteRewardError, match=r"HTTP 413: request of \d+ bytes is over this server's limit"):
        remote(torch.rand(8, 3, 128, 128))  # 1.5 MiB > --max-mb 1
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"}
    status, detail = _post(digit_server, encode_images(torch.rand(129, 1, 8, 8), None, None), headers)
    assert status == 400 and "over this server's limit of 128" in detail
    for body, expected in [(b"garbage", "not a safetensors file"),
                           (encode_images(torch.rand(2, 8, 8, 1)[..., 0], None, None), "4 positive dimensions")]:
        status, detail = _post(digit_server, body, headers)
        assert status == 400 and expected in detail
    status, detail = _post(digit_server, _int_images(), headers)
    assert status == 400 and "must be float16, bfloat16, float32 or float64" in detail
    with pytest.raises(RemoteRewardError, match=r"HTTP 422: digit reward expects images of shape \(B, 1, 8, 8\)"):
        remote(torch.rand(2, 3, 8, 8))  # the reward's own check, passed through


def _int_images():
    from safetensors.torch import save

    return save({"images": torch.zeros(2, 1, 8, 8, dtype=torch.int32)})


def test_prompts_reach_the_server_and_needs_prompts_comes_from_it(sleepy_server):
    _, url = sleepy_server
    remote = get("remote", url=url)
    assert remote.name == "sleepy" and remote.needs_prompts
    images = torch.rand(3, 3, 4, 4)
    scores = remote(images, prompts=["a", "bbb", "cc"])
    torch.testing.assert_close(scores, images.mean(dim=(1, 2, 3)) + torch.tensor([1.0, 3.0, 2.0]))
    big = torch.rand(2, 3, 256, 256)  # 1.5 MiB: over the server's INLINE_MAX_BYTES, scored in a worker thread
    torch.testing.assert_close(remote(big, prompts=["a", "bb"]), big.mean(dim=(1, 2, 3)) + torch.tensor([1.0, 2.0]))
    # the served reward's default prompt (its prompt= option) applies to prompt-free calls, as locally
    assert remote.default_prompt == "hello"
    torch.testing.assert_close(remote(images), images.mean(dim=(1, 2, 3)) + 5.0)


def test_slow_server_times_out_in_bounded_time(sleepy_server):
    _, url = sleepy_server
    remote = get("remote", url=url, timeout=0.1, retries=1)
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError) as info:
        remote(torch.rand(1, 3, 4, 4), prompts=["x"])
    message = str(info.value)
    assert "\n" not in message and url in message and "timed out" in message and "after 2 attempts" in message
    assert time.perf_counter() - start < 5


def test_async_scoring_overlaps_with_rollouts(sleepy_server):
    """Four batches: each 'rollout' (DELAY of work here) overlaps the previous batch's scoring (DELAY there)."""
    _, url = sleepy_server
    remote = get("remote", url=url)
    images = torch.rand(2, 3, 4, 4)
    remote(images, prompts=["warm", "up"])
    start = time.perf_counter()
    futures = []
    for k in range(4):
        time.sleep(DELAY)  # the next rollout, while the server scores the previous batch
        futures.append(remote.score_async(images + k, prompts=["p", "q"]))
    scores = [f.result(timeout=30) for f in futures]
    elapsed = time.perf_counter() - start
    sequential = 8 * DELAY  # 4 rollouts + 4 scorings, one after the other
    assert elapsed < sequential - 1.5 * DELAY, elapsed  # overlapped: ~5 * DELAY (+ HTTP)
    for k, s in enumerate(scores):
        torch.testing.assert_close(s, (images + k).mean(dim=(1, 2, 3)) + 1.0)


def test_server_down_gives_one_line_after_retries():
    with socket_free_port() as port:
        url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError) as info:
        get("remote", url=url, retries=2)
    message = str(info.value)
    assert "\n" not in message and url in message and "after 3 attempts" in message and "Connection refused" in message
    assert time.perf_counter() - start < 5


class socket_free_port:
    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def test_garbage_answers_are_an_error_not_zeros():
    """A server that answers 200 with bytes that are not scores: retried, then one line; never zeros."""
    calls = []

    class Garbage(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body, kind):
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(b'{"name": "digit", "needs_prompts": false, "differentiable": true, "max_batch": 64}',
                       "application/json")

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(1)
            self._send(b"\x00" * 64, "application/octet-stream")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = get("remote", url=url, retries=1)
        with pytest.raises(RemoteRewardError) as info:
            remote(torch.rand(2, 1, 8, 8))
        assert "\n" not in str(info.value) and url in str(info.value) and "no valid scores" in str(info.value)
        assert len(calls) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_kill_mid_request_gives_one_line(sleepy_server):
    """Runs last in this module: it kills the sleepy server while a request is in flight."""
    proc, url = sleepy_server
    remote = get("remote", url=url, retries=1, timeout=10)
    future = remote.score_async(torch.rand(2, 3, 4, 4), prompts=["a", "b"])
    time.sleep(0.15)  # the request is at the server, inside the reward's sleep
    proc.kill()
    proc.wait()
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError) as info:
        future.result(timeout=30)
    message = str(info.value)
    assert "\n" not in message and url in message and "after 2 attempts" in message
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("argv, expected", [
    (["serve-reward", "no-such"], "unknown reward 'no-such'; valid choices:"),
    (["serve-reward", "noisy-reward"], "reward 'noisy-reward' needs option(s): path"),
    (["serve-reward", "digit", "--option", "targte=3"], "unknown option(s) targte for reward 'digit'"),
    (["serve-reward", "digit", "--option", "target=3", "--host", "0.0.0.0"],
     "refusing to serve on non-loopback host '0.0.0.0' without --token"),
    (["serve-reward", "digit", "--option", "target=3", "--port", "70000"], "--port must be in 0..65535"),
    (["serve-reward", "digit", "--option", "target=3", "--max-batch", "0"], "--max-batch must be a positive"),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, monkeypatch, argv, expected):
    monkeypatch.delenv("DIFFALIGN_REWARD_TOKEN", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


def test_busy_port_is_one_line_exit_2(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve-reward", "digit", "--option", "target=3", "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err
