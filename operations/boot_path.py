"""
The opt-in fixes of the boot path and the network after the move (issue 20).

``plan_fixes`` (pure) turns the ``Finding``s of facts/boot_path.py and facts/network.py into what the
host needs: the new text of each file that changes (every other line kept byte for byte, line endings
too), the files to move aside, the copies onto the ESP, the UUIDs to verify, and why any fix is
refused; ``render_fixes`` is its text part. Every edit is checked against ``Fix.old`` (the line as
read: operations/boot_edits.py changes the lines); only paths in ``FIXABLE_PATHS`` are changed; what
a host sent (UUIDs, device names, paths) is used only in the plain shapes checked here. The
operations apply a plan with the host scripts, each under the host's lock with compare-then-swap,
each change kept for rollback with the run (hostside/lock.sh): ``rewrite_files`` (write.sh),
``move_aside`` (aside.sh), ``copy_efi_fallback`` (efi_copy.sh), ``regenerate_grub_cfg`` (regen.sh),
``verify_uuids`` (verify_uuid.sh).
A failed step rolls back what the run changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host, logger
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.context import ctx_state

from kvm_drivers.facts.boot_path import Finding, Fix
from kvm_drivers.facts.wire import safe_path
from kvm_drivers.hostside import ASIDE, EFI_COPY, REGEN, ROLLBACK, VERIFY_UUID, WRITE
from kvm_drivers.operations.boot_edits import DEVICE, KERNEL_LINE, UUID, edit_text
from kvm_drivers.operations.kvm_drivers import _show_diff, printable

RUN_ID = re.compile(r"^[a-z0-9]{0,64}$")
_N = r"[A-Za-z0-9][A-Za-z0-9._@+,:-]{0,127}"  # one plain file name
# What a fix may change, by kind of file (anything else is refused): full-match patterns.
FIXABLE_PATHS = {
    "fstab": r"/etc/fstab",
    "crypttab": r"/etc/crypttab",
    "default-grub": r"/etc/default/grub",
    "grubenv": rf"/boot/grub2?/grubenv|/boot/efi/EFI/{_N}/grubenv",
    "bls": rf"(?:/boot|/boot/efi|/efi)/loader/entries/{_N}\.conf",
    "legacy-grub": rf"/boot/grub/(?:menu\.lst|grub\.conf)|/boot/efi/EFI/{_N}/grub\.conf",
    "modprobe": rf"/etc/modprobe\.conf(?:\.local)?|/etc/modprobe\.d/{_N}\.conf",
    "sysconfig-kernel": r"/etc/sysconfig/kernel",
    "udev": rf"/etc/udev/rules\.d/{_N}\.rules",
    "ifcfg": rf"/etc/sysconfig/network(?:-scripts)?/ifcfg-{_N}",
    "interfaces": rf"/etc/network/interfaces(?:\.d/{_N})?",
    "netplan": rf"/etc/netplan/{_N}\.ya?ml",
    "keyfile": r"/etc/NetworkManager/system-connections/[A-Za-z0-9][A-Za-z0-9 ._@+,:-]{0,127}",
    "networkd": rf"/etc/systemd/network/{_N}\.(?:network|link)",
    "esp": rf"(?:/boot/efi|/efi|/boot)/(?i:EFI/BOOT)/{_N}",
}
_FIXABLE = {kind: re.compile(f"(?:{p})") for kind, p in FIXABLE_PATHS.items()}
GENERATED_GRUB = re.compile(r"^(?:/boot/grub2?/grub\.cfg|/boot/efi/EFI/[^/]+/grub\.cfg)$")
ESP = re.compile(r"^(?:/boot/efi|/efi|/boot)$")
_SOURCE = re.compile(rf"^(?i:EFI)/{_N}/{_N}$")
_TARGET = re.compile(rf"^(?i:EFI/BOOT)/{_N}$")
_ASIDE = ("udev", "netplan", "networkd")  # their readers skip NAME.kvm-drivers-disabled


def fixable(path: str) -> str | None:
    """The kind of file path is (a key of FIXABLE_PATHS), None when no fix may change it."""
    if not safe_path(path):
        return None
    return next((kind for kind, p in _FIXABLE.items() if p.fullmatch(path)), None)


@dataclass
class FixPlan:
    """What the opt-in fixes do on one host (plan_fixes)."""

    texts: dict[str, str] = field(default_factory=dict)  # path -> its new text
    olds: dict[str, str] = field(default_factory=dict)  # path -> its text as read (texts and moves)
    moves: list[str] = field(default_factory=list)  # files to move aside
    copies: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # ESP -> (source, target)s
    verify: dict[str, str] = field(default_factory=dict)  # UUID written -> the device it must name
    regenerate: dict[str, list[str]] = field(default_factory=dict)  # generated grub.cfg -> the names it must lose
    refused: list[str] = field(default_factory=list)  # why a fix was not applied, one line each

    def changes(self) -> dict[str, tuple[str, str]]:
        """rewrite_files' argument: path -> (text as read, new text)."""
        return {p: (self.olds[p], t) for p, t in self.texts.items()}


