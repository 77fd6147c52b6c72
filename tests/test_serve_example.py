"""examples/serve.py: a real HTTP service under concurrent load from a real client."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import torch

import gradguard
from gradguard import _state

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "serve.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LoopThread:
    """An event loop running in its own thread, as a server process's main loop would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.stop()


def features_for(i: int) -> list[float]:
    return [((i * 7 + k * 3) % 11 - 5) / 2.0 for k in range(4)]


async def hammer(port: int, predictions: int, statuses: int) -> tuple[list[Any], list[Any]]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:

        async def predict(i: int) -> Any:
            payload = {"features": features_for(i)}
            async with session.post(f"{base}/predict", data=json.dumps(payload)) as response:
                assert response.status == 200
                return await response.json()

        async def status() -> Any:
            async with session.get(f"{base}/status") as response:
                assert response.status == 200
                return await response.json()

        # One /status after every few predictions, so that they reach the server among them.
        every = max(1, predictions // statuses)
        requests = []
        for i in range(predictions):
            requests.append(predict(i))
            if i % every == every - 1 and len(requests) < predictions + statuses:
                requests.append(status())
        results = await asyncio.gather(*requests)
    answers = [r for r in results if "probabilities" in r]
    return answers, [r for r in results if "grad_enabled" in r]


def test_two_hundred_concurrent_requests_get_right_answers_and_leave_state_alone(
    loop_thread: LoopThread,
) -> None:
    """200 concurrent predictions are all right; the model and the loop thread end as they began."""
    serve = load_example()
    model = serve.build_model()
    flags_before = [m.training for m in model.modules()]
    assert flags_before == [True, True, False, True, True, True]

    server = loop_thread.run(serve.start_server(model, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    try:
        answers, statuses = asyncio.run(hammer(port, 200, 50))
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        loop_thread.run(close())

    with gradguard.evaluating(model):
        expected = model(torch.tensor([features_for(i) for i in range(200)])).softmax(dim=1)
    assert len(answers) == 200
    for i, answer in enumerate(answers):
        assert answer["probabilities"] == pytest.approx(expected[i].tolist(), abs=1e-5)
        assert answer["label"] == serve.LABELS[int(expected[i].argmax())]
    # /status runs on the same loop as the predictions; some ran while predictions were
    # suspended inside the decorated handler, and still saw gradients on and the own flags.
    assert len(statuses) == 50
    assert all(s["grad_enabled"] is True for s in statuses)
    assert all(s["training"] == flags_before for s in statuses)
    assert max(s["in_flight"] for s in statuses) > 0

    async def grad_mode_of_loop_thread() -> bool:
        return torch.is_grad_enabled()

    assert loop_thread.run(grad_mode_of_loop_thread()) is True
    assert [m.training for m in model.modules()] == flags_before
    assert _state.held_counts() == (0, 0)


def test_bad_requests_are_answered_with_errors(loop_thread: LoopThread) -> None:
    """A malformed body gets 400 and an unknown route 404, and the model is left as it was."""
    serve = load_example()
    model = serve.build_model()
    flags_before = [m.training for m in model.modules()]
    server = loop_thread.run(serve.start_server(model, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]

    async def ask() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            replies = []
            for method, path, data in [
                ("POST", "/predict", b"not json"),
                ("POST", "/predict", b'{"features": [1, 2]}'),
                ("GET", "/nowhere", None),
            ]:
                url = f"http://127.0.0.1:{port}{path}"
                async with session.request(method, url, data=data) as response:
                    replies.append((response.status, await response.json()))
            return replies

    try:
        replies = asyncio.run(ask())
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        loop_thread.run(close())
    assert [code for code, _ in replies] == [400, 400, 404]
    assert "expected a JSON body" in replies[0][1]["error"]
    assert "list of 4 numbers" in replies[1][1]["error"]
    assert [m.training for m in model.modules()] == flags_before


def test_script_serves_on_the_port_it_prints() -> None:
    """Run as a script, the example prints its address and answers a real HTTP request."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line
        url = line.split()[-1]
        request = urllib.request.Request(
            f"{url}/predict", data=b'{"features": [0.5, -1.0, 2.0, 0.0]}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert answer["label"] in ("low", "medium", "high")
        assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    finally:
        process.terminate()
        process.wait(30)
        assert process.stderr is not None
        process.stderr.close()
        process.stdout.close()
