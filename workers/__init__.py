"""Real inference workers: the ONNX model zoo, the dynamic-batching runtime, the aiohttp worker
service (real and profile-driven) and the profiler that measures what the scheduler and the
simulator read."""
