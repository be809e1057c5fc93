"""Shared fixtures: the lab of real hosts (built once, cached), and a pyinfra runner."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# pyinfra runs of the suite keep their control-side cache apart from the user's own (removed at exit).
CACHE = os.environ.get("KVM_DRIVERS_CACHE") or tempfile.mkdtemp(prefix="kvm-drivers-test-cache-")
if not os.environ.get("KVM_DRIVERS_CACHE"):
    atexit.register(shutil.rmtree, CACHE, ignore_errors=True)


@dataclass
class Run:
    """One pyinfra run: its exit code, output and per-operation result counts."""

    returncode: int
    output: str
    results: list[dict[str, str]]

    def changed(self) -> int:
        """Number of host-operations that changed something."""
        return sum(int(r["success"]) for r in self.results if r["success"].isdigit())

    def errors(self) -> int:
        """Number of host-operations that failed."""
        return sum(int(r["error"]) for r in self.results if r["error"].isdigit())


def parse_results(output: str) -> list[dict[str, str]]:
    """The '--> Results:' table of pyinfra's output, a row per operation: {name, hosts, success, error,
    nochange}. Two rows may have the same name (pyinfra names a merged operation by any one of its names)."""
    table = output.split("--> Results:", 1)[-1].split("--> Disconnecting", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) == 5 and cols[0] != "Grand total":
            rows.append(dict(zip(("name", "hosts", "success", "error", "nochange"), cols)))
    return rows


def pyinfra(*args: str, timeout: int = 1200) -> Run:
    """Run the pyinfra CLI from the repository root, as a user would."""
    cmd = [sys.executable, "-m", "pyinfra", *args]
    env = {**os.environ, "KVM_DRIVERS_CACHE": CACHE}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    out = proc.stdout + proc.stderr
    return Run(proc.returncode, out, parse_results(out))


def pytest_collection_modifyitems(config, items):
    """KVM_LAB=0: every test marked lab is skipped (not only those using the lab fixture), even when
    selected (plain pytest deselects them anyway: pyproject.toml's addopts)."""
    if os.environ.get("KVM_LAB", "1") == "0":
        for item in items:
            if item.get_closest_marker("lab"):
                item.add_marker(pytest.mark.skip(reason="KVM_LAB=0: lab tests disabled"))


def check_cli(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run ``kvm-drivers check ARGS`` (as python3 -m kvm_drivers) from the repository root, stdin closed."""
    cmd = [sys.executable, "-m", "kvm_drivers", "check", *args]
    env = {**os.environ, "KVM_DRIVERS_CACHE": CACHE}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def check_rows(inventory: str, report: Path) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """``kvm-drivers check INVENTORY --report REPORT`` (a .json path) and the report's rows by host."""
    report.parent.mkdir(parents=True, exist_ok=True)
    run = check_cli(inventory, "--report", str(report))
    return run, {r["host"]: r for r in json.loads(report.read_text())["hosts"]}


@pytest.fixture(scope="session")
def lab():
    """Every lab host up, fresh, for the session; stopped afterwards whatever happens."""
    if os.environ.get("KVM_LAB", "1") == "0":
        pytest.skip("KVM_LAB=0: lab tests disabled")
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    from tests.lab import hosts

    try:
        yield hosts.up()
    finally:
        hosts.down()


@pytest.fixture
def started(request):
    """Start the given lab host specs fresh; stop them after the test. Returns their inventory
    (group named after the test module: test_lab_faults.py -> faults)."""
    from tests.lab import hosts

    group = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_lab_")
    specs: list = []

    def start(*new) -> Path:
        for h in new:
            hosts.start(h)
            specs.append(h)
        return hosts.write_inventory(list(new), group)

    yield start
    for h in specs:
        hosts.stop(h)
