"""Mininet's CLI on the testbed's network (`net --cli`, the live run's `--cli`): `pingall`, `worker-ant1 ping
worker-cloud`, `nodes`, `net`, `links` (with each wire's state), `dump`, `sh`, `py`, `link ... down|up`.

`TestbedCLI` keeps Mininet's commands and fixes what would harm a shared machine or the run: node names
with hyphens work; `iperf` runs its own server and kills it by pid (Mininet's runs `killall -9 iperf`);
`xterm`, `gterm` and `x` are refused (stopping them runs `pkill -9 -f mnexec.*socat`); `switch X start`
re-checks the shaping. Ctrl-C interrupts the running command; `exit`, end of input and SIGTERM end the CLI,
leaving no node mid-command (one that ignores Ctrl-C is killed), so that the network tears down cleanly.
Commands piped in are read as commands (never fed to a running one), and an error in one command is reported
without ending the CLI. On a time-dilated network the banner says so: what the CLI shows (ping, iperf) is real
time, K times the topology's.
"""

from __future__ import annotations

import contextlib
import select
import signal
import subprocess
import sys
import threading
import time
from cmd import Cmd
from pathlib import Path
from typing import Any

import psutil
from mininet.cli import CLI
from mininet.log import error, lg, output

SETTLE_S = 5.0
"""How long a node may take to finish its interrupted command when the CLI ends."""
IPERF_PORT = 5201


