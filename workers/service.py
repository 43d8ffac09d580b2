"""The aiohttp worker service: Open Inference Protocol (KServe v2) REST routes, a raw-JPEG frame
route, the load report and Prometheus metrics, over one DynamicBatcher. `create_app` is the
factory; replicas load and warm up in the background and the worker is ready only after. What a
request may hold and how slowly it may arrive is workers/limits.py's."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from .batching import DynamicBatcher
from .deployment import Deployment
from .engine import OnnxProcessor, Outcome, Processor, ProfileProcessor, Query, now_ms
from .ledger_routes import LEDGER, Ledger, add_ledger_routes
from .limits import Rejected, RequestGuard, RequestLimits, error, json_depth_error, read_body
from .metrics import CONTENT_TYPE
from .schedule import NominalSchedule
from .stats import RealBatchLog, WorkerStats, virtual_monotonic


@dataclass
class Engine:
    """The replicas' state: the batcher once they are loaded and warm, or why loading failed."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    batcher: DynamicBatcher | None = None
    startup_error: str | None = None


DEPLOYMENT = web.AppKey("deployment", Deployment)
STATS = web.AppKey("stats", WorkerStats)
ENGINE = web.AppKey("engine", Engine)
GUARD = web.AppKey("guard", RequestGuard)
JPEG_TYPES = ("image/jpeg", "image/jpg")
MODEL_VERSION = "1"  # the one version of its model a worker serves (the metadata and versioned routes say so)
_log = logging.getLogger("workers.service")
# v2 input datatypes accepted; UINT8 pixels are converted to the network's float input.
_V2_DATATYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype(np.uint8)}
_PARSE_ON_LOOP_BYTES = 64 * 1024  # larger JSON tensors are parsed off the event loop


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """Turns aiohttp's own text errors (404, 405, ...) and refused requests into JSON errors, logs a
    dropped client in one line, and releases the request's share of the body budget once it is answered."""
    guard = request.app[GUARD]
    try:
        return await handler(request)
    except Rejected as exc:
        resp = error(exc.status, exc.code, exc.detail, **exc.extra)
        if exc.close:
            resp.force_close()
        if exc.abort:  # answer, then close at once rather than read on what a slow sender sends
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except ConnectionError as exc:  # the client went away mid-request: nobody to answer
        guard.disconnects += 1
        _log.info("client %s dropped the connection during %s %s (%s)", request.remote, request.method,
                  request.path, exc)
        return error(499, "client_closed", str(exc))
    except Exception as exc:  # a failed batch (e.g. ONNX Runtime error): answer, log, keep serving
        _log.exception("request %s %s failed", request.method, request.path)
        return error(500, "internal", f"{type(exc).__name__}: {exc}")
    finally:
        guard.release(request)


def _make_processors(dep: Deployment) -> list[Processor]:
    """Returns the replicas, the real ones (ONNX Runtime) first: the batcher starts its replicas in this order
    and hands each batch to the replica free the longest (FIFO), so the first query reaches a real replica and a
    light load alternates between the kinds; the others sleep the profile."""
    real: list[Processor] = []
    try:
        for _ in range(dep.real_instances):
            real.append(OnnxProcessor(dep.config, dep.device, dep.threads, dep.time_scale, dep.inference_cgroup))
    except BaseException:
        for p in real:
            p.close()
        raise
    assert dep.profile is not None or dep.real_instances == dep.instances  # resolve() guarantees it
    schedule = NominalSchedule(dep.max_batch_size, dep.max_batch_delay_ms)  # one batch forms at a time
    profiled = [ProfileProcessor(dep.profile, dep.time_scale, schedule)  # type: ignore[arg-type]
                for _ in range(dep.instances - dep.real_instances)]
    if profiled:
        for p in real:  # a mixed worker: the real replicas' batches close in the same schedule
            p.schedule = schedule  # type: ignore[attr-defined]
    return real + profiled


