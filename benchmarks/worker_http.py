"""HTTP pieces of the worker benchmark (bench_worker.py): a worker process, v2 binary requests, and two
clients with one interface: a lean keep-alive HTTP/1.1 client on asyncio streams, and aiohttp's."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from dataclasses import dataclass

import aiohttp
import numpy as np

from workers.lifecycle import read_ready
from workers.modelconfig import REPO_ROOT


class Worker:
    """A worker process started with `python -m workers.serve`, stopped with SIGTERM."""

    def __init__(self, model: str, batch: int, threads: int, delay_ms: float, queue_limit: int,
                 cpus: set[int] | None = None) -> None:
        cmd = [sys.executable, "-m", "workers.serve", "--model", model, "--port", "0", "--batch", str(batch),
               "--instances", "1", "--threads", str(threads), "--max-batch-delay-ms", str(delay_ms),
               "--queue-limit", str(queue_limit)]
        if cpus:
            cmd += ["--cpus", ",".join(map(str, sorted(cpus)))]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        self.url = read_ready(self.proc, "worker")
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def v2_binary(tensor: np.ndarray, datatype: str = "FP32") -> tuple[bytes, dict]:
    """Returns a v2 request with binary tensor data in, asking for the output as binary data too."""
    raw = tensor.astype(np.uint8 if datatype == "UINT8" else np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "images", "datatype": datatype, "shape": list(tensor.shape),
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class Request:
    """One POST to the worker: its path, body and headers."""

    path: str
    body: bytes
    headers: dict


def answer_json(body: bytes, header_len: str | None) -> dict:
    """Returns an answer's JSON (the header of a binary-data v2 answer)."""
    return json.loads(body[: int(header_len)] if header_len else body)


class LeanClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams; each request is encoded once."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._encoded: dict[int, tuple[Request, bytes]] = {}  # by id, holding the request so the id stays its
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LeanClient:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def __aexit__(self, *exc) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    def _encode(self, req: Request) -> bytes:
        cached = self._encoded.get(id(req))
        if cached is None or cached[0] is not req:
            head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
            cached = (req, (f"POST {req.path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
                            f"Content-Length: {len(req.body)}\r\n\r\n").encode() + req.body)
            self._encoded[id(req)] = cached
        return cached[1]

    async def post(self, req: Request) -> tuple[int, bytes, str | None]:
        """Returns (status, body, Inference-Header-Content-Length or None)."""
        self._writer.write(self._encode(req))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, header_len = int(head[9:12]), None, None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"inference-header-content-length":
                header_len = value.strip().decode()
        if length is None:  # the worker always sends one; a chunked answer would desynchronise the stream
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        return status, await self._reader.readexactly(length), header_len


class AiohttpClient:
    """The same interface over one aiohttp ClientSession (`--aiohttp-client`)."""

    def __init__(self, host: str, port: int) -> None:
        self.base = f"http://{host}:{port}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpClient:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    async def post(self, req: Request) -> tuple[int, bytes, str | None]:
        async with self._session.post(self.base + req.path, data=req.body, headers=req.headers) as resp:
            return resp.status, await resp.read(), resp.headers.get("Inference-Header-Content-Length")
