"""The worker process and the workers' subcommands: `python -m workers.serve` prints READY once
warm, is pinned to its CPU set and exits 0 on SIGTERM; `models` lists cards with file hashes;
`models add` registers an ONNX file by path; `profile` writes a file the scheduler's loader reads."""

from __future__ import annotations

import argparse
import io
import json
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from worker_profile import write_worker_profile

from scheduler.profiles import read_profile
from workers import zoo
from workers.cli import register
from workers.modelconfig import REPO_ROOT, file_sha256, load_model

MODEL = "tiny-yolov2"


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    zoo.build(names=[MODEL], log=lambda _: None)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="run_testbed.py")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


def read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline() if ready else ""


def test_serve_prints_ready_pins_cpus_and_exits_cleanly_on_sigterm() -> None:
    cmd = [sys.executable, "-m", "workers.serve", "--model", MODEL, "--host", "127.0.0.1", "--port", "0",
           "--batch", "2", "--instances", "1", "--cpus", "0", "--max-batch-delay-ms", "1", "--queue-limit", "8"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(proc, 60)
        assert line.startswith("READY http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[1]
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10) as resp:
            assert json.load(resp) == {"ready": True}
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}", timeout=10) as resp:
            deployment = json.load(resp)["deployment"]
        assert (deployment["max_batch_size"], deployment["queue_limit"], deployment["threads"]) == (2, 8, 1)
        allowed = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if ln.startswith("Cpus_allowed_list")]
        assert allowed == ["Cpus_allowed_list:\t0"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_fails_fast_on_an_unknown_model() -> None:
    result = subprocess.run([sys.executable, "-m", "workers.serve", "--model", "resnet", "--port", "0"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown model 'resnet'" in result.stderr and "tiny-yolov2" in result.stderr


def test_models_lists_cards_with_the_files_hash(capsys) -> None:
    status, out = run_cli(["models"], capsys)
    assert status == 0
    card = out.split("\n\n")[[b.split()[0] for b in out.split("\n\n")].index(MODEL)]
    assert file_sha256(load_model(MODEL).onnx_path) in card
    assert "trained" in card and "MIT" in card and "accuracy:     0.237" in card and "416x416" in card


class _TinyDetector(torch.nn.Module):
    """A made-up detector with the zoo's output format: 4 boxes per image, score = mean red / 255."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, 0].mean(dim=(1, 2)) / 255.0
        boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0],
                              [0.5, 0.0, 1.0, 0.5]]).expand(x.shape[0], 4, 4)
        return torch.cat([boxes, score.view(-1, 1, 1).expand(-1, 4, 1) * torch.tensor([1.0, 0.9, 0.2, 0.1]).view(1, 4, 1)], 2)


def test_models_add_registers_an_onnx_file_by_path(tmp_path: Path, capsys) -> None:
    onnx_path = tmp_path / "toy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TinyDetector(), (torch.zeros(1, 3, 32, 48),), str(onnx_path), dynamo=False,
                          opset_version=17, input_names=["pixels"], output_names=["out"],
                          dynamic_axes={"pixels": {0: "n"}, "out": {0: "n"}})
    models_dir = tmp_path / "models"
    status, out = run_cli(["models", "--models-dir", str(models_dir), "add", "--name", "toy", "--onnx",
                           str(onnx_path), "--pre", "rgb255", "--post", "boxes-scores", "--labels", "thing",
                           "--iou-threshold", "0.3", "--accuracy", "0.4", "--accuracy-source", "made up"], capsys)
    assert status == 0 and "toy" in out
    cfg = load_model("toy", models_dir)
    assert (cfg.input_name, cfg.input_height, cfg.input_width, cfg.onnx_path) == ("pixels", 32, 48, onnx_path)
    assert cfg.card.onnx_sha256 == file_sha256(onnx_path)

    # The registered model runs in a worker: a red frame gives the two scored boxes above 0.5.
    from workers.engine import OnnxProcessor, Query
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (255, 0, 0)).save(buf, "JPEG", quality=95)
    (outcome,) = OnnxProcessor(cfg, "cpu", 1).process([Query("s", "1", buf.getvalue(), None, 0.0, 0)])
    assert [d.label for d in outcome.detections] == ["thing", "thing"]
    assert outcome.detections[0].box == pytest.approx((0, 0, 48, 32), abs=0.5)  # frame pixels (96x64 = 2x input)
    assert outcome.detections[0].score == pytest.approx(1.0, abs=0.02)


def test_profile_writes_a_file_the_scheduler_reads(tmp_path: Path, capsys) -> None:
    out = tmp_path / "measured.yaml"
    status, text = run_cli(["profile", "--models", f"{MODEL}={MODEL}", "--threads", "1", "--batches", "1,2",
                            "--runs", "2", "--budget-s", "0.05", "--out", str(out)], capsys)  # the face detector
    assert status == 0 and str(out) in text
    profile = read_profile(out)
    assert profile.models[MODEL].input_size == (416, 416) and profile.models[MODEL].accuracy == 0.237
    cpu = profile.runtime(MODEL, "cpu")
    assert set(cpu.batch_latency_ms) == {1, 2} and 0 < cpu.batch_latency_ms[1] <= cpu.batch_latency_ms[2]
    assert all(cpu.batch_latency_p99_ms[b] >= cpu.batch_latency_ms[b] for b in (1, 2))
    assert cpu.input_ms_per_mb > 0 and cpu.memory_mib > 0 and cpu.source.startswith("measured")
    assert "2 runs" in profile.origin
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # GPU entries measured on an H100
        (gpu,) = [rt for rt in profile.runtimes if rt.device == "gpu"]
        assert gpu.source.startswith("measured: PyTorch") and "gpu-h100.yaml" in gpu.source
        assert gpu.input_ms_per_mb == cpu.input_ms_per_mb  # JPEG preparation is this host's CPU cost
        out2 = tmp_path / "provisional-gpu.yaml"
        status, _ = run_cli(["profile", "--models", f"{MODEL}={MODEL}", "--threads", "1", "--batches", "1", "--runs",
                             "1", "--budget-s", "0.05", "--gpu-profile", "provisional", "--out", str(out2)], capsys)
        assert status == 0
        assert all("provisional" in rt.source for rt in read_profile(out2).runtimes if rt.device == "gpu")
    scheduler_profiles = pytest.importorskip("scheduler.profiles")
    variants = scheduler_profiles.load_profiles(out).variants
    assert f"{MODEL}-cpu-b2" in variants
    # the batch with its frames' fixed input cost (capacity_frame_kb 0: no per-MB input time)
    assert variants[f"{MODEL}-cpu-b2"].capacity_qps == pytest.approx(
        2 / (cpu.batch_latency_ms[2] + 2 * cpu.input_ms_per_frame) * 1000)


def test_worker_subcommand_refuses_gpu_without_cuda(capsys) -> None:
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has CUDA")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["worker", "--model", MODEL, "--device", "gpu", "--port", "0"])
    assert args.func(args) == 1
    assert "onnxruntime-gpu" in capsys.readouterr().err


def test_worker_subcommand_applies_its_request_limits(tmp_path: Path) -> None:
    """`run_testbed.py worker --body-budget-mb` bounds the bodies in flight, as `python -m workers.serve` does."""
    profile = write_worker_profile(tmp_path / "profile.yaml", MODEL, {1: 5.0})
    budget_mb = 0.05
    cmd = [sys.executable, str(REPO_ROOT / "run_testbed.py"), "worker", "--model", MODEL, "--port", "0",
           "--profile-driven", str(profile), "--body-budget-mb", str(budget_mb)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = read_line(proc, 60)
        assert line.startswith("READY http://127.0.0.1:"), line
        body = b"\xff\xd8" + bytes(200_000)  # four times the budget
        request = urllib.request.Request(f"{line.split()[1]}/v2/models/{MODEL}/frames", data=body,
                                         headers={"Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        answer = json.load(refused.value)
        assert (refused.value.code, answer["error"]) == (503, "body_budget"), answer
        assert answer["budget_bytes"] == int(budget_mb * 2**20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_read_ready_skips_other_lines_and_names_a_process_that_exits_first() -> None:
    from workers.lifecycle import read_ready, ready_address

    assert ready_address("READY http://10.0.0.1:7000\n") == "http://10.0.0.1:7000"
    assert ready_address("READY") == "" and ready_address("READYISH x") is None and ready_address("") is None
    talk = "print('loading'); print('READY 127.0.0.1:5', flush=True)"
    proc = subprocess.Popen([sys.executable, "-c", talk], stdout=subprocess.PIPE, text=True)
    assert read_ready(proc, "talker", 30) == "127.0.0.1:5"
    proc.wait()
    quiet = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match="quiet exited before it was ready .status 3"):
        read_ready(quiet, "quiet", 30)
