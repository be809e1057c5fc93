"""Control-side cache, so that nightly drift checks stay one cheap command per host.

Two things are kept per host, in one small JSON file under $KVM_DRIVERS_CACHE (default
~/.cache/kvm-drivers; KVM_DRIVERS_CACHE=off disables it):

- initrd listings: listing an initrd means decompressing all of it, and its module list only
  changes when the file does. The gather script is told which "path|size|mtime|ctime" keys
  we know and skips those (ctime cannot be set from user space: any rewrite changes the key).
- the last complete gather output and its fingerprint (see facts/gather.sh): when the host
  reports the same fingerprint, it sends only its live values and this copy is used.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from facts.parsers import MARK, MODULE_NAME, Snapshot


@dataclass
class HostCache:
    """What is cached for one host."""

    listings: dict[str, dict] = field(default_factory=dict)  # key -> {modules, kernel_dirs, ...}
    snapshot: dict = field(default_factory=dict)  # {version, fingerprint, lines}


def cache_dir() -> Path | None:
    """Where the cache is kept, or None when caching is off."""
    value = os.environ.get("KVM_DRIVERS_CACHE", "")
    if value.lower() in ("off", "0", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "kvm-drivers"


def _file(host_name: str) -> Path | None:
    root = cache_dir()
    return root / (re.sub(r"[^A-Za-z0-9_.@-]", "_", host_name) + ".json") if root else None


def load(host_name: str) -> HostCache:
    """The cache of one host (empty when missing or unreadable)."""
    path = _file(host_name)
    try:
        data = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return HostCache()
    if not isinstance(data, dict) or not isinstance(data.get("listings"), dict):
        return HostCache()  # unknown or older layout: start again
    snapshot = data.get("snapshot") or {}
    if not (isinstance(snapshot, dict) and isinstance(snapshot.get("lines", []), list)
            and all(isinstance(line, str) for line in snapshot.get("lines", []))):  # fmt: skip
        snapshot = {}
    # A listing of the wrong shape is dropped: that initrd is then listed again by the host.
    listings = {key: entry for key, entry in data["listings"].items() if _valid_listing(entry)}
    return HostCache(listings, snapshot)


def _valid_listing(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("modules"), list)
        and all(isinstance(m, str) and MODULE_NAME.match(m) for m in entry["modules"])
        and isinstance(entry.get("kernel_dirs"), list)
        and isinstance(entry.get("modprobe_files"), list)
        and isinstance(entry.get("lister"), str)
    )


def seen(cached: HostCache, version: str) -> str:
    """The fingerprint to send to the host: that of our copy, if made by this gather script."""
    snap = cached.snapshot
    return snap.get("fingerprint", "") if snap.get("version") == version and snap.get("lines") else ""


def expand(cached: HostCache, output: list[str]) -> list[str]:
    """The output with an "unchanged" answer replaced by our copy (live values kept)."""
    for i, line in enumerate(output):
        if line.startswith(MARK + "unchanged "):
            if line[len(MARK + "unchanged ") :] != cached.snapshot.get("fingerprint"):
                break  # cannot happen unless the cache file changed under us: parse as is
            return output[:i] + cached.snapshot["lines"]
    return output


def apply(host_name: str, cached: HostCache, snap: Snapshot, output: list[str], version: str) -> None:
    """Fill the cached initrds of snap from the listings, then save what this run learnt."""
    keep = {}
    for initrd in snap.initrds.values():
        if initrd.cached and initrd.key in cached.listings:
            entry = cached.listings[initrd.key]
            initrd.modules = set(entry["modules"])
            initrd.kernel_dirs = set(entry["kernel_dirs"])
            initrd.modprobe_files = list(entry["modprobe_files"])
            initrd.lister = entry["lister"] + " (cached)"
        elif initrd.cached:
            initrd.error = "listing cache lost during the run; run again"
        if initrd.key and not initrd.error:
            keep[initrd.key] = {
                "modules": sorted(initrd.modules),
                "kernel_dirs": sorted(initrd.kernel_dirs),
                "modprobe_files": initrd.modprobe_files,
                "lister": initrd.lister.replace(" (cached)", ""),
            }
    snapshot = cached.snapshot
    start = next((i for i, line in enumerate(output) if line.startswith(MARK + "fingerprint ")), None)
    if start is not None:  # a full answer: keep it if it can be trusted next time
        trusted = snap.fingerprint and snap.complete and not any(i.error for i in snap.initrds.values())
        lines = output[start + 1 :]
        snapshot = {"version": version, "fingerprint": snap.fingerprint, "lines": lines} if trusted else {}
    path = _file(host_name)
    if path and (keep != cached.listings or snapshot != cached.snapshot):
        try:  # private: it holds bootloader configurations (they may carry password hashes)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps({"listings": keep, "snapshot": snapshot}))
            tmp.replace(path)
        except OSError:
            pass  # a cache we cannot write only costs speed
