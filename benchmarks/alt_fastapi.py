"""What a FastAPI user would write to serve the worker's model, as FastAPI's documentation shows it: an
app with the ONNX Runtime session opened in its lifespan, a plain `def` path operation (FastAPI runs it
in its thread pool) taking the request body as `bytes`, served by uvicorn (uvloop and httptools where
installed, as `uvicorn[standard]` brings them). It does the worker's own work per frame (JPEG decode and
letterbox, the network, NMS; the functions of workers/prepost.py), one frame per run: no batching.
For benchmarks/bench_worker_alternatives.py.

    .venv/bin/python benchmarks/alt_fastapi.py --model tiny-yolov2 [--threads 1] [--cpu 1]

prints `READY <port>` once listening on 127.0.0.1 and serves until killed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import Body, FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.modelconfig import load_model  # noqa: E402
from workers.prepost import postprocess, prepare_jpeg  # noqa: E402
from workers.runtime import make_session  # noqa: E402


def build_app(model: str, threads: int) -> FastAPI:
    state = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["config"] = load_model(model)
        state["session"] = make_session(state["config"].onnx_path, "cpu", threads)
        yield
        state.clear()

    app = FastAPI(lifespan=lifespan)

    @app.post("/predict")
    def predict(frame: Annotated[bytes, Body(media_type="image/jpeg")]) -> dict:
        config, session = state["config"], state["session"]
        prepared = prepare_jpeg(frame, config)
        raw = session.run(None, {config.input_name: prepared.tensor[None]})[0]
        detections = postprocess(raw[0], config, prepared.frame_per_input_px,
                                 (prepared.frame_height, prepared.frame_width))
        return {"detections": [d.to_json() for d in detections]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU, as the worker is")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn has started the app
    server = uvicorn.Server(uvicorn.Config(build_app(args.model, args.threads), log_level="warning",
                                           access_log=False))
    print("READY", sock.getsockname()[1], flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