class TestbedCLI(CLI):
    """Mininet's CLI for a testbed network; `testbed` is the EmulatedNetwork (`tb` in `py`)."""

    __test__ = False  # not a pytest test class

    identchars = Cmd.identchars + "-"  # Cmd splits the command word on identchars: worker-ant1 is one word
    prompt = "testbed> "

    def __init__(self, mininet, stdin=sys.stdin, script: Path | str | None = None, testbed: Any = None) -> None:
        self.testbed = testbed
        self.terminating = False
        self.interactive = _isatty(stdin)
        self.use_rawinput = self.interactive
        in_main = threading.current_thread() is threading.main_thread()
        old = {}
        if in_main:
            # A run started with SIGINT ignored (`cmd &` from a script) takes Ctrl-C here all the same; its node
            # shells were started with SIGINT's default (testbed.interrupts), so sendInt stops their commands.
            old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
            old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        stream, lg.ch.stream = lg.ch.stream, sys.stdout  # the CLI's output on stdout, as a user expects
        try:
            self._banner(mininet)
            CLI.__init__(self, mininet, stdin=stdin, script=str(script) if script else None)
        finally:
            lg.ch.stream = stream
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.settle()

    # -- ending cleanly ----------------------------------------------------------------------------

    def _on_sigterm(self, _signum: int, _frame: object) -> None:
        self.terminating = True
        raise KeyboardInterrupt("SIGTERM")  # reaches waitForNode (-> sendInt) or the command loop (-> run)

    def _note_interrupt(self) -> None:
        """After a KeyboardInterrupt: ends the CLI if it was SIGTERM or the network lost a helper process."""
        if self.testbed is not None and self.testbed.helper_died:
            error(f"*** {self.testbed.helper_died}: leaving the CLI\n")
            self.terminating = True

    def settle(self) -> None:
        """Leaves no node mid-command: Mininet asserts that none is when it stops them, and teardown runs commands in
        the nodes' shells (behind a command still running, they would wait for it). Interrupts each node's command
        (Ctrl-C); one that ignores that for SETTLE_S is killed with all the node's shell started (the shells have
        no job control: the foreground and background jobs are one process group)."""
        for node in self.mn.values():
            if node.shell is None:
                continue
            readable = select.poll()  # POLLIN only: Node.monitor's own poll also says "writable", then blocks reading
            readable.register(node.stdout, select.POLLIN)
            interrupt_until, next_s = time.monotonic() + SETTLE_S, 0.0
            while node.waiting and time.monotonic() < interrupt_until + SETTLE_S:
                if time.monotonic() >= next_s:
                    if time.monotonic() < interrupt_until:
                        node.sendInt()
                    elif not getattr(node, "isRemote", False):  # a remote node's shell is a local ssh
                        _kill_descendants(node.shell.pid)
                    next_s = time.monotonic() + 0.2
                if readable.poll(200):
                    try:
                        node.monitor()
                    except OSError:  # the shell is gone
                        break
            node.waiting = False

    def run(self) -> None:
        """Runs the command loop until exit, end of input or SIGTERM (Mininet's loops for ever on Ctrl-C)."""
        while not self.terminating:
            try:
                self.settle()
                if self.interactive:
                    subprocess.run(["stty", "echo", "sane", "intr", "^C"], check=False)
                self.cmdloop()
                break
            except KeyboardInterrupt:
                self._note_interrupt()
                if not self.terminating:
                    output("\nInterrupt\n")

    def initReadline(self) -> None:  # noqa: N802 (Mininet's name)
        """Command history only at a terminal (Mininet would also write ~/.mininet_history for a pipe)."""
        if self.interactive:
            CLI.initReadline()

    def onecmd(self, line: str) -> bool:
        """Runs one command; an error in it is printed and the CLI carries on (Mininet's would end)."""
        if self.terminating:
            return True
        try:
            return bool(CLI.onecmd(self, line))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a typo'd node in `py`, a bad argument: report, keep the network up
            error(f"*** {type(exc).__name__}: {exc}\n")
            return False

    def postcmd(self, stop: bool, line: str) -> bool:
        return bool(stop) or self.terminating

    def waitForNode(self, node) -> None:  # noqa: N802
        """Prints a node's output until its command ends; Ctrl-C interrupts the command. SIGTERM (or a dying helper)
        interrupts it and ends the waiting (`settle` then kills it if it ignores Ctrl-C). Keystrokes go to the command
        only at a terminal: from a pipe they are the next commands (and Mininet's spins at EOF)."""
        poller = select.poll()
        poller.register(node.stdout, select.POLLIN)
        keys = self.stdin.fileno() if self.interactive else None
        if keys is not None:
            poller.register(keys, select.POLLIN)
            subprocess.run(["stty", "-icanon", "min", "1"], check=False)  # by character, as Mininet's
        while node.waiting and not self.terminating:
            try:
                for fd, _ in poller.poll():
                    if fd != keys:
                        output(node.monitor())
                    elif key := self.stdin.read(1):
                        node.write(key)
                    else:  # the terminal is gone
                        poller.unregister(keys)
            except KeyboardInterrupt:
                node.sendInt()
                self._note_interrupt()

    # -- commands ----------------------------------------------------------------------------------

    def do_source(self, line: str) -> bool:
        """Read commands from a file; `exit` in it ends the CLI. Usage: source <file>"""
        args = line.split()
        if len(args) != 1:
            error("usage: source <file>\n")
            return False
        try:
            lines = Path(args[0]).read_text().splitlines()
        except OSError as exc:
            error(f"cannot read {args[0]}: {exc.strerror}\n")
            return False
        for raw in lines:
            if self.terminating:
                return True
            try:
                if self.onecmd(self.precmd(raw)):
                    return True
            except KeyboardInterrupt:
                self._note_interrupt()
                output("\n*** script interrupted\n")
                return self.terminating
        return False

    def do_link(self, line: str) -> None:
        """Bring the link(s) between two nodes up or down; switches by bridge or site name.
        Usage: link node1 node2 [up/down]"""
        args = line.split()
        sites = {sw.site: sw.bridge for sw in self.testbed.plan.switches} if self.testbed is not None else {}
        CLI.do_link(self, " ".join(sites.get(a, a) for a in args[:2]) + " " + " ".join(args[2:]))

    def do_links(self, _line: str) -> None:
        """Report on links: each end's state, and each wire's process."""
        for link in self.mn.links:
            output(f"{link} {link.status()}\n")

    def do_switch(self, line: str) -> None:
        """Stop or start a switch (its own bridge only); starting it re-applies and re-checks the shaping.
        Usage: switch <switch name> {start, stop}"""
        CLI.do_switch(self, line)
        if line.split()[1:2] == ["start"]:
            problems = self.mn.shaping_problems()
            for p in problems:
                error(f"*** not shaped as planned: {p}\n")
            if not problems:
                output("shaping checked: as planned\n")

    def do_iperf(self, line: str) -> None:
        """TCP throughput from one host to another with iperf, its server stopped by pid afterwards.
        Usage: iperf src dst [seconds]"""
        args = line.split()
        if len(args) not in (2, 3) or any(a not in self.mn for a in args[:2]):
            error("usage: iperf src dst [seconds] (two host names)\n")
            return
        src, dst = self.mn[args[0]], self.mn[args[1]]
        seconds = float(args[2]) if len(args) == 3 else 5.0
        server = dst.popen(["iperf", "-s", "-p", str(IPERF_PORT), "-B", dst.IP()],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            out = src.cmd(f"timeout {seconds + 15:.0f} iperf -c {dst.IP()} -p {IPERF_PORT} -t {seconds:g} -y C")
            rows = [r for r in out.splitlines() if r.count(",") >= 8]
            mbps = float(rows[-1].split(",")[8]) / 1e6 if rows else None
            output(f"*** iperf {src.name} -> {dst.name}: "
                   + (f"{mbps:.1f} Mbit/s\n" if mbps is not None else f"no result:\n{out}\n"))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(5)
            if server.poll() is None:
                server.kill()
                server.wait()

    def _refuse(self, what: str, instead: str) -> None:
        error(f"*** {what} is disabled in the testbed CLI: {instead}\n")

    def do_iperfudp(self, _line: str) -> None:
        """(disabled) Mininet's runs `killall -9 iperf` on the whole machine."""
        self._refuse("iperfudp", "run `DST iperf -u -s &` and `SRC iperf -u -c DST -b 10M` on the hosts")

    def do_xterm(self, _line: str, term: str = "xterm") -> None:
        """(disabled) stopping Mininet's terminals runs `pkill -9 -f mnexec.*socat` on the whole machine."""
        self._refuse(term, "use `ip netns exec <namespace> bash` from another terminal (namespaces: `py tb`)")

    def do_gterm(self, line: str) -> None:
        """(disabled) see xterm."""
        self.do_xterm(line, term="gterm")

    def do_x(self, line: str) -> None:
        """(disabled) see xterm."""
        self.do_xterm(line, term="x")

    def getLocals(self) -> dict:  # noqa: N802
        """`py`'s names: Mininet's (`net`, the nodes) and `tb`, the EmulatedNetwork (use net.get('worker-ant1'):
        a hyphen is a minus in Python)."""
        names = CLI.getLocals(self)
        names["tb"] = self.testbed
        return names

    def _banner(self, mininet) -> None:
        if self.testbed is None:
            return
        output("*** testbed CLI: hosts " + " ".join(h.name for h in self.testbed.plan.hosts) + "\n")
        output("*** switches (Mininet nodes named by bridge): " + ", ".join(
            f"{sw.bridge} = {sw.site}" for sw in self.testbed.plan.switches) + "\n")
        tdf = getattr(self.testbed, "tdf", 1.0)
        if tdf != 1.0:
            output(dilation_banner(tdf) + "\n")
        output("*** `help` lists the commands; `exit` or end of input tears the network down\n")


def dilation_banner(tdf: float) -> str:
    """Returns the CLI's line about a time-dilated network (factor `tdf`)."""
    return (f"*** time dilation factor {tdf:g}: delays, rates and round trips seen here are real time, {tdf:g} x "
            f"the topology's delays and 1/{tdf:g} of its rates (divide by {tdf:g} for virtual time)")


def _kill_descendants(pid: int) -> None:
    """SIGKILLs every process below `pid` (a node's shell)."""
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
