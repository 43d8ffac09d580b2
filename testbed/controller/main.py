"""Entry point of the controller process:
`python -m testbed.controller.main CONFIG.json OUT_DIR PORT [STATS_INTERVAL_S [TDF]]` (the interval in real
seconds; TDF the network's time dilation factor, 1 by default).

Starts os-ken in this process (os-ken 4.x has no osken-manager): parse its config, load the two
apps, instantiate them and join the hub. Dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
from pathlib import Path

from testbed.controller import settings

APPS = ["testbed.controller.forwarding", "testbed.controller.portstats"]


def run(config_path: Path, out_dir: Path, port: int, stats_interval_s: float, tdf: float = 1.0,
        listen: str = "127.0.0.1") -> None:
    settings.CURRENT = settings.ControllerSettings(plan=json.loads(config_path.read_text()), out_dir=out_dir,
                                                   stats_interval_s=stats_interval_s, tdf=tdf)
    # app_manager first: importing os_ken.controller.controller on its own is a circular import.
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    importlib.import_module("os_ken.controller.controller")  # registers the ofp-* options

    cfg.CONF(args=["--ofp-listen-host", listen, "--ofp-tcp-listen-port", str(port)], project="os_ken")
    manager = AppManager.get_instance()
    manager.load_apps(APPS + ["os_ken.controller.ofp_handler"])
    contexts = manager.create_contexts()
    services = manager.instantiate_apps(**contexts)
    try:
        hub.joinall(services)
    finally:
        manager.close()


def main(argv: list[str]) -> int:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the run
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # hub threads would keep a sys.exit waiting
    interval_s = float(argv[3]) if len(argv) > 3 else 1.0
    tdf = float(argv[4]) if len(argv) > 4 else 1.0
    listen = argv[5] if len(argv) > 5 else "127.0.0.1"  # a multi-host run: the driver's underlay address
    run(Path(argv[0]), Path(argv[1]), int(argv[2]), interval_s, tdf, listen)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
