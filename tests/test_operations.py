"""The operations, table-driven (tests/operations/<operation>/*.json, see the README there): arguments
and the host's state in, commands or a no-op or a refusal out. Plus --diff of a declaration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import OperationError, QuoteString
from pyinfra.context import ctx_host, ctx_state

from kvm_drivers import hostside
from kvm_drivers.facts.kvm_drivers import KvmDrivers
from kvm_drivers.facts.state import HostState
from kvm_drivers.operations import kvm_drivers as ops

CASES = sorted((Path(__file__).parent / "operations").glob("*/*.json"))
SCRIPTS = {hostside.WRITE: "@write.sh", hostside.REBUILD: "@rebuild.sh", hostside.UNBLACKLIST: "@unblacklist.sh",
           hostside.LISTER: "@initrd_ls.py"}  # fmt: skip


class FakeHost:
    """What an operation reaches of pyinfra's host: facts, no-ops, logs."""

    name = "fake"
    print_prefix = "[fake] "

    def __init__(self, facts: dict) -> None:
        self.facts = facts
        self.fact_calls: list[tuple[str, dict]] = []
        self.noops: list[str] = []

    def get_fact(self, cls, **kwargs):
        self.fact_calls.append((cls.__name__, kwargs))
        return HostState.from_dict(self.facts[cls.__name__])

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def log(self, message: str, log_func=logging.info) -> None:
        log_func(f"{self.print_prefix}{message}")


def words(command) -> list[str]:
    """A command's words, script texts shown by name."""
    out = []
    for bit in command.bits:
        value = bit.obj if isinstance(bit, QuoteString) else bit
        out.append(SCRIPTS.get(value, value))
    return out


def run(name: str, args: dict, state: HostState | None, fake: FakeHost, diff: bool = False) -> list[list[str]]:
    config = SimpleNamespace(DIFF=diff)
    with ctx_host.use(fake), ctx_state.use(SimpleNamespace(config=config)):
        return [words(c) for c in getattr(ops, name)._inner(**args, state=state)]


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_operation(path: Path):
    case = json.loads(path.read_text())
    state = HostState.from_dict(case["state"]) if "state" in case else None
    fake = FakeHost(case.get("facts", {}))
    if "error" in case:
        with pytest.raises(OperationError, match=None) as exc:
            run(path.parent.name, case["args"], state, fake)
        assert case["error"] in str(exc.value)
        return
    commands = run(path.parent.name, case["args"], state, fake)
    assert commands == case.get("commands", [])
    assert fake.noops == ([case["noop"]] if "noop" in case else [])
    if "fact_args" in case:  # the operation gathered the state itself, asking for what it needs
        assert fake.fact_calls == [(KvmDrivers.__name__, case["fact_args"])]
    else:
        assert fake.fact_calls == []


def test_every_operation_has_table_cases():
    names = {p.parent.name for p in CASES}
    assert names == {"declare_drivers", "rebuild_initrd", "disable_modprobe_lines"}
    assert all(len([p for p in CASES if p.parent.name == n]) >= 3 for n in names)


def test_declaration_change_shows_as_a_unified_diff_with_pyinfra_diff(caplog):
    state = HostState.from_dict({
        "generator": "initramfs-tools",
        "declared": {"path": "/etc/initramfs-tools/modules", "drivers": ["ext4"], "current": "ext4\nxfs\n"},
    })
    caplog.set_level(logging.INFO)
    run("declare_drivers", {"drivers": ["virtio_blk"]}, state, FakeHost({}), diff=True)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Will modify /etc/initramfs-tools/modules" in text
    assert "@@ -1,2 +1,4 @@" in text
    assert "+ virtio_blk" in text and "+ # kvm-drivers: virtio drivers needed to boot on KVM" in text
    assert "  ext4" in text and "  xfs" in text  # context lines
    caplog.clear()
    evil = HostState.from_dict({**state.to_dict(), "declared": {**state.to_dict()["declared"],
                                                                "current": "ext4\x1b[2J\nxfs\n"}})  # fmt: skip
    run("declare_drivers", {"drivers": ["virtio_blk"]}, evil, FakeHost({}), diff=True)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ext4\\x1b[2J" in text and "\x1b[2J" not in text  # the host's escape shown, never sent to the terminal
    caplog.clear()
    run("declare_drivers", {"drivers": ["virtio_blk"]}, state, FakeHost({}), diff=False)
    assert "Will modify" not in "\n".join(r.getMessage() for r in caplog.records)


def test_an_unnamed_operation_is_named_briefly():
    # pyinfra names an operation without name= after str() of its arguments: never the whole state.
    distro = {"id": "debian", "name": "Debian", "version": "12", "family": "debian"}
    state = HostState.from_dict({"distro": distro, "kernels": [{"version": "6.1.0-50-amd64"}]})
    assert str(state) == "<state: debian 12, 1 kernel(s)>"
