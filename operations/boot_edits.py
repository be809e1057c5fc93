"""
How one file's lines change for the opt-in fixes of issue 20 (pure: text in, text out).

``edit_text`` applies the line fixes of one file (``Fix`` of facts/boot_path.py: device-to-uuid,
replace-line, delete-line, drop-mac-match), each checked against ``Fix.old`` (the line as read), each
refused with its reason when the line changed, when its UUID or device is not plain, or when the change
would alter what the lines around it mean. Every other line is kept byte for byte, line endings too.
operations/boot_path.py decides which fixes reach here (its allow-list) and what kind of file it is.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from kvm_drivers.facts.boot_path import Fix, kernel_args
from kvm_drivers.facts.wire import safe_path
from kvm_drivers.operations.kvm_drivers import printable

UUID = re.compile(r"^[0-9A-Fa-f-]{8,36}$")  # as blkid prints them (FAT's XXXX-XXXX to 36-character UUIDs)
DEVICE = re.compile(r"^/dev/[A-Za-z0-9][A-Za-z0-9._:+@/-]{0,250}$")
# Where root=/resume= live on a line of each kind of file (the rest of the line is never touched).
KERNEL_LINE = {
    "default-grub": re.compile(r"\s*(?:export\s+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?="),
    "grubenv": re.compile(r"kernelopts="),
    "bls": re.compile(r"\s*options\s"),
    "legacy-grub": re.compile(r"\s*kernel\s"),
}
_SHELL = ("ifcfg", "default-grub", "sysconfig-kernel")
_YAML_SCALAR = re.compile(r"( *)([A-Za-z0-9_-]+):[ \t]+[^\s{\[|>&*!#].*")
DISABLED = "# disabled by kvm-drivers (KVM): "


def edit_text(path: str, kind: str, text: str, fixes: list[Fix], uuids: Mapping[str, str], verify: dict[str, str],
              refused: list[str]) -> str | None:  # fmt: skip
    """
    The text of path (of kind, a key of operations/boot_path.py FIXABLE_PATHS) with fixes applied, None
    when none could be. uuids: a device name as written -> its UUID on the host; verify (UUID -> device)
    gets each UUID written; refused gets why each fix that is not applied is not.
    """
    lines = text.splitlines()
    ends = [p[len(ln):] for p, ln in zip(text.splitlines(keepends=True), lines)]
    cur, whole, done = list(lines), set(), 0
    for fix in sorted(fixes, key=lambda f: (f.line, f.action, f.old)):
        n = fix.line
        if not 1 <= n <= len(lines):
            why = f"there is no line {n}"
        elif fix.action == "device-to-uuid":
            new, why = (None, "another fix replaces this line") if n in whole else \
                _to_uuid(kind, cur[n - 1], fix.old, uuids, verify)  # fmt: skip
        elif lines[n - 1] != fix.old:
            why = f"the line no longer reads {printable(fix.old)!r:.120} (it changed since it was read)"
        elif n in whole or cur[n - 1] != lines[n - 1]:
            why = "another fix changes this line"
        else:
            new, why = _line_fix(kind, fix, lines, n)
        if why:
            refused.append(f"{printable(path)} line {n}: {fix.action}: {why}")
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
            refused.append(f"{printable(path)}: no room left in the environment block: nothing changed")
            return None
        out = out[: len(out) - grow] if grow > 0 else out + "#" * -grow
    return out


def _to_uuid(kind: str, line: str, old: str, uuids: Mapping[str, str], verify: dict[str, str]
             ) -> tuple[str | None, str]:  # fmt: skip
    """The line with the device in token old (an fstab/crypttab field, a root=/resume= parameter) as UUID=."""
    if kind in ("fstab", "crypttab"):
        m = re.match(r"(\s*)(\S+)" if kind == "fstab" else r"(\s*\S+\s+)(\S+)", line)
        if not m or m.group(2) != old:
            return None, f"field {1 if kind == 'fstab' else 2} no longer reads {printable(old)!r:.120}"
        quoted = len(old) > 1 and old[0] == old[-1] and old[0] in "\"'"  # libmount and systemd unquote it
        device, spans, token = old[1:-1] if quoted else old, [m.span(2)], None
    else:
        args = kernel_args(old)
        name, value = next(iter(args.items())) if len(args) == 1 else ("", None)
        if name not in ("root", "resume") or not value:
            return None, f"{printable(old)!r:.120} is not a root= or resume= parameter"
        device = value[len("block:"):] if value.startswith("block:") else value
        m = KERNEL_LINE[kind].match(line)
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
    if verify.get(uuid, device) != device:
        return None, f"UUID {uuid} is given for both {verify[uuid]} and {device}"
    verify[uuid] = device
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
    if fix.action in ("replace-line", "set-default-kernel"):
        if not fix.new or any(c in fix.new for c in "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            return None, "the new line is not one line"
        why = _comment_problem(kind, lines, n) if kind in _SHELL else ""
        return (None, why) if why else (fix.new, "")
    if fix.action == "drop-mac-match" and kind == "networkd":
        key = line.split("=", 1)[0].strip()
        section = next((s.strip() for s in reversed(lines[: n - 1]) if s.strip().startswith("[")), "")
        if section != "[Match]" or key not in ("MACAddress", "PermanentMACAddress"):
            return None, "not a MACAddress= of a [Match] section"
        return f"{indent}Driver=virtio_net", ""
    if fix.action == "drop-mac-match" and kind == "netplan":
        return _netplan_driver(lines, n)
    if fix.action == "drop-mac-match" and kind == "udev":
        return _udev_driver(line)
    why = _comment_problem(kind, lines, n)  # delete-line, and a keyfile's mac-address= match
    return (None, why) if why else (DISABLED + line, "")


_UDEV_MAC = re.compile(r'ATTRS?\{address\}\s*==\s*"[0-9A-Fa-f:?*\[\]-]*"')
_UDEV_ANY_DRIVER = re.compile(r'DRIVERS\s*==\s*"\?\*"')


def _udev_driver(line: str) -> tuple[str | None, str]:
    """A udev rule's MAC match (ATTR{address}=="...") made a match of the virtio NIC: the key becomes
    DRIVERS=="virtio_net", or is dropped where the rule's DRIVERS=="?*" becomes that (one DRIVERS key).
    """
    macs = _UDEV_MAC.findall(line)
    if len(macs) != 1:
        return None, "not one ATTR{address}== match in the rule"
    if re.search(r"\bDRIVERS\s*[!=]=", line) and not _UDEV_ANY_DRIVER.search(line):
        return None, "the rule already matches a driver: not changed"
    if _UDEV_ANY_DRIVER.search(line):
        new = _UDEV_ANY_DRIVER.sub('DRIVERS=="virtio_net"', line, count=1)
        return re.sub(r",\s*" + re.escape(macs[0]) + r"|" + re.escape(macs[0]) + r"\s*,\s*", "", new, count=1), ""
    return line.replace(macs[0], 'DRIVERS=="virtio_net"', 1), ""


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
