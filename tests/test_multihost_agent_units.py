"""The agent's ops without ssh or root: a process spawned to die with the agent ends when the agent does (the one
left to run does not), and a write replaces the file whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.agent import Agent

ROOT = Path(__file__).resolve().parents[1]
AGENT = """
import json, sys
from testbed.agent import Agent
a = Agent()
kept = a.op_spawn(["sleep", "60"], log="/dev/null")["pid"]
dies = a.op_spawn(["sleep", "60"], log="/dev/null", die_with_agent=True)["pid"]
print(json.dumps([kept, dies]), flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_process_spawned_to_die_with_the_agent_ends_with_it():
    agent = subprocess.Popen([sys.executable, "-c", AGENT], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    kept, dies = map(int, agent.stdout.readline().strip("[]\n").split(","))
    try:
        assert _alive(kept) and _alive(dies)
        agent.stdin.close()
        agent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(dies):
            assert time.monotonic() < deadline, "the process spawned to die with the agent outlived it"
            time.sleep(0.02)
        assert _alive(kept)
    finally:
        for pid in (kept, dies):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "t0"
    path.write_text("old\n")
    Agent().op_write(str(path), "MTc5NjIyMTU4NC4zMDgwMDAK", mode=0o600)  # base64 of "1796221584.308000\n"
    assert path.read_text() == "1796221584.308000\n" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["t0"]


def test_a_server_s_cpu_sample_reads_as_this_machine_s_own():
    """What the monitor gets of another server (the agent's `cpu_sample`) gives the figures Monitor reads here:
    a process's CPU and run-queue ns summed over its threads, the host's jiffies, its CPU count."""
    import os

    from live.monitor import busy_jiffies, state_of_sample, thread_ids, threads_schedstat
    from testbed.agent import Agent

    got = Agent().handle({"op": "cpu_sample", "pids": [os.getpid(), 2**22 + 7], "groups": ["/nonexistent"]})
    assert got["ok"] and got["groups"] == {"/nonexistent": None} and str(2**22 + 7) not in got["threads"]
    state = state_of_sample(got, [("sources", "me", os.getpid()), ("workers", "gone", 2**22 + 7)], None)
    run_ns, wait_ns = state.procs[f"me ({os.getpid()})"][1:]
    here_run, here_wait = threads_schedstat(os.getpid(), thread_ids(os.getpid()) or [])
    assert 0 < run_ns <= here_run and wait_ns <= here_wait and list(state.procs) == [f"me ({os.getpid()})"]
    assert state.cpus == os.cpu_count() and 0 < state.jiffies[0] <= busy_jiffies()[0]