async def _engine_ctx(app: web.Application):
    """Loads and warms the replicas in the background; stops the batcher and sessions on clean-up."""
    dep, stats, engine = app[DEPLOYMENT], app[STATS], app[ENGINE]
    processors: list[Processor] = []
    batch_log = RealBatchLog(dep.real_batch_log) if dep.real_batch_log is not None else None

    def on_batch(batch: list[Query], outcomes: list[Outcome]) -> None:
        stats.on_batch(batch, outcomes)
        if batch_log is not None:
            batch_log.on_batch(batch, outcomes)

    async def load() -> None:
        try:
            loop = asyncio.get_running_loop()
            processors.extend(await loop.run_in_executor(None, _make_processors, dep))
            for p in processors:
                await loop.run_in_executor(None, p.warm_up, dep.max_batch_size)
            engine.batcher = DynamicBatcher(processors, dep.max_batch_size,  # W in real time: x K
                                            dep.time_scale.real_duration(dep.max_batch_delay_ms),
                                            dep.queue_limit, on_batch=on_batch)
            engine.batcher.start()
            engine.ready.set()
        except Exception as exc:  # reported by /v2/health/ready and by serve.py, which exits
            engine.startup_error = f"{type(exc).__name__}: {exc}"

    loader = asyncio.create_task(load())
    yield
    loader.cancel()
    await asyncio.gather(loader, return_exceptions=True)
    if engine.batcher is not None:
        await engine.batcher.stop()
    for p in processors:
        p.close()
    if batch_log is not None:
        batch_log.close()


def create_app(dep: Deployment, limits: RequestLimits | None = None) -> web.Application:
    """Returns the worker application for one deployment (one model variant); `limits`: what a request may
    hold and how slowly it may arrive (the defaults when None). The header deadline is the server's:
    serve it with `lifecycle.serving(..., header_timeout_s=limits.header_timeout_s)`."""
    app = web.Application(client_max_size=dep.max_body_bytes, middlewares=[json_errors])
    app[DEPLOYMENT] = dep
    app[STATS] = WorkerStats(dep.config.name, dep.variant, dep.stream_ttl_s, max_batch_size=dep.max_batch_size,
                             clock=virtual_monotonic(dep.time_scale), real_instances=dep.real_instances)
    app[ENGINE] = Engine()
    app[GUARD] = RequestGuard(limits or RequestLimits(), dep.max_body_bytes)
    app.cleanup_ctx.append(_engine_ctx)
    app.add_routes([
        web.get("/v2", server_metadata),
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", ready),
        web.get("/v2/models/{name}", model_metadata),
        web.get("/v2/models/{name}/ready", model_ready),
        web.post("/v2/models/{name}/infer", infer),
        # The versioned forms of the same routes: this worker serves version "1" of its model.
        web.get("/v2/models/{name}/versions/{version}", model_metadata),
        web.get("/v2/models/{name}/versions/{version}/ready", model_ready),
        web.post("/v2/models/{name}/versions/{version}/infer", infer),
        web.post("/v2/models/{name}/frames", frames),
        web.get("/v2/load", load),
        web.get("/metrics", metrics),
    ])
    add_ledger_routes(app, Ledger(app[STATS].now_s, dep.time_scale))
    return app


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response({"name": "edge-testbed-worker", "version": "1",
                              "extensions": ["binary_tensor_data", "frames", "load", "streams"]})


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.ready.is_set():
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "error": engine.startup_error}, status=503)


def _unknown_model(request: web.Request) -> web.Response | None:
    """Returns a 404 answer when the route names another model, or a version other than this one's."""
    dep = request.app[DEPLOYMENT]
    name = request.match_info["name"]
    if name != dep.config.name:
        return error(404, "unknown_model", f"this worker serves {dep.config.name!r}, not {name!r}",
                     models=[dep.config.name])
    version = request.match_info.get("version", MODEL_VERSION)
    if version != MODEL_VERSION:
        return error(404, "unknown_model_version", f"model {name!r} has version {MODEL_VERSION!r} only, "
                     f"not {version!r}", versions=[MODEL_VERSION])
    return None


def _model_or_error(request: web.Request) -> web.Response | None:
    unknown = _unknown_model(request)
    if unknown is not None:
        return unknown
    if not request.app[ENGINE].ready.is_set():
        return error(503, "not_ready", "the worker is still loading and warming up its replicas")
    return None


