"""
Which drivers do the initrd generators' own files declare, omit or configure? The shell-style
files of initramfs-tools, dracut and SUSE's mkinitrd (/etc/sysconfig/kernel), read as their
tools read them; module names as the kernel writes them (``norm()``), and the kernel config
option that builds each driver (``CONFIG_OPTION``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Driver -> the kernel config option that builds it (used when modules.builtin is missing).
CONFIG_OPTION = {
    "virtio_blk": "VIRTIO_BLK",
    "virtio_scsi": "SCSI_VIRTIO",
    "virtio_net": "VIRTIO_NET",
    "virtio_pci": "VIRTIO_PCI",
    "virtio_ring": "VIRTIO",
    "virtio": "VIRTIO",
    "virtio_console": "VIRTIO_CONSOLE",
    "virtio_balloon": "VIRTIO_BALLOON",
    "virtio_pci_modern_dev": "VIRTIO_PCI_LIB",
    "virtio_pci_legacy_dev": "VIRTIO_PCI_LIB_LEGACY",
    "net_failover": "NET_FAILOVER",
    "failover": "FAILOVER",
    "ata_piix": "ATA_PIIX",
    "ata_generic": "ATA_GENERIC",
}


def norm(name: str) -> str:
    """Module name as the kernel sees it: basename, no .ko suffix, dashes as underscores."""
    name = name.rsplit("/", 1)[-1]
    name = re.sub(r"\.ko(\.[a-z0-9]+)?$", "", name)
    return name.replace("-", "_")


def parse_modules_file(text: str | None) -> list[str]:
    """Module names listed in /etc/initramfs-tools/modules (one per line, args allowed)."""
    names = []
    for line in (text or "").replace("\r", "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(norm(line.split()[0]))
    return names


def shell_statements(text: str | None) -> list[tuple[int, int, str]]:
    """(first line, last line, statement) of a shell-style file, lines counted from 0 in
    text.split(newline): a backslash-newline or a quote left open continues on the next line
    (an open quote by shlex.split(comments=True)'s rules, for up to 200 lines).

    Linear: a statement is built from its lines once, and whether a quote is open is followed
    line by line (_QuoteScan) instead of splitting the whole statement again at each line.
    """
    out = []
    lines = (text or "").split("\n")
    i = 0
    while i < len(lines):
        first = i
        parts = [lines[i].replace("\r", "")]  # the statement, in pieces (none empty but a first one)
        scan = _QuoteScan()
        scanned = 0  # pieces the scan has read (a backslash removed later is never among them)
        while i + 1 < len(lines):
            line = lines[i + 1].replace("\r", "")
            if _ends_with_one_backslash(parts):
                parts[-1] = parts[-1][:-1]
                if not parts[-1] and len(parts) > 1:
                    parts.pop()
                if line:
                    parts.append(line)
            elif i - first < 200 and scan.feed(parts, scanned):
                scanned = len(parts)
                parts += ["\n", line] if line else ["\n"]
            else:
                break
            i += 1
        out.append((first, i, "".join(parts)))
        i += 1
    return out


def _ends_with_one_backslash(parts: list[str]) -> bool:
    """Whether "".join(parts) ends with one backslash, not two (parts: none empty but a first one)."""
    tail = parts[-1][-2:]
    if len(tail) < 2 and len(parts) > 1:
        tail = parts[-2][-1:] + tail
    return tail.endswith("\\") and not tail.endswith("\\\\")


class _QuoteScan:
    """Whether shlex.split(text, comments=True) would fail with "No closing quotation", read
    piece by piece: its states outside quotes (a '#' starts a comment up to the newline, a
    backslash escapes the next character), in single quotes, and in double quotes (where a
    backslash escapes the next character too). At the end of the text, only an open quote is
    that error ("No escaped character" is another).
    """

    _NEXT = {"out": re.compile(r"[#\\'\"]"), "'": re.compile("'"), '"': re.compile(r'[\\"]'), "#": re.compile("\n")}

    def __init__(self) -> None:
        self.state = "out"  # out, ', ", #, or the escape states \\out and \\"

    def feed(self, parts: list[str], start: int) -> bool:
        """Read parts[start:]; True when a quote is open at their end."""
        for part in parts[start:]:
            self._read(part)
        return self.state in ("'", '"')

    def _read(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            state = self.state
            if state.startswith("\\"):  # the escaped character, whatever it is
                self.state = state[1:]
                i += 1
                continue
            m = self._NEXT[state].search(text, i)
            if m is None:
                return
            c, i = m.group(), m.end()
            if state == "out":
                self.state = "\\out" if c == "\\" else c
            elif state == '"' and c == "\\":
                self.state = '\\"'
            else:  # the quote closes, the comment ends
                self.state = "out"


def shell_words(text: str) -> list[str]:
    """shlex.split(text, comments=True), in linear time (shlex builds each word a character at a
    time by string concatenation: quadratic in a word's length). Same words, same ValueError
    ("No closing quotation", "No escaped character").
    """
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n#":  # blanks and comments between words
            if text[i] == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j + 1
            else:
                i += 1
        if i >= n:
            return words
        parts: list[str] = []
        while i < n:
            c = text[i]
            if c in " \t\r\n":
                i += 1
                break
            if c == "#":  # a comment ends the word too
                j = text.find("\n", i)
                i = n if j < 0 else j + 1
                break
            if c == "'":
                j = text.find("'", i + 1)
                if j < 0:
                    raise ValueError("No closing quotation")
                parts.append(text[i + 1 : j])
                i = j + 1
            elif c == '"':
                i += 1
                while True:
                    m = _DQ_TEXT.match(text, i)
                    if m:
                        parts.append(m.group())
                        i = m.end()
                    if i >= n:
                        raise ValueError("No closing quotation")
                    if text[i] == '"':
                        i += 1
                        break
                    if i + 1 >= n:  # a backslash at the very end
                        raise ValueError("No escaped character")
                    escaped = text[i + 1]
                    parts.append(escaped if escaped in '\\"' else "\\" + escaped)
                    i += 2
            elif c == "\\":
                if i + 1 >= n:
                    raise ValueError("No escaped character")
                parts.append(text[i + 1])
                i += 2
            else:
                m = _SHELL_PLAIN.match(text, i)
                parts.append(m.group())  # type: ignore[union-attr]
                i = m.end()  # type: ignore[union-attr]
        words.append("".join(parts))


_DQ_TEXT = re.compile(r'[^"\\]+')
_SHELL_PLAIN = re.compile(r"[^ \t\r\n#'\"\\]+")


def shell_assignments(text: str | None) -> list[tuple[str, str, str]]:
    """(key, operator, value) of the shell-style assignments in a dracut/sysconfig file."""
    out = []
    for _, _, line in shell_statements(text):
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)(\+?=)(.*)$", line, re.S)
        if not m:
            continue
        key, op, rest = m.groups()
        try:
            words = shell_words(rest)
        except ValueError:
            words = rest.strip().strip("\"'").split()
        out.append((key, op, " ".join(words)))
    return out


def dracut_conf_files(files: dict[str, str | None]) -> list[str]:
    """Dracut's own order: /etc/dracut.conf, then conf.d files sorted by name, /etc winning."""
    by_name: dict[str, str] = {}
    for path in files:
        for d in ("/usr/lib/dracut/dracut.conf.d/", "/etc/dracut.conf.d/"):
            if path.startswith(d) and path.endswith(".conf"):
                name = path[len(d) :]
                if d.startswith("/etc") or name not in by_name:
                    by_name[name] = path
    ordered = ["/etc/dracut.conf"] if "/etc/dracut.conf" in files else []
    return ordered + [by_name[n] for n in sorted(by_name)]


@dataclass
class DracutConf:
    """What dracut's configuration declares, read in dracut's order."""

    add_drivers: dict[str, str] = field(default_factory=dict)  # driver -> file declaring it
    omit_drivers: dict[str, str] = field(default_factory=dict)
    omit_patterns: dict[str, str] = field(default_factory=dict)  # omit_drivers words as written -> file
    literal: set[str] = field(default_factory=set)  # the words of drivers, add_drivers and force_drivers
    hostonly: str = ""
    files: list[str] = field(default_factory=list)


def parse_dracut(files: dict[str, str | None]) -> DracutConf:
    """Drivers declared (add_drivers/force_drivers) and omitted, and the hostonly setting."""
    conf = DracutConf(files=dracut_conf_files(files))
    words: dict[str, list[str]] = {"drivers": [], "add_drivers": [], "force_drivers": []}
    for path in conf.files:
        for key, op, value in shell_assignments(files.get(path)):
            if key in words:
                words[key] = (words[key] if op != "=" else []) + value.split()
            if key in ("add_drivers", "force_drivers", "omit_drivers"):
                target = conf.omit_drivers if key == "omit_drivers" else conf.add_drivers
                if op == "=" and key != "force_drivers":
                    target.clear()
                    if key == "omit_drivers":
                        conf.omit_patterns.clear()
                for d in value.split():
                    target[norm(d)] = path
                    if key == "omit_drivers":
                        conf.omit_patterns[d] = path
            elif key == "hostonly":
                conf.hostonly = value
    conf.literal = {w.replace("-", "_", 1) for ws in words.values() for w in ws}
    return conf


def dracut_omits(conf: DracutConf, modules: list[str], declared: list[str]) -> list[tuple[str, str, str]]:
    """(module, pattern, file) for each module an omit_drivers pattern keeps out of the initrds
    dracut builds, once ``declared`` are in add_drivers too.

    dracut.sh (dracutdevs/dracut, dracut-ng): each omit_drivers word (first '-' made '_') that is
    not literally a word of drivers/add_drivers/force_drivers joins a regular expression that the
    modules dracut installs are matched against; dracut before 057 matches it anywhere in the
    name ("$d|"), later versions whole names ("^$d$|"). The older, wider reading is used: a
    pattern that might drop a wanted module is never passed over. A pattern Python cannot
    compile is reported with module '' (it cannot be evaluated).
    """
    keep = conf.literal | {d.replace("-", "_", 1) for d in declared}
    out = []
    for word, path in conf.omit_patterns.items():
        pattern = word.replace("-", "_", 1)
        if pattern in keep:
            continue
        try:
            rx = re.compile(pattern[:200])
        except re.error:
            out.append(("", word, path))
            continue
        out += [(m, word, path) for m in modules if rx.search(m)]
    return out


def parse_initrd_modules(text: str | None) -> tuple[list[str], str | None]:
    """INITRD_MODULES of /etc/sysconfig/kernel, and the raw value (None if absent)."""
    raw = None
    for key, _, value in shell_assignments(text):
        if key == "INITRD_MODULES":
            raw = value
    return ([norm(m) for m in (raw or "").split()], raw)


def initramfs_tools_setting(text: str | None, key: str = "MODULES") -> str:
    """A setting of initramfs.conf, e.g. MODULES (most, dep, list, netboot)."""
    value = ""
    for k, _, v in shell_assignments(text):
        if k == key:
            value = v
    return value


def selinux_mode(text: str | None) -> str:
    """SELINUX= of /etc/selinux/config, lower-cased: enforcing, permissive, disabled ('' when unset)."""
    return initramfs_tools_setting(text, "SELINUX").lower()
