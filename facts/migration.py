"""
Beyond the initrd: what else decides whether one host boots and is reached on KVM (issue 20).

The snapshot's files are read with the pure readers of ``boot_path.py`` and ``network.py``:
device names in fstab and crypttab and on the default entry's kernel line (found in the file
that line lives in), ``/etc/default/grub`` for the next regeneration, a default kernel that cannot
run on KVM, Xen leftovers in module configuration, NIC rules and settings bound to the old MAC;
and, from the live disks section, the UEFI removable-media fallback. Each finding is a plain dict
(``Finding`` as data, JSON-ready and cacheable): ``{kind, severity, where, line, text, message, fix}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from kvm_drivers.facts import boot_path as bp
from kvm_drivers.facts import network
from kvm_drivers.facts.boot_entries import BootEntry
from kvm_drivers.facts.wire import Snapshot

GRUBENVS = ("/boot/grub2/grubenv", "/boot/grub/grubenv")
LEGACY_MENU = re.compile(r"/boot/grub/(?:menu\.lst|grub\.conf)")
DEFAULT_LINE = re.compile(r"(\s*default(?:\s*=\s*|\s+))(\d+)(\s*)")  # GRUB legacy: "default 0", "default=0"
KERNEL_LINE = re.compile(r"^\s*(?:linux|linux16|linuxefi|kernel|options|kernelopts=)")


def as_dict(f: bp.Finding) -> dict[str, Any]:
    """A finding as plain data (its fix too; copies as lists)."""
    out = asdict(f)
    if out["fix"] is not None:
        out["fix"]["copies"] = [list(c) for c in out["fix"]["copies"]]
    return out


def boot_files(snap: Snapshot) -> dict[str, str | None]:
    """The texts a boot-path fix may edit (or regenerate: grub.cfg), as read: kept with the state (a
    fix compares, then swaps).
    """
    keep = re.compile(r"^(?:/etc/fstab|/etc/crypttab|/etc/default/grub|/etc/sysconfig/kernel"
                      r"|/etc/modprobe\.(?:conf|d/.*)|/boot/grub2?/(?:grubenv|menu\.lst|grub\.conf|grub\.cfg)|/boot/efi/EFI/[^/]+/grub\.cfg"
                      r"|/boot/loader/entries/.*|/etc/udev/rules\.d/.*"
                      r"|/etc/sysconfig/network(?:-scripts)?/ifcfg-.*|/etc/netplan/.*|/etc/NetworkManager/.*"
                      r"|/etc/systemd/network/.*|/etc/network/.*)$")  # fmt: skip
    return {p: t for p, t in snap.files.items() if keep.match(p)}


def _line_of(text: str | None, value: str) -> int:
    """The 1-based line of text that is a kernel line holding value as a word ('' text: 0)."""
    for n, line in enumerate((text or "").splitlines(), 1):
        if KERNEL_LINE.match(line) and re.search(rf"(?:^|[\s\"'=]){re.escape(value)}(?:$|[\s\"'])", line):
            return n
    return 0


def kernel_line(snap: Snapshot, entry: BootEntry | None, generator: str | None = None) -> list[dict[str, Any]]:
    """root= and resume= on the default entry's own kernel line, reported where the value is
    written: the BLS entry file, grubenv's kernelopts, menu.lst, or the (generated) grub.cfg.
    generator: the host's initrd generator (how long its initrd waits for a resume device).
    """
    if entry is None or not entry.options:
        return []
    out = []
    for f in bp.kernel_line_findings(entry.options, "kernel line", generator=generator):
        token = f.text
        where = entry.origin or "kernel line"
        line = _line_of(snap.files.get(where), token) if where.startswith("/") else 0
        if not line and where.startswith("/boot/loader/entries/"):  # "$kernelopts": grubenv holds it
            where = next((g for g in GRUBENVS if _line_of(snap.files.get(g), token)), where)
            line = _line_of(snap.files.get(where), token)
        fix = bp.Fix(f.fix.action, where, line, f.fix.old) if f.fix and where.startswith("/") and line else None
        message = f.message + (f" (the default boot entry '{entry.title}')" if entry.title else "")
        out.append(as_dict(bp.Finding(f.kind, f.severity, where, line, token, message, fix)))
    return out


def set_default(snap: Snapshot, entries: Sequence[BootEntry], entry: BootEntry | None, fix: bp.Fix) -> bp.Fix:
    """The set-default-kernel fix (old kernel, new kernel) as the edit that makes it so: the one
    ``default N`` line of the GRUB legacy menu the default entry comes from, N the index of the
    first entry there booting the new kernel. Unchanged (done by hand) elsewhere: GRUB 2 and BLS
    (grub2-set-default, grubby), a menu without one plain default line.
    """
    if entry is None or not LEGACY_MENU.fullmatch(entry.origin):
        return fix
    target = next((e for e in entries if e.kernel == fix.new and e.origin == entry.origin and e.path.isdigit()), None)
    lines = (snap.files.get(entry.origin) or "").splitlines()
    hits = [(n, line) for n, line in enumerate(lines, 1) if DEFAULT_LINE.fullmatch(line)]
    if target is None or len(hits) != 1:
        return fix
    n, line = hits[0]
    m = DEFAULT_LINE.fullmatch(line)
    assert m is not None
    return bp.Fix("set-default-kernel", entry.origin, n, line, f"{m.group(1)}{target.path}{m.group(3)}")


def _config_text(config: dict[str, str]) -> str:
    return "".join(f"CONFIG_{k}={v}\n" for k, v in config.items() if v != "n")


def stored_findings(snap: Snapshot, entry: BootEntry | None, generator: str | None = None,
                    entries: Sequence[BootEntry] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """Every finding the files and kernels of snap give (not the live ones: efi_findings);
    generator: the host's initrd generator; entries: the boot menu's (where a default is set).
    """
    files = snap.files
    found: list[bp.Finding] = []
    if files.get("/etc/fstab"):
        found += bp.fstab_findings(files["/etc/fstab"])  # type: ignore[arg-type]
    if files.get("/etc/crypttab"):
        found += bp.crypttab_findings(files["/etc/crypttab"])  # type: ignore[arg-type]
    if files.get("/etc/default/grub"):
        found += bp.default_grub_findings(files["/etc/default/grub"], generator=generator)  # type: ignore[arg-type]
    if files.get("/etc/sysconfig/kernel"):
        found += bp.sysconfig_kernel_findings(files["/etc/sysconfig/kernel"])  # type: ignore[arg-type]
    for path, text in files.items():
        if text and (path == "/etc/modprobe.conf" or path.startswith("/etc/modprobe.d/")):
            found += bp.modprobe_findings(text, path)
    if entry is not None and entry.kernel in snap.kernels:
        kernels = [(v, _config_text(k.config) if k.has_config else None) for v, k in snap.kernels.items()]
        found += [replace(f, fix=set_default(snap, entries, entry, f.fix)) if f.fix else f for f in bp.kernel_findings(
            kernels, entry.kernel, {v: sorted(k.modules) for v, k in snap.kernels.items()})]  # fmt: skip
    net = {p: t for p, t in files.items() if t is not None and network.reader(p)}
    names = bp.kernel_args(entry.options).get("net.ifnames") != "0" if entry is not None and entry.options else True
    found += network.network_findings(net, persistent_net_generator=snap.disks.get("netgen") != "no",
                                      predictable_names=names)  # fmt: skip
    return [as_dict(f) for f in found] + kernel_line(snap, entry, generator)


def efi_findings(disks: dict[str, Any], distro_id: str) -> list[dict[str, Any]]:
    """The UEFI fallback, from the live disks section: only a host that booted by UEFI needs it."""
    if disks.get("efi") != "yes":
        return []
    return [as_dict(f) for f in bp.efi_fallback_findings(disks.get("esp", []), "uefi", distro=distro_id or None)]
