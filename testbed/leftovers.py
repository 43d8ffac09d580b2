"""Lists what of a run still exists on this machine: namespaces, interfaces, bridges, qdiscs, processes.

Names of everything a run creates carry its run id, so this check is exact; tests and `clean` use
it to prove that a teardown left nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from testbed import sh
from testbed.record import process_start_ticks


def leftovers(run_id: str, processes: Iterable[tuple[int, int | None]] = (), scratch_netns: str = "") -> list[str]:
    """Returns a line per thing of the run still present; processes are (pid, start ticks)."""
    found = []
    marks = (f"tb{run_id}-", f"t{run_id}s")
    netns = [n["name"] for n in json.loads(sh.run(["ip", "-j", "netns", "list"]).stdout or "[]")]
    found += [f"netns {n}" for n in netns if n.startswith(marks) or (scratch_netns and n == scratch_netns)]
    links = [lk["ifname"] for lk in json.loads(sh.run(["ip", "-j", "link", "show"]).stdout or "[]")]
    found += [f"link {n}" for n in links if n.startswith(marks)]
    ovs = sh.run(["ovs-vsctl", "--timeout=5", "list-br"], check=False)
    found += [f"ovs bridge {b}" for b in ovs.stdout.split() if b.startswith(marks)]
    qdiscs = json.loads(sh.run(["tc", "-j", "qdisc", "show"]).stdout or "[]")
    found += [f"qdisc {q['kind']} on {q['dev']}" for q in qdiscs if str(q.get("dev", "")).startswith(marks)]
    found += [f"process {pid}" for pid, ticks in processes
              if process_start_ticks(pid) is not None and process_start_ticks(pid) == ticks]
    return found
