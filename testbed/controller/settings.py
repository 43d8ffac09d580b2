"""What the controller process was told: the plan's controller config and the output directory.

Set once by `main` before os-ken instantiates the apps, read by the apps in their constructors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ControllerSettings:
    plan: dict
    """NetworkPlan.controller_config(): switches, hosts, next_port per datapath, port owners."""
    out_dir: Path
    stats_interval_s: float = 1.0
    """Real seconds between port statistics requests."""
    tdf: float = 1.0
    """Time dilation factor K: rates are written per virtual second (real rate x K)."""


CURRENT: ControllerSettings | None = None


def current() -> ControllerSettings:
    if CURRENT is None:
        raise RuntimeError("controller settings not set: start the apps through testbed.controller.main")
    return CURRENT
