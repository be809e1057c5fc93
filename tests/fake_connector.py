"""A pyinfra connector for tests of the check CLI without hosts: ``@fake/NAME`` hosts whose inventory
data ``fake`` says how the host behaves, and a runner that starts the CLI in a subprocess with it.

fake: "drifted" (answers a captured Debian 12 gather output), "compliant" (the same, with every driver
declared and in the initrd), "cut" (the output stops half-way), "fail" (the command exits 1), "raise"
(the connector raises), "hang" (never answers), "noconnect" (connecting fails), "prompt" (asks for a
sudo password, as pyinfra does when sudo needs one), "answer:PATH" (answers the lines of the file PATH,
e.g. a crafted answer of tests/crafted.py, handed over in chunks as a connection would).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pyinfra.api.exceptions import ConnectError
from pyinfra.connectors.base import BaseConnector
from pyinfra.connectors.util import CommandOutput, OutputLine, execute_command_with_sudo_retry

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures" / "gather-bookworm-itools.txt"
NEEDED = ["virtio_blk", "virtio_ring", "virtio", "virtio_scsi", "scsi_mod", "scsi_common", "virtio_net",
          "net_failover", "failover", "virtio_pci", "virtio_pci_legacy_dev", "virtio_pci_modern_dev"]  # fmt: skip


def gather_output(kind: str) -> list[str]:
    """The captured gather output of a drifted Debian 12 host, or of the same host made compliant."""
    lines = FIX.read_text().splitlines()
    if kind == "compliant":
        at = lines.index("m xen_netfront") + 1
        lines[at:at] = [f"m {m}" for m in NEEDED]
        at = lines.index("xen-netfront") + 1
        lines[at:at] = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]
    elif kind == "cut":
        lines = lines[: len(lines) // 2]
    return lines


class FakeConnector(BaseConnector):
    """Behaves as its host's ``fake`` data says."""

    handles_execution = True

    @staticmethod
    def make_names_data(name=None):
        yield name, {}, []

    def connect(self) -> None:
        if self.host.data.get("fake") == "noconnect":
            raise ConnectError("Could not connect (fake: connection refused)")

    def run_shell_command(self, command, print_output=False, print_input=False, **arguments):
        import gevent

        kind = self.host.data.get("fake", "drifted")
        if kind == "hang":
            gevent.sleep(3600)
        if kind == "raise":
            raise RuntimeError("fake connector exploded")
        if kind == "fail":
            return False, CommandOutput([OutputLine("stderr", "sh: 1: gather: Permission denied")])
        if kind == "prompt":
            out = CommandOutput([OutputLine("stderr", "sudo: a password is required")])
            return execute_command_with_sudo_retry(self.host, arguments, lambda: (1, out))
        gevent.sleep(0.01)
        if kind.startswith("answer:"):
            out: list[OutputLine] = []
            with open(kind[len("answer:") :]) as answer:
                for n, line in enumerate(answer):
                    out.append(OutputLine("stdout", line.rstrip("\n")))
                    if n % 20000 == 0:
                        gevent.sleep(0)  # as reading from a connection does: others run meanwhile
            return True, CommandOutput(out)
        return True, CommandOutput([OutputLine("stdout", line) for line in gather_output(kind)])

    def put_file(self, *args, **kwargs):
        raise NotImplementedError

    def get_file(self, *args, **kwargs):
        raise NotImplementedError


def install() -> None:
    """Make ``@fake/NAME`` inventory names use FakeConnector."""
    from pyinfra.api import inventory

    real_all, real_exec = inventory.get_all_connectors, inventory.get_execution_connectors
    inventory.get_all_connectors = lambda: {**real_all(), "fake": FakeConnector}
    inventory.get_execution_connectors = lambda: {**real_exec(), "fake": FakeConnector}


RUNNER = "import sys, tests.fake_connector as f; f.install(); from kvm_drivers.cli.check import main; sys.exit(main())"


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    """The check CLI in a subprocess (as cron runs it) with the fake connector; stdin is not a terminal."""
    env = {**os.environ, "KVM_DRIVERS_CACHE": "off", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