def render_fixes(files: Mapping[str, str | None], findings: Iterable[Finding], uuids: Mapping[str, str],
                 regenerate_grub: bool = False) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """(path -> new text of each file that changes, why each fix that is not applied is not): the
    text part of plan_fixes (moves, copies and UUIDs to verify: see there).
    """
    plan = plan_fixes(files, findings, uuids, regenerate_grub)
    return plan.texts, plan.refused


def plan_fixes(files: Mapping[str, str | None], findings: Iterable[Finding], uuids: Mapping[str, str],
               regenerate_grub: bool = False) -> FixPlan:  # fmt: skip
    """
    The plan of the opt-in fixes for findings (see FixPlan). files: path -> text as gathered (None:
    unreadable); uuids: a device name as written (/dev/xvdb1) -> the UUID of what holds it on the host.
    A fix whose line no longer reads Fix.old, whose path is not in FIXABLE_PATHS, whose device has no
    plain UUID, or whose change would alter other lines' meaning is refused, with its reason. A fix in
    a generated grub.cfg is never edited: refused, or with regenerate_grub listed in regenerate (with
    the device names the regenerated file must not hold).
    """
    plan, edits, seen = FixPlan(), {}, set()
    for finding in findings:
        fix = finding.fix
        if fix is None or fix in seen:
            continue
        seen.add(fix)
        where = fix.path or finding.where
        if fix.action == "copy":
            why = _copy_problem(fix.path, fix.copies)
            if why:
                plan.refused.append(f"{printable(where)}: {why}")
            elif fix.copies:
                plan.copies[fix.path] = tuple(dict.fromkeys(plan.copies.get(fix.path, ()) + fix.copies))
            continue
        why = _problem(fix, files, regenerate_grub)
        if why == "regenerate":  # regenerate_grub: grub-mkconfig writes it anew, after /etc/default/grub's fixes
            gone = plan.regenerate.setdefault(fix.path, [])
            gone += [] if fix.old in gone else [fix.old]
            plan.olds[fix.path] = files.get(fix.path) or ""
            continue
        if why:
            plan.refused.append(f"{printable(where)}{f' line {fix.line}' if fix.line else ''}: {why}")
        elif fix.action == "move-aside":
            plan.moves += [] if fix.path in plan.moves else [fix.path]
            plan.olds[fix.path] = files[fix.path] or ""
        else:
            edits.setdefault(fix.path, []).append(fix)
    for path, fixes in edits.items():
        if path in plan.moves:
            continue  # the file is moved aside: its lines do not matter any more
        text = files[path] or ""
        new = edit_text(path, fixable(path) or "", text, fixes, uuids, plan.verify, plan.refused)
        if new is not None and new != text:
            plan.texts[path], plan.olds[path] = new, text
    return plan


