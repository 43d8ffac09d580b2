"""What a Triton user would run to serve the worker's model from Python: NVIDIA PyTriton, i.e. Triton
Inference Server's own HTTP front end and dynamic batcher, calling a Python function for each batch. The
function does the worker's own work (JPEG decode and letterbox into one batch buffer, one network run,
NMS; the functions of workers/prepost.py). A frame is sent as a BYTES tensor `frame` [1] in Triton's
binary tensor format; the answer is `detections` [k, 7] (x1, y1, x2, y2, score, label id, 0), FP32.
For benchmarks/bench_worker_alternatives.py, in a virtualenv of its own (PyTriton needs numpy < 2):

    python3 -m venv /tmp/venv-pytriton && /tmp/venv-pytriton/bin/pip install nvidia-pytriton==0.7.0 \
        onnxruntime==1.23.2 pillow==12.0.0 pyyaml==6.0.3
    /tmp/venv-pytriton/bin/python benchmarks/alt_pytriton.py --model tiny-yolov2 --batch 4 --delay-ms 5 [--cpu 1]

prints `READY <port>` once Triton serves the model on 127.0.0.1 and serves until killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.modelconfig import load_model  # noqa: E402
from workers.prepost import postprocess, prepare_jpeg  # noqa: E402
from workers.runtime import make_session  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_infer(model: str, threads: int, max_batch: int):
    config = load_model(model)
    session = make_session(config.onnx_path, "cpu", threads)
    slots = np.zeros((max_batch, 3, config.input_height, config.input_width), np.float32)

    @batch
    def infer(frame: np.ndarray) -> dict[str, np.ndarray]:
        prepared = [prepare_jpeg(bytes(f[0]), config, slots[i]) for i, f in enumerate(frame)]
        raw = session.run(None, {config.input_name: slots[:len(prepared)]})[0]
        rows = [[[*d.box, d.score, float(config.labels.index(d.label)), 0.0]
                 for d in postprocess(raw[i], config, p.frame_per_input_px, (p.frame_height, p.frame_width))]
                for i, p in enumerate(prepared)]
        most = max(1, max(len(r) for r in rows))
        out = np.zeros((len(rows), most, 7), np.float32)
        for i, r in enumerate(rows):
            if r:
                out[i, :len(r)] = r
        return {"detections": out}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-yolov2")
    parser.add_argument("--batch", type=int, default=4, help="Triton's max_batch_size")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="the dynamic batcher's max queue delay")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (Triton and its Python stub)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # inherited by tritonserver and the stub it starts
    port = free_port()
    config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_port=free_port(),
                          metrics_port=free_port(), exit_timeout_secs=1)
    batcher = DynamicBatcher(max_queue_delay_microseconds=int(args.delay_ms * 1000))
    with Triton(config=config) as triton:
        triton.bind(model_name=args.model, infer_func=make_infer(args.model, args.threads, args.batch),
                    inputs=[Tensor(name="frame", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="detections", dtype=np.float32, shape=(-1, 7))],
                    config=ModelConfig(max_batch_size=args.batch, batcher=batcher), strict=False)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        triton.run()
        print("READY", port, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
