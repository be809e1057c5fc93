"""
pyinfra facts: the KVM-driver state of a host (distro, kernels, initrds, declared drivers).

Everything is gathered by ONE remote command (``hostside/gather.sh``) and returned as typed
state (``facts.state.HostState``); what to do about it is ``operations.plan.plan``.

- ``KvmDrivers`` is a pure pyinfra fact: command in, state out.
- ``gather_state(host, drivers)`` is the same with the control-side cache (facts/cache.py) of
  the host it is gathered from: a host whose state has not changed answers "unchanged" and its
  initrds are not listed again. The deploy and the fleet check use it; it is still one remote
  command (the ``KvmAnswer`` fact), and pyinfra's rules for facts (``_timeout``, ``_sudo``...)
  apply to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyinfra.api import FactBase, QuoteString, ShortFactBase, StringCommand

from facts import cache
from facts import parsers as p
from facts.state import DEFAULT_LOOKUP, FALLBACK_INITRDS, HostState, failed_state, stored_state, with_live
from hostside import GATHER, LISTER, SCRIPT_VERSION

OUTPUT_CAP = 32 * 1024 * 1024  # bytes of gather output accepted from one host
# A cached state is only reused with the gather script and the code that made it.
CACHE_VERSION = hashlib.sha256(
    (SCRIPT_VERSION + "".join((Path(__file__).parent / f).read_text() for f in ("parsers.py", "state.py"))).encode()
).hexdigest()[:16]


def gather_command(drivers: list[str], known: list[str] | None = None, seen: str = "") -> StringCommand:
    """The one remote command that gathers everything, for the POSIX shell pyinfra runs it in
    (the facts below set ``shell_executable = "sh"``): its arguments set, then gather.sh itself.

    drivers: the drivers to look up; known: initrd keys whose listing the caller has cached;
    seen: fingerprint of the caller's cached copy of the output (the host answers "unchanged" if equal).
    """
    return StringCommand(
        "set",
        "--",
        QuoteString(LISTER),
        QuoteString(" ".join(known or [])),
        QuoteString(seen),
        QuoteString(" ".join(FALLBACK_INITRDS)),
        str(OUTPUT_CAP),  # an answer past the cap is cut (no "end" line: an error), whatever the host holds
        *[QuoteString(d) for d in drivers],
        ";",
        GATHER,
    )


def read_answer(lines: list[str], host_cache: cache.HostCache | None = None, host_name: str = "") -> HostState:
    """The state one answer of gather.sh describes. With a host's cache: an "unchanged" answer is
    the cached state with the live values it brings, and what a full answer teaches is saved.
    Never raises: a host whose answer cannot be read is an error state, with the cause.
    """
    try:
        size = sum(len(line) + 1 for line in lines)
        if size >= OUTPUT_CAP:
            return failed_state(f"the host sent {size} bytes or more (limit {OUTPUT_CAP}): answer refused")
        same = cache.unchanged(host_cache, lines) if host_cache is not None else None
        if same is not None:
            stored, live_lines = same
            live = p.parse_snapshot(live_lines)
            state = with_live(stored, live.meta)
            if live.problems:
                bad = [f"malformed answer from the host: {x}" for x in live.problems]
                state = replace(state, errors=state.errors + bad, readable=False)
            return state
        snap = p.parse_snapshot(lines)
        if host_cache is not None:
            cache.fill(host_cache, snap)
        stored = stored_state(snap)
        if host_cache is not None:
            cache.save(host_name, host_cache, snap, stored, CACHE_VERSION)
        return with_live(stored, snap.meta)
    except Exception as exc:  # noqa: BLE001 - one host's odd answer must not stop the others
        return failed_state(f"could not make sense of the host's answer ({type(exc).__name__}: {exc})")


class KvmDrivers(FactBase[HostState]):
    """
    The KVM-driver state of a host, in one remote command (see ``facts.state.HostState``):
    distribution and family, initrd generator, installed kernels (newest first) with the initrd
    each one boots and, per looked-up driver, whether it is built in, a module (and its closure)
    or absent, and which of those modules the initrd holds; what the generator's configuration
    declares; modprobe.d lines that stop a driver; ``errors`` (the host cannot be fully checked
    or safely changed) and ``warnings``.

    + drivers: the drivers to look up (default: the virtio list and SUSE's ata_piix ata_generic)
    """

    shell_executable = "sh"  # gather.sh is POSIX sh, whatever the inventory's _shell_executable

    def command(self, drivers: list[str] | None = None) -> StringCommand:
        return gather_command(list(drivers or DEFAULT_LOOKUP))

    def process(self, output: list[str]) -> HostState:
        return read_answer(output)


class KvmAnswer(FactBase[list[str]]):
    """The raw answer of gather.sh, for callers that keep a cache of it (``gather_state``)."""

    shell_executable = "sh"

    def command(self, drivers: list[str], known: list[str] | None = None, seen: str = "") -> StringCommand:
        return gather_command(drivers, known, seen)

    def process(self, output: list[str]) -> list[str]:
        return list(output)


def gather_state(host: Any, drivers: list[str] | None = None, **fact_args: Any) -> HostState | None:
    """The state of host (a pyinfra Host), with its control-side cache; None when the command failed
    (pyinfra has then reported it). fact_args: pyinfra's fact arguments (``_timeout=300``...).
    """
    host_cache = cache.load(host.name)  # the host gathered from, whatever host is in context
    drivers = list(drivers or DEFAULT_LOOKUP)
    answer = host.get_fact(
        KvmAnswer, drivers=drivers, known=sorted(host_cache.listings) + cache.watch(host_cache, CACHE_VERSION),
        seen=cache.seen(host_cache, CACHE_VERSION),
        **fact_args,
    )  # fmt: skip
    return None if answer is None else read_answer(answer, host_cache, host.name)


class _Part(ShortFactBase[Any]):
    fact = KvmDrivers
    attr = ""

    def process_data(self, data: HostState) -> Any:
        return getattr(data, self.attr)


class Distro(_Part):
    """The host's distribution: ``id``, ``name``, ``version``, ``family``, ``reason``."""

    attr = "distro"


class Kernels(_Part):
    """Installed kernels, newest first, with their initrds and the drivers' kinds (``KernelState``)."""

    attr = "kernels"


class DeclaredDrivers(_Part):
    """What the initrd generator's configuration declares (``Declared``)."""

    attr = "declared"
