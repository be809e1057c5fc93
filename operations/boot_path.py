"""
The opt-in fixes of the boot path and the network after the move (issue 20).

``plan_fixes`` (pure) turns the ``Finding``s of facts/boot_path.py and facts/network.py into what the
host needs: the new text of each file that changes (every other line kept byte for byte, line endings
too), the files to move aside, the copies onto the ESP, the UUIDs to verify, and why any fix is
refused; ``render_fixes`` is its text part. Every edit is checked against ``Fix.old`` (the line as
read); only paths in ``FIXABLE_PATHS`` are changed; what a host sent (UUIDs, device names, paths) is
used only in the plain shapes checked here. The operations apply a plan with the host scripts, each
under the host's lock with compare-then-swap, each change kept for rollback with the run
(hostside/lock.sh): ``rewrite_files`` (write.sh), ``move_aside`` (aside.sh), ``copy_efi_fallback``
(efi_copy.sh), ``verify_uuids`` (verify_uuid.sh). A failed step rolls back what the run changed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyinfra import host, logger
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.context import ctx_state

from kvm_drivers.facts.boot_path import Finding, Fix, kernel_args
from kvm_drivers.facts.wire import safe_path
from kvm_drivers.hostside import ASIDE, EFI_COPY, ROLLBACK, VERIFY_UUID, WRITE
from kvm_drivers.operations.kvm_drivers import _show_diff, printable

UUID = re.compile(r"^[0-9A-Fa-f-]{8,36}$")  # as blkid prints them (FAT's XXXX-XXXX to 36-character UUIDs)
DEVICE = re.compile(r"^/dev/[A-Za-z0-9][A-Za-z0-9._:+@/-]{0,250}$")
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
# Where root=/resume= live on a line of each kind of file (the rest of the line is never touched).
_KERNEL_LINE = {
    "default-grub": re.compile(r"\s*(?:export\s+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?="),
    "grubenv": re.compile(r"kernelopts="),
    "bls": re.compile(r"\s*options\s"),
    "legacy-grub": re.compile(r"\s*kernel\s"),
}
_ASIDE = ("udev", "netplan", "networkd")  # their readers skip NAME.kvm-drivers-disabled
_SHELL = ("ifcfg", "default-grub", "sysconfig-kernel")
_YAML_SCALAR = re.compile(r"( *)([A-Za-z0-9_-]+):[ \t]+[^\s{\[|>&*!#].*")
DISABLED = "# disabled by kvm-drivers (KVM): "


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
    regenerate: list[str] = field(default_factory=list)  # generated grub.cfg files to regenerate
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
    a generated grub.cfg is never written: refused, or with regenerate_grub listed in regenerate.
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
        if why == "regenerate":
            plan.regenerate += [] if fix.path in plan.regenerate else [fix.path]
            why = (f"{fix.path} is generated: not edited; it needs a regeneration (grub-mkconfig -o {fix.path}) "
                   "after the fixes of /etc/default/grub")  # fmt: skip
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
        new = _edit(path, text, fixes, uuids, plan)
        if new is not None and new != text:
            plan.texts[path], plan.olds[path] = new, text
    return plan


_ACTIONS = {"device-to-uuid", "replace-line", "delete-line", "drop-mac-match", "move-aside"}


def _problem(fix: Fix, files: Mapping[str, str | None], regenerate_grub: bool) -> str | None:
    """Why fix cannot be applied at all (before its line is looked at); "regenerate" for grub.cfg."""
    if fix.action == "set-default-kernel":
        return f"make {fix.new} the default kernel by hand (grubby --set-default, grub2-set-default): not opt-in"
    if fix.action not in _ACTIONS:
        return f"{fix.action}: not done by the opt-in fixes (do it by hand)"
    if not fix.path:
        return "the file that holds this value is not known: nothing changed"
    if GENERATED_GRUB.match(fix.path):
        return "regenerate" if regenerate_grub else (f"{fix.path} is generated by grub-mkconfig: not edited (fix "
                                                     "/etc/default/grub, and set kvm_regenerate_grub to regenerate)")
    kind = fixable(fix.path)
    if kind is None or kind == "esp":
        return "not a file the opt-in fixes may change"
    if fix.action == "move-aside" and kind not in _ASIDE:
        return "moving it aside would not disable it (its reader reads any name there)"
    if fix.action == "drop-mac-match" and kind not in ("netplan", "networkd", "keyfile"):
        return "no MAC match to drop in this kind of file"
    if fix.action == "device-to-uuid" and kind not in ("fstab", "crypttab", *_KERNEL_LINE):
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


def _edit(path: str, text: str, fixes: list[Fix], uuids: Mapping[str, str], plan: FixPlan) -> str | None:
    """The text with fixes applied (None when none could be); refusals go to plan.refused."""
    kind = fixable(path) or ""
    lines = text.splitlines()
    ends = [p[len(ln):] for p, ln in zip(text.splitlines(keepends=True), lines)]
    cur, whole, done = list(lines), set(), 0
    for fix in sorted(fixes, key=lambda f: (f.line, f.action, f.old)):
        n = fix.line
        if not 1 <= n <= len(lines):
            why = f"there is no line {n}"
        elif fix.action == "device-to-uuid":
            new, why = (None, "another fix replaces this line") if n in whole else \
                _to_uuid(kind, cur[n - 1], fix.old, uuids, plan)  # fmt: skip
        elif lines[n - 1] != fix.old:
            why = f"the line no longer reads {printable(fix.old)!r:.120} (it changed since it was read)"
        elif n in whole or cur[n - 1] != lines[n - 1]:
            why = "another fix changes this line"
        else:
            new, why = _line_fix(kind, fix, lines, n)
        if why:
            plan.refused.append(f"{printable(path)} line {n}: {fix.action}: {why}")
            continue
        cur[n - 1], done = new, done + 1
        if fix.action != "device-to-uuid":
            whole.add(n)
    if not done:
        return None
    out = "".join(c + e for c, e in zip(cur, ends))
    if kind == "grubenv":  # a block of exactly the size it had: '#' padding taken or given back
        tail = out[out.rfind("\n") + 1:]
        pad = len(tail) if tail and set(tail) == {"#"} else 0
        grow = len(out.encode()) - len(text.encode())
        if grow > pad:
            plan.refused.append(f"{printable(path)}: no room left in the environment block: nothing changed")
            return None
        out = out[: len(out) - grow] if grow > 0 else out + "#" * -grow
    return out


def _to_uuid(kind: str, line: str, old: str, uuids: Mapping[str, str], plan: FixPlan) -> tuple[str | None, str]:
    """The line with the device in token old (an fstab/crypttab field, a root=/resume= parameter) as UUID=."""
    if kind in ("fstab", "crypttab"):
        m = re.match(r"(\s*)(\S+)" if kind == "fstab" else r"(\s*\S+\s+)(\S+)", line)
        if not m or m.group(2) != old:
            return None, f"field {1 if kind == 'fstab' else 2} no longer reads {printable(old)!r:.120}"
        device, spans, token = old, [m.span(2)], None
    else:
        args = kernel_args(old)
        name, value = next(iter(args.items())) if len(args) == 1 else ("", None)
        if name not in ("root", "resume") or not value:
            return None, f"{printable(old)!r:.120} is not a root= or resume= parameter"
        device = value[len("block:"):] if value.startswith("block:") else value
        m = _KERNEL_LINE[kind].match(line)
        if not m:
            return None, "not a kernel command line (any more)"
        spans = [(i, i + len(old)) for i in range(m.end(), len(line) - len(old) + 1)
                 if line.startswith(old, i) and (i == m.end() or line[i - 1] in " \t\"'")
                 and (i + len(old) == len(line) or line[i + len(old)] in " \t\"'")]  # fmt: skip
        if not spans:
            return None, f"the line no longer has {printable(old)!r:.120}"
        token = old
    if not (DEVICE.match(device) and safe_path(device)):
        return None, f"{printable(device)!r:.120} is not a plain device name: not rewritten"
    uuid = uuids.get(device)
    if uuid is None:
        return None, f"no UUID is known for {device} (not mounted there, or blkid gave none)"
    if not (isinstance(uuid, str) and UUID.match(uuid)):
        return None, f"the UUID the host gave for {device} is not one: {printable(str(uuid))!r:.60}"
    if plan.verify.get(uuid, device) != device:
        return None, f"UUID {uuid} is given for both {plan.verify[uuid]} and {device}"
    plan.verify[uuid] = device
    new = f"UUID={uuid}"
    if token is not None:
        new = token.replace(f"block:{device}" if f"block:{device}" in token else device, new, 1)
    for a, b in reversed(spans):
        line = line[:a] + new + line[b:]
    return line, ""


def _backslashed(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _line_fix(kind: str, fix: Fix, lines: list[str], n: int) -> tuple[str | None, str]:
    """The new text of line n for a whole-line fix, or (None, why not)."""
    line = lines[n - 1]
    if _backslashed(line) or (n > 1 and _backslashed(lines[n - 2])):
        return None, "the line is part of one continued with a backslash: changing it would change its neighbours"
    indent = line[: len(line) - len(line.lstrip())]
    if fix.action == "replace-line":
        if not fix.new or any(c in fix.new for c in "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            return None, "the new line is not one line"
        return fix.new, ""
    if fix.action == "drop-mac-match" and kind == "networkd":
        key = line.split("=", 1)[0].strip()
        section = next((s.strip() for s in reversed(lines[: n - 1]) if s.strip().startswith("[")), "")
        if section != "[Match]" or key not in ("MACAddress", "PermanentMACAddress"):
            return None, "not a MACAddress= of a [Match] section"
        return f"{indent}Driver=virtio_net", ""
    if fix.action == "drop-mac-match" and kind == "netplan":
        return _netplan_driver(lines, n)
    why = _comment_problem(kind, lines, n)  # delete-line, and a keyfile's mac-address= match
    return (None, why) if why else (DISABLED + line, "")


def _comment_problem(kind: str, lines: list[str], n: int) -> str:
    """Why commenting out line n would change what the file means beyond that line ("" when it would not)."""
    line = lines[n - 1]
    if kind in _SHELL:
        try:
            shlex.split("\n".join(lines[: n - 1]), comments=True)
        except ValueError:
            return "the line is inside a quoted value that began above it"
        try:
            shlex.split(line, comments=True)
        except ValueError:
            return "the line opens a quoted value that goes on below it"
    if kind == "netplan":
        m = _YAML_SCALAR.fullmatch(line)
        if not m:
            return "not a 'key: value' line of its own (a comment would remove more than the setting)"
        below = next((x for x in lines[n:] if x.strip() and not x.lstrip().startswith("#")), "")
        if below and len(below) - len(below.lstrip(" ")) > len(m.group(1)):
            return "its value goes on below it"
    return ""


def _netplan_driver(lines: list[str], n: int) -> tuple[str | None, str]:
    """A netplan 'macaddress:' line under 'match:' as 'driver: virtio_net', same indentation."""
    m = _YAML_SCALAR.fullmatch(lines[n - 1])
    if not m or m.group(2) != "macaddress" or _comment_problem("netplan", lines, n):
        return None, "not a 'macaddress: VALUE' line of its own"
    indent = len(m.group(1))
    content = [(i, x) for i, x in enumerate(lines) if x.strip() and not x.lstrip().startswith("#")]
    above = [(i, x) for i, x in content if i < n - 1 and len(x) - len(x.lstrip(" ")) < indent]
    if not above or not re.fullmatch(r" *match:\s*(#.*)?", above[-1][1]):
        return None, "the macaddress is not one of a 'match:' block"
    top, depth = above[-1][0], len(above[-1][1]) - len(above[-1][1].lstrip(" "))
    for i, x in content:
        if i > top:
            if len(x) - len(x.lstrip(" ")) <= depth:
                break
            if re.match(rf" {{{indent}}}driver:", x):
                return None, "the match already names a driver: drop the MAC by hand"
    return f"{m.group(1)}driver: virtio_net", ""


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