def as_finding(f: Mapping[str, object]) -> Finding:
    """A finding as the state and plan carry it (a plain dict, facts/migration.py) as a ``Finding``."""
    raw: Any = f.get("fix")
    fix = None
    if isinstance(raw, Mapping):
        copies = tuple((str(a), str(b)) for a, b in raw.get("copies") or ())
        fix = Fix(str(raw.get("action", "")), str(raw.get("path", "")), int(raw.get("line") or 0),
                  str(raw.get("old", "")), str(raw.get("new", "")), copies)  # fmt: skip
    line: Any = f.get("line") or 0
    return Finding(str(f["kind"]), str(f["severity"]), str(f.get("where", "")), int(line), str(f.get("text", "")),
                   str(f.get("message", "")), fix)  # fmt: skip


def host_fixes(files: Mapping[str, str | None], findings: Iterable[Mapping[str, object]],
               disks: Mapping[str, object], regenerate_grub: bool = False) -> FixPlan:  # fmt: skip
    """plan_fixes for the findings the settings allow (the plan's ``boot_path`` entries with
    ``fixing`` set), each device name as written mapped to the UUID blkid gave for it (the live
    disks section: facts/wire.py).
    """
    chosen = [as_finding(f) for f in findings if f.get("fixing")]
    uuids = disks.get("uuids")
    return plan_fixes(files, chosen, dict(uuids) if isinstance(uuids, Mapping) else {}, regenerate_grub)


# What a rewritten file changes in the initrds: they carry a copy of it (crypttab, module
# configuration, SUSE's INITRD_MODULES, and udev rules: initramfs-tools' udev hook copies every
# /etc/udev/rules.d/*.rules, whose NAME= the initrd's udev applies first): every handled initrd is
# rebuilt after such a fix.
IN_THE_INITRD = ("crypttab", "modprobe", "sysconfig-kernel", "udev")


def needs_rebuild(fixes: FixPlan) -> bool:
    """Whether fixes change (or move aside) a file the initrds carry a copy of."""
    return any(fixable(p) in IN_THE_INITRD for p in [*fixes.texts, *fixes.moves])


_ACTIONS = {"device-to-uuid", "replace-line", "delete-line", "drop-mac-match", "move-aside", "set-default-kernel"}


def _problem(fix: Fix, files: Mapping[str, str | None], regenerate_grub: bool) -> str | None:
    """Why fix cannot be applied at all (before its line is looked at); "regenerate" for grub.cfg."""
    if fix.action == "set-default-kernel" and not fix.path:
        return (f"make {fix.new} the default kernel by hand (grubby --set-default, grub2-set-default): "
                "kvm_set_default_kernel only edits GRUB legacy's default line (menu.lst, grub.conf)")
    if fix.action not in _ACTIONS:
        return f"{fix.action}: not done by the opt-in fixes (do it by hand)"
    if not fix.path:
        return "the file that holds this value is not known: nothing changed"
    if GENERATED_GRUB.match(fix.path) and regenerate_grub and files.get(fix.path) is None:
        return "its text was not read from the host: not regenerated"
    if GENERATED_GRUB.match(fix.path):
        return "regenerate" if regenerate_grub else (f"{fix.path} is generated by grub-mkconfig: not edited (fix "
                                                     "/etc/default/grub, and set kvm_regenerate_grub to regenerate)")
    kind = fixable(fix.path)
    if kind is None or kind == "esp":
        return "not a file the opt-in fixes may change"
    if fix.action == "move-aside" and kind not in _ASIDE:
        return "moving it aside would not disable it (its reader reads any name there)"
    if fix.action == "set-default-kernel" and kind != "legacy-grub":
        return "the default kernel is only set in GRUB legacy's menu.lst/grub.conf"
    if fix.action == "drop-mac-match" and kind not in ("netplan", "networkd", "keyfile", "udev"):
        return "no MAC match to drop in this kind of file"
    if fix.action == "device-to-uuid" and kind not in ("fstab", "crypttab", *KERNEL_LINE):
        return "no device names are rewritten in this kind of file"
    text = files.get(fix.path)
    if text is None:
        return "its text was not read from the host: nothing changed"
    if "\x00" in text:
        return "not a text file"
    return None


def _copy_problem(esp: str, copies: Iterable[tuple[str, str]]) -> str | None:
    if not ESP.match(esp):
        return f"{esp!r:.80} is not an ESP mount point the opt-in fixes write to"
    for pair in copies:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            return "a copy is not a (source, target) pair"
        source, target = pair
        if not (_SOURCE.match(source) and _TARGET.match(target)) or ".." in source + target:
            return f"refusing to copy {printable(source)!r:.80} to {printable(target)!r:.80}: not EFI/<dir>/<file> " \
                "to EFI/BOOT/<file>"  # fmt: skip
    return None