async def model_metadata(request: web.Request) -> web.Response:
    dep = request.app[DEPLOYMENT]
    unknown = _unknown_model(request)
    if unknown is not None:
        return unknown
    c = dep.config
    return web.json_response({
        "name": c.name, "versions": [MODEL_VERSION], "platform": "onnxruntime_onnx",
        "inputs": [{"name": c.input_name, "datatype": "FP32", "shape": [-1, 3, c.input_height, c.input_width],
                    "parameters": {"also_accepts": ["UINT8"]}}],
        "outputs": [{"name": "detections", "datatype": "FP32", "shape": [-1, 7]}],
        "task": c.task, "deployment": dep.describe(), "card": vars(c.card)})


async def model_ready(request: web.Request) -> web.Response:
    failure = _model_or_error(request)
    return failure or web.json_response({"name": request.match_info["name"], "version": MODEL_VERSION,
                                         "ready": True})


def _overload(dep: Deployment, batcher: DynamicBatcher, stats: WorkerStats, count: int, **extra) -> web.Response:
    stats.on_overload(count)
    return error(503, "overload", f"queue full ({batcher.queue_len}/{dep.queue_limit} queries waiting)",
                 queue_len=batcher.queue_len, queue_limit=dep.queue_limit, **extra)


async def frames(request: web.Request) -> web.Response:
    """POST /v2/models/{name}/frames?stream=ID&query=N with a JPEG body: one query, its detections, and the
    worker's ledger (`Ledger.said`). The query arrives when its whole body has (as in the simulator, where
    transmission is network time)."""
    failure = _model_or_error(request)
    if failure is not None:
        return failure
    app = request.app
    dep, stats, batcher = app[DEPLOYMENT], app[STATS], app[ENGINE].batcher
    if request.content_type not in JPEG_TYPES:
        return error(415, "unsupported_media_type",
                     f"content type {request.content_type!r}; this route takes image/jpeg")
    body = await read_body(request, app[GUARD])
    t_arrival = now_ms(dep.time_scale)
    if not body:
        return error(400, "bad_frame", "empty body")
    stream, query_id = request.query.get("stream", ""), request.query.get("query", "")
    stats.on_arrival(stream, 1, len(body))
    app[LEDGER].book.seen(stream, stats.now_s())
    q = Query(stream, query_id, body, None, t_arrival, batcher.queue_len, asyncio.get_running_loop().create_future())
    if not batcher.submit([q]):
        return _overload(dep, batcher, stats, 1, stream=stream, query=query_id, t_arrival_ms=t_arrival)
    outcome: Outcome = await q.future
    answer = {"model": dep.config.name, "variant": dep.variant, "stream": stream, "query": query_id,
              "t_arrival_ms": t_arrival, "t_infer_start_ms": outcome.t_infer_start_ms,
              "t_infer_end_ms": outcome.t_infer_end_ms, "batch_size": outcome.batch_size,
              "input_ms": outcome.input_ms, "compute_ms": outcome.compute_ms,
              "queue_len_at_arrival": q.queue_len_at_arrival, "frame_bytes": len(body), **app[LEDGER].said()}
    answer["t_answer_ms"] = now_ms(dep.time_scale)
    stats.on_answer(answer["t_answer_ms"] - t_arrival)
    if outcome.error is not None:
        return error(400, "bad_frame", outcome.error, **answer)
    answer["detections"] = [d.to_json() for d in outcome.detections]
    return web.json_response(answer)


@dataclass(frozen=True)
class V2Request:
    """A parsed v2 inference request: the images [n, 3, H, W] (a view of the body when sent as binary
    data), the request id, and whether the client asked for the output as binary data."""

    images: np.ndarray
    id: str
    binary_output: bool


def _header_length(value: str | None, body_len: int) -> int | str:
    """Returns where the JSON header ends (Inference-Header-Content-Length, or the whole body)."""
    if value is None:
        return body_len
    if not value.strip().isdigit() or not 0 < int(value) <= body_len:
        return (f"Inference-Header-Content-Length {value!r} must be a whole number of bytes in "
                f"1..{body_len} (the body's length)")
    return int(value)


