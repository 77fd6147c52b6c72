"""A small HTTP inference service whose ``async def`` handler is decorated with ``@inference_fn``.

Standard library only (asyncio streams). Run it and ask it for a prediction::

    python examples/serve.py --port 8000
    curl -s -X POST http://127.0.0.1:8000/predict -d '{"features": [0.5, -1.0, 2.0, 0.0]}'
    curl -s http://127.0.0.1:8000/status

``POST /predict`` runs the model; ``GET /status`` reports, from an undecorated coroutine on the same
event loop, the grad mode and the model's training flags. Because ``@inference_fn`` holds eval mode
and ``no_grad`` only while the handler's body runs, ``/status`` always sees gradients on and the
model's own flags, even while many predictions are suspended at their ``await``.

The model here is deliberately left in training mode with a frozen BatchNorm, as a model shared
with a fine-tuning loop would be: each request still runs it in eval, and the flags come back
exactly (the BatchNorm stays in eval) after every request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import torch
from torch import nn

from gradguard import inference_fn

FEATURES = 4
LABELS = ("low", "medium", "high")


def build_model() -> nn.Module:
    """The served model: an MLP with BatchNorm and Dropout, so eval mode matters."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(FEATURES, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(16, len(LABELS)),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
    model[1].eval()  # frozen statistics: this flag must survive every request
    return model


def parse_features(body: bytes) -> torch.Tensor:
    """The request's ``{"features": [...]}`` as a (1, FEATURES) tensor.

    Raises:
        ValueError: the body is not JSON of that shape.
    """
    try:
        features = json.loads(body)["features"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError('expected a JSON body like {"features": [0.5, -1.0, 2.0, 0.0]}') from error
    if (
        not isinstance(features, list)
        or len(features) != FEATURES
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in features)
    ):
        raise ValueError(f"features must be a list of {FEATURES} numbers, got {features!r:.80}")
    return torch.tensor([features], dtype=torch.float32)


@inference_fn
async def predict(model: nn.Module, body: bytes) -> dict[str, Any]:
    """Answer one ``/predict`` request: ``model`` is in eval with no_grad while this body runs."""
    x = parse_features(body)
    # Hand the loop to other requests before the forward pass, as a real service does when it
    # awaits a feature store, a cache or a batching queue. The scope is released meanwhile.
    await asyncio.sleep(0)
    probabilities = model(x)[0].softmax(dim=0)
    best = int(probabilities.argmax())
    return {"label": LABELS[best], "probabilities": probabilities.tolist()}


async def status(model: nn.Module, in_flight: int) -> dict[str, Any]:
    """What the event loop sees outside the handler: grad mode and the model's own flags.

    ``in_flight`` counts the predictions started and not finished: suspended at their ``await``.
    """
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "training": [module.training for module in model.modules()],
        "in_flight": in_flight,
    }


async def _respond(writer: asyncio.StreamWriter, code: int, payload: object, close: bool) -> None:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {code} {reasons[code]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


async def _handle_connection(
    model: nn.Module,
    counts: dict[str, int],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _version = [*request_line.split(" "), "", "", ""][:3]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            length = int(headers.get("content-length", "0") or "0")
            close = headers.get("connection", "").lower() == "close"
            if length > 65536:
                await _respond(writer, 413, {"error": "body too large"}, True)
                return
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path == "/predict":
                counts["in_flight"] += 1
                try:
                    code, answer = 200, await predict(model, body)
                except ValueError as error:
                    code, answer = 400, {"error": str(error)}
                finally:
                    counts["in_flight"] -= 1
                await _respond(writer, code, answer, close)
            elif method == "GET" and path == "/status":
                await _respond(writer, 200, await status(model, counts["in_flight"]), close)
            else:
                await _respond(writer, 404, {"error": f"no route {method} {path}"}, close)
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def start_server(model: nn.Module, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start serving ``model`` on ``host:port`` (port 0: any free port) in the running loop."""

    counts = {"in_flight": 0}

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle_connection(model, counts, reader, writer)

    return await asyncio.start_server(on_connection, host, port)


async def serve_forever(host: str, port: int) -> None:
    server = await start_server(build_model(), host, port)
    bound = server.sockets[0].getsockname()
    print(f"serving on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a small model over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a user stops the service
        asyncio.run(serve_forever(options.host, options.port))


if __name__ == "__main__":
    main()
