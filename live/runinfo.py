"""What a live run records about the network it ran on and the software it ran with: the link check's summary
(summary.json's `network`: links out of tolerance, what the switches cost per hop and per antenna-to-cluster path)
and the versions of everything (config.json's `versions`).
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from importlib import metadata

from live.procs import REPO_ROOT
from testbed.network import EmulatedNetwork
from testbed.preflight import mininet_version

PACKAGES = ("numpy", "aiohttp", "onnxruntime", "pyarrow", "matplotlib", "scikit-image", "pillow", "os-ken")


def network_summary(net: EmulatedNetwork, results: list, report) -> dict:
    """Returns what summary.json records of the link check: links out of tolerance, the switches' one-way cost
    per hop (per site, and their median), and per antenna and cluster how many switch hops a query's frame
    takes one way (sources -> scheduler -> worker) and what they cost in ms, which the topology's delays lack."""
    hop_ms = dict(report.hop_ms) if report else {}
    hops = {}
    hops_ms = {}
    topo = net.topology
    for ant in topo.antennas:
        hops[ant.name], hops_ms[ant.name] = {}, {}
        for cl in topo.clusters:
            sites = [ant.name, *net.plan.path_sites(ant.name, cl.name)] if cl.name != ant.name else [ant.name] * 2
            hops[ant.name][cl.name] = len(sites)  # the radio's hop into the antenna's switch, then the path's
            hops_ms[ant.name][cl.name] = round(sum(hop_ms.get(s, 0.0) for s in sites), 4)
    values = sorted(hop_ms.values())
    return {
        "switch": net.switch_kind, "datapath": net.datapath, "shaping": net.shaping, "mtu": net.mtu,
        "links_measured": len(results),
        "links_ok": all(m.ok for m in results),
        "links_out_of_tolerance": [{"link": m.link, "direction": m.direction, "problem": m.problem}
                                   for m in results if not m.ok],
        "blocked_by_stp": net.blocked_links,
        "switch_hop_ms": hop_ms,
        "switch_hop_measured": dict(report.hop_measured) if report else {},
        "switch_hop_ms_median": round(values[len(values) // 2], 4) if values else None,
        "switch_hops_one_way": hops,
        "switch_ms_one_way": hops_ms,
    }


def package_versions() -> dict[str, str]:
    """Returns the versions of Python, the packages the run depends on, Mininet, the tools, the kernel and the
    commit."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["mininet"] = mininet_version()  # Debian's package, linked into the virtualenv: no distribution metadata
    for tool in (["ovs-vsctl", "--version"], ["tcpdump", "--version"], ["uname", "-r"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out[tool[0]] = subprocess.run(
                tool, capture_output=True, text=True, timeout=5
            ).stdout.splitlines()[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    return out
