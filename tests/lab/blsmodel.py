"""A MODEL of RHEL's GRUB ``blscfg`` order, for the one lab host whose boot it decides.

Debian's GRUB 2.14 has a ``blscfg`` (upstream's, module blsuki) and the lab boots BLS hosts
through it wherever it agrees with RHEL's (saved_entry naming an entry by id). Where the
order of the entries decides (no saved_entry, or a numeric default), upstream sorts the entry
file names with gnulib's filevercmp, while RHEL's/Fedora's patched blscfg splits each file
name (without ``.conf``) as an rpm name-version-release at its last two dashes and sorts with
rpm's version comparison, newest first. RHEL's GRUB cannot be had here (not in Debian nor
on PyPI), so for such a host the lab translates the BLS entries, in that order, into plain
``menuentry`` blocks in place of the ``blscfg`` line of the DISK-IMAGE COPY of grub.cfg, and
real GRUB 2.06 boots that. The comparison is rpm's own (``rpm.labelCompare`` from Debian's
python3-rpm); no parser of kvm-drivers is used.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path

from tests.lab.bases import run
from tests.lab.hosts import HostSpec

RPM_PYTHON = "/usr/bin/python3"  # Debian's python3, where python3-rpm is installed
COMPARE = """import json, sys, rpm
pairs = json.load(sys.stdin)
print(json.dumps([rpm.labelCompare(("0", a[0], a[1]), ("0", b[0], b[1])) for a, b in pairs]))
"""


def split_nvr(stem: str) -> tuple[str, str, str]:
    """name, version, release of an entry file name, split at its last two dashes."""
    rest, _, release = stem.rpartition("-")
    name, _, version = rest.rpartition("-")
    return name, version, release


def rpm_order(stems: list[str]) -> list[str]:
    """stems sorted as RHEL's blscfg sorts them: (name, version, release) with rpm's vercmp, newest first."""
    pairs = [(a, b) for a in stems for b in stems]
    query = [((x[0], ""), (y[0], "")) for x, y in ((split_nvr(a), split_nvr(b)) for a, b in pairs)]
    query += [((x[1], x[2]), (y[1], y[2])) for x, y in ((split_nvr(a), split_nvr(b)) for a, b in pairs)]
    out = subprocess.run([RPM_PYTHON, "-c", COMPARE], input=json.dumps(query), capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    results = json.loads(out)
    by_name = dict(zip(pairs, results[: len(pairs)]))
    by_vr = dict(zip(pairs, results[len(pairs) :]))

    def cmp(a: str, b: str) -> int:
        return by_name[(a, b)] or by_vr[(a, b)]

    return sorted(stems, key=functools.cmp_to_key(cmp), reverse=True)


def entry_keys(text: str) -> dict[str, list[str]]:
    """The key/value lines of a BLS entry."""
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            keys.setdefault(parts[0], []).append(parts[1])
    return keys


def translate(grub_cfg: str, entries_dir: Path) -> str:
    """grub.cfg with its ``blscfg`` line replaced by the entries as menuentry blocks, in RHEL's order."""
    texts = {p.name[: -len(".conf")]: p.read_text() for p in entries_dir.glob("*.conf")}
    blocks = ["# lab MODEL of RHEL's blscfg: entries in rpm version order (tests/lab/blsmodel.py)"]
    for stem in rpm_order(list(texts)):
        keys = entry_keys(texts[stem])
        if "linux" not in keys:
            continue
        args = " ".join(keys.get("grub_arg", []))
        classes = " ".join(f"--class {c}" for c in keys.get("grub_class", []))
        title = keys.get("title", [stem])[0].replace("'", "")
        blocks += [f"menuentry '{title}' {classes} {args} --id '{stem}' {{",
                   f"\tlinux {keys['linux'][0]} {' '.join(keys.get('options', []))}",
                   *([f"\tinitrd {' '.join(keys['initrd'])}"] if "initrd" in keys else []), "}"]  # fmt: skip
    lines = grub_cfg.splitlines()
    out = [ln for ln in lines if ln.strip() not in ("blscfg", "insmod blscfg")]
    at = next(i for i, ln in enumerate(lines) if ln.strip() == "blscfg")
    at -= sum(1 for ln in lines[:at] if ln.strip() == "insmod blscfg")
    return "\n".join(out[:at] + blocks + out[at:]) + "\n"


def make_disk(h: HostSpec, tree: Path, image: Path):
    """The host's boot disk (boot.make_disk), with the translated grub.cfg in the image's copy."""
    from tests.lab import boot

    disk = boot.make_disk(h, tree, image)
    if h.disk != "split":
        raise ValueError(f"{h.name}: the BLS model handles a separate /boot partition only")
    cfg = translate((tree / "boot/grub2/grub.cfg").read_text(), tree / "boot/loader/entries")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(cfg)
    try:
        run(["debugfs", "-w", "-f", "-", f"{image}?offset={boot.MiB}"],
            input=f"cd /grub2\nrm grub.cfg\nwrite {f.name} grub.cfg\n")  # fmt: skip
    finally:
        os.unlink(f.name)
    return disk
