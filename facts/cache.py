"""Control-side cache, so that nightly drift checks stay one cheap command per host.

Two things are kept per host, in one small JSON file under $KVM_DRIVERS_CACHE (default
~/.cache/kvm-drivers; KVM_DRIVERS_CACHE=off disables it):

- initrd listings: listing an initrd means decompressing all of it, and its module list only
  changes when the file does. The gather script is told which "path|size|mtime|ctime" keys
  we know and skips those (ctime cannot be set from user space: any rewrite changes the key).
  What the image's own modprobe.d and command-line files say is kept with its listing (it is
  read at the same time); a listing whose files could not be read is not kept.
- the state of the last complete answer and its fingerprint (see hostside/gather.sh): when the
  host reports the same fingerprint, it sends only its live values, and that state (checked
  again when read back: the file is input like any other) stands, without parsing anything.
  With it, the paths the host's bootloader files named (``watch``): sent back with the known
  keys, so that the host fingerprints them too (a symbolic link pointed elsewhere shows).

The cache is only used while it is ours: the directory and each file must be owned by the user
running kvm-drivers and writable by nobody else (a shared KVM_DRIVERS_CACHE would otherwise let
another local user plant a listing or a state), and a file must be a regular file reached without
following a link. Anything else is ignored (the host is then asked for a full answer, a cold
gather), with one warning per cache directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from kvm_drivers.facts.state import HostState, shape_problems
from kvm_drivers.facts.wire import (
    CMDLINE_WORD,
    CONF_TEXT,
    DIGITS,
    INITRD_CMDLINE_FILE,
    INITRD_CONF_FILE,
    MARK,
    MODULE_NAME,
    Snapshot,
)

WATCHED = re.compile(r"^/[A-Za-z0-9._@+,:=~/-]{1,1023}$")  # a path gather.sh stats (plain names only)
LOG = logging.getLogger("kvm_drivers.cache")
_warned: set[str] = set()  # cache directories already warned about (once per process each)
# Bytes of one host's cache file. It is read in the control process, where every host runs (a real
# host's is well under 1 MiB): a larger one is neither written nor read (the host is asked again).
CACHE_MAX = 8 * 1024 * 1024


@dataclass
class HostCache:
    """What is cached for one host."""

    listings: dict[str, dict] = field(default_factory=dict)  # key -> {modules, kernel_dirs, ...}
    snapshot: dict = field(default_factory=dict)  # {version, fingerprint, watch, state} as stored
    state: HostState | None = None  # snapshot["state"], read back and checked


def cache_dir() -> Path | None:
    """Where the cache is kept, or None when caching is off."""
    value = os.environ.get("KVM_DRIVERS_CACHE", "")
    if value.lower() in ("off", "0", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "kvm-drivers"


def _file(host_name: str) -> Path | None:
    """One file per exact host name (a hash of it: 'db:1' and 'db_1' never share a file)."""
    root = cache_dir()
    readable = re.sub(r"[^A-Za-z0-9_.@-]", "_", host_name)[:40]
    digest = hashlib.sha256(host_name.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return root / f"{readable}-{digest}.json" if root else None


def _warn_once(root: Path, problem: str) -> None:
    if str(root) not in _warned:
        _warned.add(str(root))
        LOG.warning("kvm-drivers: %s: ignoring the cache there (every host gets a full gather)", problem)


def _ours(st: os.stat_result) -> str:
    """Why a cache directory or file is not ours alone ("" when it is)."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by uid {os.geteuid()} who runs kvm-drivers"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _open_dir(root: Path) -> int | None:
    """A descriptor of the cache directory, when it is ours alone (None otherwise)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    problem = _ours(os.fstat(fd))
    if problem:
        os.close(fd)
        _warn_once(root, f"cache directory {root} is {problem}")
        return None
    return fd


def _read(root: Path, name: str) -> dict | None:
    """The JSON of one cache file, read only when it and its directory are ours alone."""
    dir_fd = _open_dir(root)
    if dir_fd is None:
        return None
    try:  # no link followed, no FIFO waited on; what is checked is what is read
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _warn_once(root, f"cache file {root / name} is a symbolic link")
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        problem = "not a regular file" if not stat.S_ISREG(st.st_mode) else _ours(st)
        if not problem and st.st_size > CACHE_MAX:
            return None  # larger than kvm-drivers ever writes: the host is asked again
        if problem:
            _warn_once(root, f"cache file {root / name} is {problem}")
            return None
        return json.loads(f.read())


def load(host_name: str) -> HostCache:
    """The cache of one host (empty when missing, unreadable, or not ours alone)."""
    path = _file(host_name)
    try:
        data = _read(path.parent, path.name) if path else {}
    except (OSError, ValueError):
        return HostCache()
    if not isinstance(data, dict) or not isinstance(data.get("listings"), dict) or data.get("host") != host_name:
        return HostCache()  # unknown or older layout, or another host's: start again
    snapshot = data.get("snapshot") or {}
    state = None
    try:  # a state of the wrong shape is dropped: the host is then asked for a full answer
        state = HostState.from_dict(snapshot["state"]) if isinstance(snapshot, dict) else None
        if state is not None and shape_problems(state):
            state = None
    except (KeyError, TypeError, ValueError, AttributeError):
        state = None
    # A listing of the wrong shape is dropped: that initrd is then listed again by the host.
    listings = {key: entry for key, entry in data["listings"].items() if _valid_listing(entry)}
    return HostCache(listings, snapshot if state else {}, state)


def _valid_listing(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("modules"), list)
        and all(isinstance(m, str) and MODULE_NAME.match(m) for m in entry["modules"])
        and isinstance(entry.get("kernel_dirs"), list)
        and isinstance(entry.get("modprobe_files"), list)
        and isinstance(entry.get("lister"), str)
        and isinstance(entry.get("conf_read"), int)
        and not isinstance(entry["conf_read"], bool)
        and isinstance(entry.get("blocks"), list)
        and all(_valid_block(b) for b in entry["blocks"])
        and isinstance(entry.get("cmdline"), list)
        and all(_valid_word(w) for w in entry["cmdline"])
    )


def _valid_block(block: object) -> bool:
    """A module configuration line of an initrd as parse_snapshot keeps it (the cache file is input)."""
    return (
        isinstance(block, dict)
        and set(block) == {"file", "line", "driver", "text"}
        and all(isinstance(v, str) for v in block.values())
        and bool(INITRD_CONF_FILE.fullmatch(block["file"]) and DIGITS.fullmatch(block["line"]))
        and bool(MODULE_NAME.fullmatch(block["driver"]) and CONF_TEXT.fullmatch(block["text"]))
    )


def _valid_word(word: object) -> bool:
    return (
        isinstance(word, dict)
        and set(word) == {"file", "word"}
        and all(isinstance(v, str) for v in word.values())
        and bool(INITRD_CMDLINE_FILE.fullmatch(word["file"]) and CMDLINE_WORD.fullmatch(word["word"]))
    )


def seen(cached: HostCache, version: str) -> str:
    """The fingerprint to send to the host: that of our state, if made by this version of the code."""
    snap = cached.snapshot
    return snap.get("fingerprint", "") if snap.get("version") == version and cached.state is not None else ""


def watch(cached: HostCache, version: str) -> list[str]:
    """The paths to send with the known keys, for the host to fingerprint (those of our state)."""
    paths = cached.snapshot.get("watch", []) if seen(cached, version) else []
    return [x for x in paths if isinstance(x, str) and WATCHED.match(x)] if isinstance(paths, list) else []


def watched(snap: Snapshot) -> list[str]:
    """The paths an answer depends on beyond what gather.sh always looks at: the initrds and kernel
    images the bootloader files name, as written and under /boot (a separate /boot partition).
    """
    out = set()
    for path in [*snap.refs, *snap.kimages]:
        for candidate in (path, "/boot" + path):
            if WATCHED.match(candidate):
                out.add(candidate)
    return sorted(out)


def unchanged(cached: HostCache, output: list[str]) -> tuple[HostState, list[str]] | None:
    """(our state, the live lines) when output is the host's complete "unchanged" answer to our
    fingerprint; None otherwise (the answer is then parsed as it is).
    """
    for i, line in enumerate(output):
        if line.startswith(MARK + "unchanged "):
            fingerprint = line[len(MARK + "unchanged ") :]
            if cached.state is None or fingerprint != cached.snapshot.get("fingerprint") or output[i + 1 :] != [
                MARK + "end"
            ]:
                return None  # cannot happen unless the cache file changed under us, or the answer was cut
            return cached.state, output[:i]
    return None


def fill(cached: HostCache, snap: Snapshot) -> None:
    """Give the initrds the host did not list again ("cached") their listing from the cache."""
    for initrd in snap.initrds.values():
        if initrd.cached and initrd.key in cached.listings:
            entry = cached.listings[initrd.key]
            initrd.modules = set(entry["modules"])
            initrd.kernel_dirs = set(entry["kernel_dirs"])
            initrd.modprobe_files = list(entry["modprobe_files"])
            initrd.lister = entry["lister"] + " (cached)"
            initrd.blocks = [dict(b) for b in entry["blocks"]]
            initrd.cmdline = [dict(w) for w in entry["cmdline"]]
            initrd.conf_read, initrd.conf_error = entry["conf_read"], ""
        elif initrd.cached:
            initrd.error = "listing cache lost during the run; run again"


def save(host_name: str, cached: HostCache, snap: Snapshot, state: HostState, version: str) -> None:
    """Keep what this full answer taught: its initrd listings, and its state (without live values)
    when it can be trusted next time.
    """
    keep = {}
    for initrd in snap.initrds.values():
        if initrd.key and not initrd.error and not initrd.conf_error and initrd.conf_read is not None:
            keep[initrd.key] = {
                "modules": sorted(initrd.modules),
                "kernel_dirs": sorted(initrd.kernel_dirs),
                "modprobe_files": initrd.modprobe_files,
                "lister": initrd.lister.replace(" (cached)", ""),
                "blocks": initrd.blocks,
                "cmdline": initrd.cmdline,
                "conf_read": initrd.conf_read,
            }
    trusted = (snap.fingerprint and state.readable
               and not any(i.error or i.conf_error for i in snap.initrds.values()))  # fmt: skip
    snapshot = {"version": version, "fingerprint": snap.fingerprint, "watch": watched(snap),
                "state": state.to_dict()} if trusted else {}  # fmt: skip
    path = _file(host_name)
    if path and (keep != cached.listings or snapshot != cached.snapshot):
        text = json.dumps({"host": host_name, "listings": keep, "snapshot": snapshot})
        if len(text) <= CACHE_MAX:  # a larger one could not be read back: nothing is kept
            _write(path, text)


def _write(path: Path, text: str) -> None:
    """Replace one cache file, in a directory that is ours alone (made 0700 if open to others)."""
    try:  # private: it holds bootloader configurations (they may carry password hashes)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path.parent)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            path.parent.chmod(0o700)
        dir_fd = _open_dir(path.parent)
        if dir_fd is None:
            return  # another user's directory: nothing is written there
        try:
            tmp = f".tmp-{secrets.token_hex(8)}.json"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(text)
                os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                os.unlink(tmp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # a cache we cannot write only costs speed
