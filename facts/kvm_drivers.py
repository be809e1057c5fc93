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

Reading an answer is linear in its size, but a host may send up to OUTPUT_CAP bytes shaped to
be slow, and pyinfra runs every host in greenlets of one process: while one answer is read,
nothing else runs, and no host's time limit fires. So an answer larger than INLINE_MAX is read
in a child process (a fork: nothing is copied), waited for cooperatively, and killed at its time
limit: that host fails alone, with the cause, and the others go on. Small answers (every warm
"unchanged" answer) are read in place, as before.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shlex
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # not on every system: the reader's memory is then not capped
    resource = None  # type: ignore[assignment]

import gevent
import gevent.lock
from gevent import monkey
from gevent.socket import wait_read
from pyinfra.api import FactBase, QuoteString, ShortFactBase, StringCommand

from kvm_drivers.facts import cache
from kvm_drivers.facts.state import DEFAULT_LOOKUP, FALLBACK_INITRDS, HostState, failed_state, stored_state, with_live
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.hostside import GATHER, LISTER, SCRIPT_VERSION

OUTPUT_CAP = 32 * 1024 * 1024  # bytes of gather output accepted from one host
INLINE_MAX = 64 * 1024  # bytes (or lines) of an answer read in place; larger ones in a child process
READ_LIMIT = 60.0  # seconds reading one large answer may take (a real one takes well under one)
CHILD_MEMORY = 4 << 30  # bytes of address space the child reading an answer may add to what it starts with
STATE_MAX = 2 << 20  # bytes of the (pickled) state a child may send back (a real one: a few KiB): unpickling blocks
# A cached state is only reused with the gather script and the code that made it: the parsers and state.py.
STATE_CODE = ("wire.py", "distro.py", "config_files.py", "boot_entries.py", "grub_words.py", "grub_script.py",
              "grub_default.py", "rpmvercmp.py", "boot_menus.py", "state.py")  # fmt: skip
CACHE_VERSION = hashlib.sha256(
    (SCRIPT_VERSION + "".join((Path(__file__).parent / f).read_text() for f in STATE_CODE)).encode()
).hexdigest()[:16]


