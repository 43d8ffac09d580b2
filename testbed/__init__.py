"""The testbed's emulated network: a topology file becomes namespaces, switches and shaped links.

`EmulatedNetwork` is the entry point (see network.py); `plan` derives names and addresses, `shaping`
and `wire` shape links, `controller` holds the os-ken apps, `measure` checks links, `record` and
`clean` make sure nothing outlives a run.
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