def _wants_binary_output(request: dict) -> bool | str:
    """Returns whether the output is asked for as binary data (request parameter binary_data_output,
    or the output's own binary_data parameter), or a text naming a bad `outputs` entry."""
    params = request.get("parameters") or {}
    binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = request.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        return "outputs must be a list of {name, parameters} objects"
    for o in outputs:
        if o.get("name") != "detections":
            return f"unknown output {o.get('name')!r}; the model's output is 'detections'"
        o_params = o.get("parameters") or {}
        if isinstance(o_params, dict) and "binary_data" in o_params:
            binary = bool(o_params["binary_data"])
    return binary


def _parse_v2(body: bytes, header_len: str | None, dep: Deployment, json_max_depth: int) -> V2Request | str:
    """Returns the parsed request (images as sent: FP32 or UINT8), or a text naming what is wrong."""
    c = dep.config
    split = _header_length(header_len, len(body))
    if isinstance(split, str):
        return split
    header = body[:split]
    too_deep = json_depth_error(header, json_max_depth)
    if too_deep is not None:
        return too_deep
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"request header is not valid JSON: {exc}"
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        return f"expected exactly one input tensor named {c.input_name!r}"
    tensor = inputs[0]
    if tensor.get("name") != c.input_name:
        return f"unknown input {tensor.get('name')!r}; the model's input is {c.input_name!r}"
    dtype = _V2_DATATYPES.get(tensor.get("datatype"))
    if dtype is None:
        return f"input datatype {tensor.get('datatype')!r}; expected one of {sorted(_V2_DATATYPES)}"
    shape = tensor.get("shape")
    expected = [3, c.input_height, c.input_width]
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(s, int) for s in shape)
            or shape[1:] != expected or not 1 <= shape[0] <= dep.queue_limit):
        return f"input shape {shape}; expected [n, {', '.join(map(str, expected))}] with 1 <= n <= {dep.queue_limit}"
    binary_output = _wants_binary_output(request)
    if isinstance(binary_output, str):
        return binary_output
    count = int(np.prod(shape))
    params = tensor.get("parameters") or {}
    binary_bytes = len(body) - split
    if isinstance(params, dict) and "binary_data_size" in params:
        size, need = params["binary_data_size"], count * dtype.itemsize
        if type(size) is not int or size != need or binary_bytes != size:
            return (f"binary_data_size {size!r} and {binary_bytes} bytes after the JSON header; "
                    f"shape {shape} {tensor['datatype']} needs {need}")
        data = np.frombuffer(body, dtype=dtype, offset=split, count=count)
    else:
        if binary_bytes:
            return (f"{binary_bytes} bytes after the JSON header but the input has no binary_data_size "
                    "parameter")
        try:
            data = np.asarray(tensor.get("data"), dtype=dtype).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            return f"input data is not a list of {tensor['datatype']} numbers: {exc}"
        if data.size != count:
            return f"input data has {data.size} values; shape {shape} needs {count}"
    # UINT8 pixels are converted by the replica, off the event loop.
    return V2Request(data.reshape(shape), str(request.get("id", "")), binary_output)


