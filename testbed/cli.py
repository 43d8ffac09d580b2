"""Command line of the network layer: `net` (bring up, measure, open Mininet's CLI, tear down) and `clean`.

`register(subparsers)` adds both subcommands to run_testbed.py's parser; each sets `func`, which
takes the parsed namespace and returns the exit code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testbed import switches
from testbed.clean import clean
from testbed.errors import MeasurementError, NetworkError, PreflightError
from testbed.measure import Tolerance, format_table
from testbed.placement import Placement, parse_place, parse_servers
from testbed.probes import ProbePlan
from topologies import TopologyError, load_topology
from topologies.events import load_events
from topologies.timescale import TDF_LADDER, parse_tdf_or_auto

if TYPE_CHECKING:
    from testbed.network import EmulatedNetwork

EXIT_OK, EXIT_MEASUREMENT, EXIT_PREFLIGHT, EXIT_NETWORK = 0, 1, 2, 3
AUTO_CHECKS = 3
"""`net --check --tdf auto`: the ladder's first steps it checks at most (K 1, 2, 3)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    net = subparsers.add_parser("net", help="bring up the emulated network of a topology, measure it, tear it down",
                                description="Builds the topology's network (namespaces, switches, shaped links), "
                                            "measures every link and compares it with the file.")
    net.add_argument("--topo", default="full-edge", help="topology name or YAML path (default: full-edge)")
    net.add_argument("--check", action="store_true",
                     help="measure every link, print configured vs measured, tear down (exit 1 beyond tolerance)")
    net.add_argument("--cli", action="store_true",
                     help="open Mininet's CLI on the network (pingall, HOST ping HOST, links, dump, py ...); "
                          "commands may be piped in; exit or end of input tears down")
    net.add_argument("--cli-script", type=Path, default=None, metavar="FILE",
                     help="run the CLI commands in FILE, then tear down (as mn's scripts)")
    net.add_argument("--events", type=Path, default=None, metavar="FILE",
                     help="network events file: apply its link changes at their times after the network is up, "
                          "while it stays up or the CLI runs (docs/network.md#network-events)")
    net.add_argument("--shaping", choices=("auto", "netem", "wire"), default="auto",
                     help="link shaping: kernel netem, the userspace wire, or auto (netem where present)")
    net.add_argument("--switch", choices=("ovs", "lxbr"), default="ovs", help="Open vSwitch or Linux bridges")
    net.add_argument("--controller", choices=("osken", "none"), default=None,
                     help="os-ken shortest-path controller, or standalone switches (default: none with --switch "
                          "lxbr, osken with ovs)")
    net.add_argument("--out", type=Path, default=None, help="run directory (default runs/net-<time>-<id>)")
    net.add_argument("--seed", type=int, default=0, help="seed of the wires' loss and jitter draws")
    net.add_argument("--mtu", type=int, default=1500, help="MTU of every interface, 68-65535 (default 1500; the "
                     "live run uses 9000)")
    net.add_argument("--tdf", type=parse_tdf_or_auto, default=1.0, metavar="K|auto",
                     help="time dilation factor: links K times slower in real time (delays x K, rates / K), "
                          "hosts' TCP timers x K; --check reports virtual ms (docs/network.md#time-dilation); "
                          f"auto (with --check): the smallest K from 1 up ({AUTO_CHECKS} checks at most, each on a "
                          "fresh network) at which every link direction is within tolerance; --cli then opens on it")
    net.add_argument("--servers", default=None, metavar="NAME=USER@HOST[:PORT],...",
                     help="the servers of a multi-host run, `local` being this machine (default: local only; "
                          "docs/multihost.md)")
    net.add_argument("--place", default=None, metavar="SITE=SERVER,...",
                     help="which server each site (its switch and hosts) lives on; sites not named go to the "
                          "first server of --servers")
    net.add_argument("--ssh-options", default="", metavar="'ARGS'",
                     help="extra ssh arguments for every server, e.g. '-i KEY -o UserKnownHostsFile=F'")
    net.add_argument("--probes", type=int, default=ProbePlan.count, help="probes per link direction")
    net.add_argument("--tolerance-ms", type=float, default=Tolerance.delay_abs_ms,
                     help="allowed |measured - configured| one-way delay, plus 3%% of the delay")
    net.set_defaults(func=cmd_net)
    cl = subparsers.add_parser("clean", help="remove what interrupted runs created (and nothing else)",
                               description="Removes the namespaces, links, bridges, qdiscs and processes that "
                                           "runs recorded and did not tear down.")
    cl.add_argument("--run-dir", type=Path, default=None,
                    help="the run directory to clean (default: every run not torn down on this machine)")
    cl.set_defaults(func=cmd_clean)


def cmd_net(args: argparse.Namespace) -> int:
    tdf = getattr(args, "tdf", 1.0)
    if tdf is not None:
        return _net(args, tdf, args.out)
    if not args.check or getattr(args, "events", None) is not None:
        print("error: --tdf auto: needs --check (it picks the smallest K whose check passes) and no --events "
              "(they would be played on every network it checks)", file=sys.stderr)
        return EXIT_PREFLIGHT
    for k in TDF_LADDER[:AUTO_CHECKS]:
        print(f"--tdf auto: checking every link at K {k:g}", flush=True)
        try:
            code = _net(args, k, args.out / f"k{k:g}" if args.out else None, auto=True)
        except MeasurementError as exc:  # the measurement itself failed: a larger K would not tell more
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_MEASUREMENT
        if code != EXIT_MEASUREMENT:  # within tolerance (the CLI, if asked, ran on it), or refused or failed
            if code == EXIT_OK:
                print(f"--tdf auto: K {k:g}, the smallest at which every link direction is within tolerance")
            return code
    print(f"error: --tdf auto: no K up to {TDF_LADDER[AUTO_CHECKS - 1]:g} had every link direction within "
          f"tolerance; the next step is --tdf {TDF_LADDER[AUTO_CHECKS]:g}", file=sys.stderr)
    return EXIT_MEASUREMENT