def gather_command(drivers: list[str], known: list[str] | None = None, seen: str = "", root: str = "/"
                   ) -> StringCommand:  # fmt: skip
    """The one remote command that gathers everything, for the POSIX shell pyinfra runs it in
    (the facts below set ``shell_executable = "sh"``): its arguments set, then gather.sh itself.

    drivers: the drivers to look up; known: initrd keys whose listing the caller has cached;
    seen: fingerprint of the caller's cached copy of the output (the host answers "unchanged" if equal);
    root: the directory that is the described system's "/" (KVM_ROOT: "/", the host itself, unless it
    is a disk image's tree: then nothing of the running system is read).
    """
    return StringCommand(
        f"KVM_ROOT={shlex.quote(root)};",  # always set: never one the host's environment holds
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


def read_answer(
    lines: list[str], host_cache: cache.HostCache | None = None, host_name: str = "", limit: float | None = None
) -> HostState:
    """The state one answer of gather.sh describes. With a host's cache: an "unchanged" answer is
    the cached state with the live values it brings, and what a full answer teaches is saved.
    Never raises: a host whose answer cannot be read is an error state, with the cause (but a
    gevent.Timeout of the caller passes through, its ``kvm_reading`` set to the answer's size).

    An answer of more than INLINE_MAX bytes is read in a child process, within ``limit`` seconds
    (default READ_LIMIT): past it, the child is killed and the host is an error.
    """
    size = sum(map(len, lines)) + len(lines) if len(lines) <= INLINE_MAX else None
    if size is not None and size >= OUTPUT_CAP:
        return failed_state(f"the host sent {size} bytes or more (limit {OUTPUT_CAP}): answer refused")
    if (size is None or size > INLINE_MAX) and hasattr(os, "fork"):
        return _read_apart(lines, host_cache, host_name, READ_LIMIT if limit is None else limit)
    return _read(lines, host_cache, host_name)


def _read(lines: list[str], host_cache: cache.HostCache | None, host_name: str) -> HostState:
    """read_answer() in this process."""
    try:
        size = sum(map(len, lines)) + len(lines)
        if size >= OUTPUT_CAP:
            return failed_state(f"the host sent {size} bytes or more (limit {OUTPUT_CAP}): answer refused")
        same = cache.unchanged(host_cache, lines) if host_cache is not None else None
        if same is not None:
            stored, live_lines = same
            live = parse_snapshot(live_lines)
            state = with_live(stored, live.meta, live.disks)
            if live.problems:
                bad = [f"malformed answer from the host: {x}" for x in live.problems]
                state = replace(state, errors=state.errors + bad, readable=False)
            return state
        snap = parse_snapshot(lines)
        if host_cache is not None:
            cache.fill(host_cache, snap)
        stored = stored_state(snap)
        if host_cache is not None:
            cache.save(host_name, host_cache, snap, stored, CACHE_VERSION)
        return with_live(stored, snap.meta, snap.disks)
    except Exception as exc:  # noqa: BLE001 - one host's odd answer must not stop the others
        return failed_state(f"could not make sense of the host's answer ({type(exc).__name__}: {exc})")


_fork = monkey.get_original("os", "fork") if hasattr(os, "fork") else None  # not gevent's: no child watcher
_waitpid = monkey.get_original("os", "waitpid")
_readers = gevent.lock.BoundedSemaphore(max(2, os.cpu_count() or 2))  # children at once (CPU, memory)


def _read_apart(lines: list[str], host_cache: cache.HostCache | None, host_name: str, limit: float) -> HostState:
    """_read() in a forked child, its result sent back pickled through a pipe that this greenlet
    waits on (other greenlets run meanwhile). The child is killed at ``limit`` seconds, or when
    the caller is interrupted (e.g. by its own gevent.Timeout, which then passes through).
    """
    size = f"{sum(map(len, lines)) + len(lines)} bytes" if len(lines) <= INLINE_MAX else f"{len(lines)} lines"
    try:
        with _readers:
            data = _in_child(lambda: _read(lines, host_cache, host_name), limit)
    except gevent.Timeout as exc:
        exc.kvm_reading = size  # type: ignore[attr-defined]  # for the caller's message
        raise
    except OSError as exc:  # no process could be started (EAGAIN, ENOMEM): not read, not a stall
        return failed_state(f"the host's answer ({size}) could not be read: no process to read it in ({exc})")
    if data is None:
        return failed_state(f"reading the host's answer ({size}) took more than {limit:g} s: answer refused")
    if len(data) > STATE_MAX:
        return failed_state(f"the host's answer ({size}) describes a state larger than {STATE_MAX} bytes: refused")
    try:
        kind, value = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - a child that died half-way sent a part
        return failed_state(f"could not make sense of the host's answer (its reader died: {type(exc).__name__})")
    if kind != "state":
        return failed_state(f"could not make sense of the host's answer ({value})")
    return value


def _in_child(work: Any, limit: float) -> bytes | None:
    """The pickled ("state", work()) or ("error", text) of a child process running work; None
    when it did not finish within limit seconds (it is then killed). Once more than STATE_MAX
    bytes have come, the child is killed and what came is returned.
    """
    rfd, wfd = os.pipe()
    try:
        pid = _fork()  # type: ignore[misc]
    except OSError:
        os.close(rfd)
        os.close(wfd)
        raise
    if pid == 0:  # the child: never yields to gevent's hub (the parent's loop), never returns
        try:
            os.close(rfd)
            try:
                soft, hard = resource.getrlimit(resource.RLIMIT_AS)
                with open("/proc/self/statm") as statm:
                    used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
                want = used + CHILD_MEMORY
                if soft == resource.RLIM_INFINITY or want < soft:
                    resource.setrlimit(resource.RLIMIT_AS, (want, hard))
            except (AttributeError, OSError, ValueError):  # no resource module, no /proc
                pass
            try:
                out = pickle.dumps(("state", work()), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError: say it, whatever it is
                out = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"[:300]))
            view = memoryview(out)
            while view:
                view = view[os.write(wfd, view) :]
        finally:
            os._exit(0)
    os.close(wfd)
    chunks: list[bytes] = []
    finished = False
    deadline = time.monotonic() + limit
    try:
        os.set_blocking(rfd, False)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                wait_read(rfd, timeout=left, timeout_exc=TimeoutError)
            except TimeoutError:
                return None
            try:
                chunk = os.read(rfd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                finished = True
                return b"".join(chunks)
            chunks.append(chunk)
            if sum(map(len, chunks)) > STATE_MAX:
                return b"".join(chunks)
    finally:
        os.close(rfd)
        _end_child(pid, kill=not finished)


def _end_child(pid: int, kill: bool) -> None:
    """Reap the child, killing it first if asked (or if it does not exit once done), without
    blocking the other greenlets.
    """
    for attempt in range(400):
        if kill and attempt in (0, 20):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            done, _ = _waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped (e.g. by a SIGCHLD handler of gevent's)
            return
        if done:
            return
        kill = kill or attempt >= 20  # done but not exiting after 0.1 s: stopped or stuck
        gevent.sleep(0.005)


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
    With ``_timeout``, reading the answer counts in it too (at most READ_LIMIT, at least 1 s).
    """
    started = time.monotonic()
    connector = getattr(host, "connector", None)
    if callable(getattr(type(connector), "gather_outside", None)):  # a disk image (kvm_drivers.image.connector)
        outside = connector.gather_outside  # read from outside the image; no cache
        timeout = fact_args.get("_timeout")
        lines = outside(gather_command(list(drivers or DEFAULT_LOOKUP), root=connector.kvm_image_root),
                        timeout=timeout if isinstance(timeout, (int, float)) else None)  # fmt: skip
        return None if lines is None else read_answer(lines, None, host.name)
    host_cache = cache.load(host.name)  # the host gathered from, whatever host is in context
    drivers = list(drivers or DEFAULT_LOOKUP)
    answer = host.get_fact(
        KvmAnswer, drivers=drivers, known=sorted(host_cache.listings) + cache.watch(host_cache, CACHE_VERSION),
        seen=cache.seen(host_cache, CACHE_VERSION),
        **fact_args,
    )  # fmt: skip
    if answer is None:
        return None
    limit = READ_LIMIT
    if isinstance(fact_args.get("_timeout"), (int, float)) and not isinstance(fact_args["_timeout"], bool):
        limit = min(READ_LIMIT, max(1.0, fact_args["_timeout"] - (time.monotonic() - started)))
    return read_answer(answer, host_cache, host.name, limit)


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