async def infer(request: web.Request) -> web.Response:
    """POST /v2/models/{name}/infer (KServe v2, JSON or binary tensor data): one query per image, which
    arrives when the whole body has."""
    failure = _model_or_error(request)
    if failure is not None:
        return failure
    app = request.app
    dep, stats, batcher = app[DEPLOYMENT], app[STATS], app[ENGINE].batcher
    header_len = request.headers.get("Inference-Header-Content-Length")
    # A JSON request may come without a Content-Type, as tritonclient sends it (Triton takes it too).
    if header_len is None and "Content-Type" in request.headers and request.content_type != "application/json":
        return error(415, "unsupported_media_type",
                     f"content type {request.content_type!r}; send application/json or binary tensor data "
                     "with Inference-Header-Content-Length")
    guard = app[GUARD]
    body = await read_body(request, guard)
    t_arrival = now_ms(dep.time_scale)
    depth = guard.limits.json_max_depth
    if header_len is None and len(body) > _PARSE_ON_LOOP_BYTES:  # a big JSON tensor: seconds of parsing
        parsed = await asyncio.get_running_loop().run_in_executor(None, _parse_v2, body, header_len, dep, depth)
    else:
        parsed = _parse_v2(body, header_len, dep, depth)
    if isinstance(parsed, str):
        return error(400, "bad_tensor", parsed)
    loop = asyncio.get_running_loop()
    queue_len = batcher.queue_len
    queries = [Query("", str(i), None, img, t_arrival, queue_len, loop.create_future())
               for i, img in enumerate(parsed.images)]
    stats.on_arrival("", len(queries), len(body))
    if not batcher.submit(queries):
        return _overload(dep, batcher, stats, len(queries), t_arrival_ms=t_arrival)
    outcomes: list[Outcome] = await asyncio.gather(*(q.future for q in queries))
    batches = {(o.t_infer_start_ms, o.t_infer_end_ms): o for o in outcomes}
    labels = dep.config.labels
    rows = [[i, *d.box, d.score, float(labels.index(d.label)) if d.label in labels else -1.0]
            for i, o in enumerate(outcomes) for d in o.detections]
    output = {"name": "detections", "datatype": "FP32", "shape": [len(rows), 7]}
    if parsed.binary_output:
        data = np.asarray(rows, dtype="<f4").reshape(-1, 7).tobytes()
        output["parameters"] = {"binary_data_size": len(data)}
    else:
        output["data"] = [v for row in rows for v in row]
    t_answer = now_ms(dep.time_scale)
    stats.on_answer(t_answer - t_arrival)
    answer = {
        "model_name": dep.config.name, "model_version": MODEL_VERSION, "id": parsed.id, "outputs": [output],
        "t_arrival_ms": t_arrival, "t_infer_start_ms": min(o.t_infer_start_ms for o in outcomes),
        "t_infer_end_ms": max(o.t_infer_end_ms for o in outcomes), "t_answer_ms": t_answer,
        "batch_size": max(o.batch_size for o in outcomes), "batch_sizes": [o.batch_size for o in outcomes],
        # the request's images may have gone through several batches: sum over them (one outcome each)
        "input_ms": sum(o.input_ms for o in batches.values()), "compute_ms": sum(o.compute_ms for o in batches.values()),
        "queue_len_at_arrival": queue_len,
        "detections": [{**d.to_json(), "image": i} for i, o in enumerate(outcomes) for d in o.detections]}
    if not parsed.binary_output:
        return web.json_response(answer)
    header = json.dumps(answer).encode()
    return web.Response(body=header + data, content_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(header))})


async def load(request: web.Request) -> web.Response:
    """GET /v2/load: the load report schedulers poll."""
    app = request.app
    dep = app[DEPLOYMENT]
    try:
        window_s = float(request.query.get("window_s", "1"))
        if not 0 < window_s <= 10:
            raise ValueError
    except ValueError:
        return error(400, "bad_request", "window_s must be a number in (0, 10]")
    queue_len = app[ENGINE].batcher.queue_len if app[ENGINE].batcher else 0
    report = app[STATS].load_report(queue_len, dep.queue_limit, window_s)
    report.update(app[LEDGER].said())
    report.update(ready=app[ENGINE].ready.is_set(), instances=dep.instances, max_batch_size=dep.max_batch_size,
                  max_batch_delay_ms=dep.max_batch_delay_ms, time_ms=now_ms(dep.time_scale))
    return web.json_response(report)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text exposition (workers/metrics.py)."""
    app = request.app
    queue_len = app[ENGINE].batcher.queue_len if app[ENGINE].batcher else 0
    page = app[STATS].metrics_page(queue_len, app[ENGINE].ready.is_set())
    page.gauge("worker_time_dilation_factor", "K: real seconds per virtual second of the run; the durations "
               "above are virtual, Prometheus' own rates are per real second", app[DEPLOYMENT].time_scale.factor)
    app[GUARD].add_metrics(page)
    return web.Response(body=page.text().encode(), headers={"Content-Type": CONTENT_TYPE})
