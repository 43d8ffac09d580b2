"""The emulated network, and nothing else: a topology becomes namespaces, switches and shaped links, which
it measures, captures and tears down. It may import `topologies` only; the live run (live/) builds on it.

`EmulatedNetwork` is the entry point (network.py); `plan` derives names and addresses, `shaping` (netem,
TBF) and `wire` (userspace delay, jitter, loss) shape links with `topologies.LinkShape`, `switches` and
`controller` (os-ken apps) forward, `measure` checks links, `capture` writes pcaps, `record`, `clean` and
`leftovers` make sure nothing outlives a run; `cli` gives the `net` and `clean` commands.
"""

from testbed.errors import (
    CommandError,
    HelperDiedError,
    MeasurementError,
    NetworkError,
    PreflightError,
)
from testbed.measure import LinkMeasurement, ProbePlan, Tolerance
from testbed.network import EmulatedNetwork, Host, PortSample

__all__ = [
    "CommandError",
    "EmulatedNetwork",
    "HelperDiedError",
    "Host",
    "LinkMeasurement",
    "MeasurementError",
    "NetworkError",
    "PortSample",
    "PreflightError",
    "ProbePlan",
    "Tolerance",
]