# --- operations -----------------------------------------------------------------------------------


def _check_run(run_id: str) -> None:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise OperationError(f"run_id must be lowercase letters and digits, got {run_id!r:.80}")


def _or_roll_back(run_id: str, *bits) -> StringCommand:
    """The command, followed on failure by undoing what the run changed (hostside/rollback.sh)."""
    if not run_id:
        return StringCommand(*bits)
    return StringCommand(*bits, "||", "sh", "-c", QuoteString(ROLLBACK), "kvm-rollback", QuoteString(run_id))


def _diff_note(message: str) -> None:
    config = ctx_state.get().config if ctx_state.isset() else None
    if config and config.DIFF:
        host.log(message, logger.info)


@operation()
def rewrite_files(changes: dict[str, tuple[str, str]], run_id: str = ""):
    """
    Write the new texts of the boot-path fixes (``FixPlan.changes()``), one command per file: each
    only while it still holds the text the fix was computed from (compare-then-swap under the host's
    lock, hostside/write.sh: owner, mode and SELinux label kept, written through a link). With
    ``--diff``, each change shows as a diff.

    + changes: path -> (text as read, new text); every path must be in ``FIXABLE_PATHS``
    + run_id: keep each old text for rollback with this run; a failed write rolls back the run
    """
    _check_run(run_id)
    todo = {}
    for path, pair in sorted(changes.items()):
        kind = fixable(path)
        if kind in (None, "esp") or not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise OperationError(f"refusing to rewrite {printable(str(path))!r:.120}: not a file the fixes change")
        old, new = pair
        if not (isinstance(old, str) and isinstance(new, str)) or "\x00" in old + new:
            raise OperationError(f"{path}: the old and new texts must be text")
        if old != new:
            todo[path] = (old, new)
    if not todo:
        host.noop("no file to rewrite")
        return
    for path, (old, new) in todo.items():
        _show_diff(path, old, new)
        yield _or_roll_back(run_id, "sh", "-c", QuoteString(WRITE), "kvm-write", QuoteString(path),
                            QuoteString(new), "1", QuoteString(old), QuoteString(run_id))  # fmt: skip


@operation()
def move_aside(paths: list[str], olds: dict[str, str], run_id: str = ""):
    """
    Move configuration files aside as ``PATH.kvm-drivers-disabled`` (udev rules, networkd and netplan
    files, whose readers skip that name), each only while it still holds its text as read
    (hostside/aside.sh). Rolled back with the run: the file comes back, the disabled copy goes.

    + paths: the files (each in ``FIXABLE_PATHS``, of a kind listed above)
    + olds: path -> its text as read
    + run_id: keep both names for rollback with this run; a failed move rolls back the run
    """
    _check_run(run_id)
    for path in paths:
        if fixable(path) not in _ASIDE or not isinstance(olds.get(path), str):
            raise OperationError(f"refusing to move {printable(str(path))!r:.120} aside")
    if not paths:
        host.noop("no file to move aside")
        return
    for path in dict.fromkeys(paths):
        _diff_note(f"Will move {path} aside as {path}.kvm-drivers-disabled")
        yield _or_roll_back(run_id, "sh", "-c", QuoteString(ASIDE), "kvm-aside", QuoteString(path),
                            QuoteString(olds[path]), QuoteString(run_id))  # fmt: skip


