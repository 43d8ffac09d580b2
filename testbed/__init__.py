"""The emulated network, and nothing else: a topology becomes a Mininet network (hosts in namespaces,
switches, shaped links), which it measures, captures and tears down; the live run (live/) builds on it.

`EmulatedNetwork` is the entry point (network.py); `plan` derives names and addresses; `topo` describes the
plan as a Mininet `Topo`, which `net.TestbedNet` (Mininet) builds from the recorded classes of `nodes`
(hosts, switches, controller) and `links` (veths, wires, shaped interfaces); `shaping` (netem, TBF) and
`wire` (userspace delay, jitter, loss) shape links with `topologies.LinkShape`; `stp` works out a cyclic
topology's spanning tree; `controller` (os-ken apps) forwards; `measure` checks links and switch hops;
`portcounters` samples every switch port's counters on every server; `bringup` starts the controller or waits for
the spanning tree; `capture` writes pcaps and `pcaptime` rewrites a dilated run's to virtual time; `cpuset` gives real inference
a core of its own; `record`, `deathwatch`, `clean` and `leftovers` make sure nothing outlives a run;
`interrupts` turns SIGTERM and a dying helper into KeyboardInterrupt in the main thread and gives the processes a
run starts SIGINT's default even when the run ignores it; `cli` gives the `net` and `clean` commands, `mncli`
Mininet's CLI. Other servers of a multi-host run:
`agent` (one ssh channel per server), `serverchecks` (their preflight), `clocksync`, `crossserver` (the
arithmetic of links between servers), `remote` (Mininet's Cluster Edition nodes over the agent's ssh).
"""

import logging as _logging

_LOGGER_CLASS = _logging.getLoggerClass()
try:  # mininet.log makes every logger created after it a MininetLogger (level 25, a handler of its own)
    import mininet.log  # noqa: F401
except ImportError:  # preflight names the missing package
    pass
finally:
    _logging.setLoggerClass(_LOGGER_CLASS)

_EXPORTS = {
    "CommandError": "testbed.errors",
    "HelperDiedError": "testbed.errors",
    "MeasurementError": "testbed.errors",
    "NetworkError": "testbed.errors",
    "PreflightError": "testbed.errors",
    "LinkMeasurement": "testbed.measure",
    "ProbePlan": "testbed.measure",
    "Tolerance": "testbed.measure",
    "EmulatedNetwork": "testbed.network",
    "Host": "testbed.network",
    "PortSample": "testbed.portcounters",
}
"""Imported when first asked for: a live run's scheduler or source reads the plan's names without loading
the network's machinery."""


def __getattr__(name: str) -> object:
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