def _net(args: argparse.Namespace, tdf: float, out: Path | None, auto: bool = False) -> int:
    """Brings the network up at time dilation factor `tdf` in run dir `out`, uses it as `args` say, tears it
    down; returns the exit code. `auto` (one step of `--tdf auto`): links out of tolerance are a note, not an
    error, the CLI opens only if every link was within tolerance, and a failed measurement is raised
    (MeasurementError, after teardown)."""
    from testbed.network import EmulatedNetwork

    try:
        topo = load_topology(args.topo)
        events = load_events(args.events, topo) if getattr(args, "events", None) else None
        placement = placement_from_args(args, [s.name for s in topo.sites])
        net = EmulatedNetwork(topo, shaping=args.shaping, switch=args.switch,
                              controller=switches.controller_for(args.switch, args.controller),
                              run_dir=out, seed=args.seed, mtu=args.mtu, tdf=tdf,
                              placement=placement)
    except (TopologyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PREFLIGHT
    cli_script = getattr(args, "cli_script", None)
    cli = getattr(args, "cli", False) or cli_script is not None
    if cli_script is not None and not cli_script.is_file():
        print(f"error: --cli-script {cli_script}: no such file", file=sys.stderr)
        return EXIT_PREFLIGHT
    bad: list = []
    try:
        with net:
            player = None
            if events is not None:
                from testbed.events import EventPlayer, check_events

                check_events(net, events)  # an event its link cannot take: refused (exit 2) before any is applied
                player = EventPlayer(net, events.events, lambda line: print(line, flush=True))
                player.start()
            try:
                bad = _use(net, args, cli, cli_script, auto)
            finally:
                if player is not None:
                    player.finish()
            t0 = time.monotonic()
        print(f"torn down in {time.monotonic() - t0:.1f} s")
        if player is not None and player.error is not None:
            print(f"error: network events: {player.error}", file=sys.stderr)
            return EXIT_NETWORK
        return EXIT_MEASUREMENT if bad else EXIT_OK
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PREFLIGHT
    except MeasurementError as exc:
        if auto:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MEASUREMENT
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NETWORK
    except KeyboardInterrupt:
        print("interrupted; network torn down", file=sys.stderr)
        return 130


def placement_from_args(args: argparse.Namespace, sites: list[str]) -> Placement:
    """Returns the placement `--servers`, `--place` and `--ssh-options` give; raises ValueError naming the
    option at fault."""
    try:
        ssh_options = shlex.split(getattr(args, "ssh_options", "") or "")
    except ValueError as e:
        raise ValueError(f"--ssh-options: {e}") from None
    servers = parse_servers(getattr(args, "servers", None), ssh_options)
    return parse_place(getattr(args, "place", None), sites, servers)


def _use(net: EmulatedNetwork, args: argparse.Namespace, cli: bool, cli_script: Path | None,
         auto: bool = False) -> list:
    """Measures, opens the CLI or holds the network up, as the options say; returns the links out of tolerance
    (`auto`: a step of `--tdf auto`, which notes them and opens no CLI on such a network)."""
    bad: list = []
    if args.check:
        results = net.measure_links(ProbePlan(count=args.probes), Tolerance(delay_abs_ms=args.tolerance_ms),
                                    check=False)
        report = net.last_report
        print(format_table(results, report.hop_ms if report else None,
                           report.hop_measured if report else None))
        print(f"measurements saved to {net.run_dir / 'link_measurements.json'}")
        if net.blocked_links:
            print(f"not measured (blocked by the spanning tree, no traffic): {', '.join(net.blocked_links)}")
        bad = [m for m in results if not m.ok]
        if bad and auto:
            print(f"--tdf auto: K {net.tdf:g}: {len(bad)} link direction(s) outside tolerance", flush=True)
        elif bad:
            print(f"error: {len(bad)} link direction(s) outside tolerance", file=sys.stderr)
    if cli and not (bad and auto):
        if net.cli(script=cli_script):
            raise KeyboardInterrupt  # SIGTERM ended the CLI: tear down as for Ctrl-C
    elif not args.check:
        print(f"network is up (namespaces: `ip netns exec <namespace> CMD`; switches:\n{net.switch_table()}"
              "); Ctrl-C tears it down", flush=True)
        while True:
            time.sleep(3600)
    return bad


def cmd_clean(args: argparse.Namespace) -> int:
    results = clean(args.run_dir)
    if not results:
        print("nothing to clean: no run is recorded as not torn down")
        return EXIT_OK
    code = EXIT_OK
    for r in results:
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(r.removed.items())) or "nothing"
        print(f"{r.run_dir}: {r.status} ({what})")
        for p in r.problems:
            print(f"  {p}", file=sys.stderr)
        if r.status in ("failed", "still-running", "no-record"):
            code = EXIT_NETWORK
    return code