@operation()
def copy_efi_fallback(esp: str, copies: list[tuple[str, str]], run_id: str = ""):
    """
    Copy the removable-media fallback onto the ESP (``Fix.copies`` of an efi-fallback finding, e.g.
    EFI/debian/shimx64.efi to EFI/BOOT/BOOTX64.EFI), in one command (hostside/efi_copy.sh): no link
    followed, each copy checked against its source, flushed, then renamed into place; nothing copied
    if the first target appeared meanwhile. Rolled back with the run (a file it created is removed).

    + esp: the ESP's mount point (/boot/efi, /efi or /boot)
    + copies: (source, target) pairs relative to the ESP: EFI/<dir>/<file> to EFI/BOOT/<file>
    + run_id: keep each target for rollback with this run; any failure rolls back the run
    """
    _check_run(run_id)
    why = _copy_problem(esp, copies)
    if why:
        raise OperationError(why)
    if not copies:
        host.noop("nothing to copy onto the ESP")
        return
    for source, target in copies:
        _diff_note(f"Will copy {esp}/{source} to {esp}/{target}")
    yield StringCommand("sh", "-c", QuoteString(EFI_COPY), "kvm-efi-copy", QuoteString(esp), QuoteString(run_id),
                        *[QuoteString(x) for pair in copies for x in pair])  # fmt: skip


@operation()
def regenerate_grub_cfg(path: str, old: str, gone: list[str], run_id: str = ""):
    """
    Regenerate a generated grub.cfg with the host's own grub2-mkconfig/grub-mkconfig (opt-in
    ``kvm_regenerate_grub``), after the run's fixes of /etc/default/grub: only while it still holds
    the text the plan was made from, into a file beside it that must name none of ``gone``, then
    renamed over it with its owner, mode and label, kept for rollback (hostside/regen.sh).

    + path: the generated grub.cfg (``/boot/grub/grub.cfg``, ``/boot/grub2/grub.cfg``, an ESP's)
    + old: its text as read
    + gone: the device names the regenerated file must not hold (e.g. ``root=/dev/xvda1``'s device)
    + run_id: keep the old file for rollback with this run; a failure rolls back the run
    """
    _check_run(run_id)
    if not (isinstance(path, str) and GENERATED_GRUB.match(path) and safe_path(path)):
        raise OperationError(f"refusing to regenerate {printable(str(path))!r:.120}: not a generated grub.cfg")
    names = [_device_of(g) for g in gone]
    if not isinstance(old, str) or not names or not all(names):
        raise OperationError(f"{path}: give its text as read and the device names it must lose")
    _diff_note(f"Will regenerate {path} (it must no longer name {' '.join(names)})")
    yield _or_roll_back(run_id, "sh", "-c", QuoteString(REGEN), "kvm-regen", QuoteString(path), QuoteString(old),
                        QuoteString(run_id), *[QuoteString(n) for n in names])  # fmt: skip


def _device_of(value: str) -> str:
    """The device a kernel-line value names ("root=/dev/xvda1" -> "/dev/xvda1"; '' when it is no plain device)."""
    device = value.split("=", 1)[-1] if value.startswith(("root=", "resume=")) else value
    return device if isinstance(device, str) and DEVICE.match(device) and safe_path(device) else ""


@operation(is_idempotent=False)
def verify_uuids(expected: dict[str, str], run_id: str = "", last: bool = False):
    """
    Prove, after the rewrites, that each UUID written names the device the old name named: the host
    looks each up as the boot will (``findfs UUID=...``, else ``blkid -U``) and compares the device
    with the expected one, both resolved (hostside/verify_uuid.sh). Any mismatch rolls back what the
    run changed and fails, naming both devices. Run it before the run's last ``rebuild_initrd``
    (which drops the rollback state), or with last=True.

    + expected: UUID -> device (``FixPlan.verify``)
    + run_id: the run whose changes a mismatch rolls back
    + last: on success, drop the run's rollback state (nothing of the run is left to fail)
    """
    _check_run(run_id)
    for uuid, device in expected.items():
        if not (isinstance(uuid, str) and UUID.match(uuid) and isinstance(device, str) and DEVICE.match(device)
                and safe_path(device)):  # fmt: skip
            raise OperationError(f"refusing to verify {printable(str(uuid))!r:.60} -> {printable(str(device))!r:.120}")
    if not expected:
        host.noop("no UUID to verify")
        return
    yield StringCommand("sh", "-c", QuoteString(VERIFY_UUID), "kvm-verify-uuid", QuoteString(run_id),
                        "1" if last else "0", *[QuoteString(x) for pair in sorted(expected.items()) for x in pair])
