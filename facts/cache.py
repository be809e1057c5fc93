"""Control-side cache of initrd listings, so that nightly drift checks stay one cheap command.

Listing an initrd means decompressing all of it; its module list only changes when the file
does. The gather script is told which "path|size|mtime|ctime" keys we already know and skips
those. ctime cannot be set from user space, so any rewrite of the file changes the key.
One small JSON file per host under $KVM_DRIVERS_CACHE (default ~/.cache/kvm-drivers);
KVM_DRIVERS_CACHE=off disables it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from facts.parsers import Snapshot


def cache_dir() -> Path | None:
    """Where listings are kept, or None when caching is off."""
    value = os.environ.get("KVM_DRIVERS_CACHE", "")
    if value.lower() in ("off", "0", "no"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "kvm-drivers"


def _file(host_name: str) -> Path | None:
    root = cache_dir()
    return root / (re.sub(r"[^A-Za-z0-9_.@-]", "_", host_name) + ".json") if root else None


def load(host_name: str) -> dict[str, dict]:
    """The cached listings of one host: key -> {modules, kernel_dirs, modprobe_files, lister}."""
    path = _file(host_name)
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def apply(host_name: str, known: dict[str, dict], snap: Snapshot) -> None:
    """Fill cached initrds of snap from known, then save the listings this snapshot holds."""
    keep = {}
    for initrd in snap.initrds.values():
        if initrd.cached and initrd.key in known:
            entry = known[initrd.key]
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
    path = _file(host_name)
    if path and keep != known:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(keep))
            tmp.replace(path)
        except OSError:
            pass  # a cache we cannot write only costs speed
