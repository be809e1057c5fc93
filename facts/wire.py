"""
What did gather.sh answer? The ``@@KVM`` wire format (specified below), the shapes each value
of it may take, and its parser: ``parse_snapshot()``, untrusted text in, a checked Snapshot out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kvm_drivers.facts.distro import RELEASE_FILES
from kvm_drivers.hostside import (  # defined once, sent to gather.sh
    DUMPED_FILES,
    FINGERPRINT_MAX,
    INITRD_CONF_FILE,
    MODPROBE_FILE,
)
from kvm_drivers.hostside import NAME as _NAME

MARK = "@@KVM "


@dataclass
class RawKernel:
    """What the gather script saw of one /lib/modules/<version> directory."""

    version: str
    images: list[str] = field(default_factory=list)
    has_builtin: bool = False
    has_dep: bool = False
    has_config: bool = False  # /boot/config-<version> exists (its virtio lines are in config)
    config: dict[str, str] = field(default_factory=dict)  # CONFIG_X -> y/m/n
    builtin: set[str] = field(default_factory=set)
    modules: dict[str, str] = field(default_factory=dict)  # loadable module name -> its file
    absent: set[str] = field(default_factory=set)
    closures: dict[str, list[str]] = field(default_factory=dict)  # driver -> it and the modules it needs


@dataclass
class RawInitrd:
    """What the gather script saw of one initrd image."""

    path: str
    size: int = 0
    modules: set[str] = field(default_factory=set)
    kernel_dirs: set[str] = field(default_factory=set)
    modprobe_files: list[str] = field(default_factory=list)
    lister: str = "native"
    error: str | None = None
    key: str = ""  # "path|size|mtime|ctime": identifies this exact file for the listing cache
    cached: bool = False  # the host did not list it: the caller's cache has its listing
    magic: str = ""  # its first bytes in hex ('' when the host did not send them)
    # What its own files say about loading modules (read from inside the image; cached with the
    # listing): module configuration lines (modprobe.d files in effect, etc/modprobe.conf,
    # etc/modprobe.conf.local) that may stop a module the image holds or a looked-up driver, as
    # {file, line, driver, text}: file the path inside the image (no leading '/'), line the first
    # line of the logical line, driver the module it names (one entry per module a pattern names),
    # text the logical line, continuations joined (facts/blacklist.py stops() judges them);
    blocks: list[dict[str, str]] = field(default_factory=list)
    # the words of its command-line files (etc/cmdline, etc/cmdline.d/*.conf) that blacklist such a
    # module, as {file, word} (facts/blacklist.py cmdline_stops() judges them);
    cmdline: list[dict[str, str]] = field(default_factory=list)
    conf_read: int | None = None  # how many of those files were read (None: not read)
    # why those files could not be read: '' when they were (or when the image could not be listed
    # at all: see error). Never read: never "no blacklist".
    conf_error: str = ""


@dataclass
class KernelImage:
    """A kernel image a bootloader entry names without a version in its file name."""

    path: str  # as written in the bootloader configuration
    resolved: str = ""  # the file on the running system ('' if not found)
    version: str = ""  # first word of the bzImage header's version string
    same: list[str] = field(default_factory=list)  # versioned images that are the same file


@dataclass
class Snapshot:
    """Everything one run of gather.sh printed, split into its sections."""

    meta: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)  # path -> text (None: unreadable)
    kernels: dict[str, RawKernel] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # path as written -> resolved path ("" if none)
    initrds: dict[str, RawInitrd] = field(default_factory=dict)
    blacklists: list[dict[str, str]] = field(default_factory=list)  # {file, line, driver, text}
    fingerprint: str = ""  # of everything but the live values ('' when it cannot be trusted)
    complete: bool = False
    problems: list[str] = field(default_factory=list)  # what in the answer was malformed or refused
    kimages: dict[str, KernelImage] = field(default_factory=dict)  # unversioned kernel image paths as written
    drivers: list[str] = field(default_factory=list)  # the drivers the host looked up
    # live, every run: {mounts: {point: device}, swaps: [device], uuids: {device: UUID}, efi: "yes"|"no"|"",
    # esp: [path relative to /boot/efi], netgen: "yes"|"no"} (gather_disks)
    disks: dict[str, Any] = field(default_factory=dict)


# What a host may send. Its output is untrusted: anything else is refused (and makes the host
# an error, never "compliant"), and no value outside these shapes reaches a command or a path.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
# The same files inside an initrd (paths as its listing shows them), and its command-line files.
INITRD_CMDLINE_FILE = re.compile(f"^etc/cmdline(?:\\.d/{_NAME}\\.conf)?$")
CONF_TEXT_MAX = 4096  # characters of a module configuration line or command-line word at most
CONF_TEXT = re.compile(f"^[\\t -~]{{1,{CONF_TEXT_MAX}}}$")  # printable ASCII (tabs too)
CMDLINE_WORD = re.compile(f"^[!-~]{{1,{CONF_TEXT_MAX}}}$")
# An absolute path without "." or ".." components, empty components or control characters.
SAFE_PATH = re.compile(r"^(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f]+)+$")
DIGITS = re.compile(r"^[0-9]{1,18}$")
FINGERPRINT = re.compile(f"^[!-~]{{1,{FINGERPRINT_MAX}}}$")  # printable ASCII, no space
INITRD_KEY = re.compile(r"^(/[!-~]+)\|[0-9]{1,18}\|[0-9]{1,18}\|[0-9]{1,18}$")  # path|size|mtime|ctime
# How many of each thing an answer may hold: far above what any real host has, low enough that
# what grows with their product (state building, the plan) stays small. More is refused.
MAX_DRIVERS = 256  # drivers looked up (the inventory's list)
MAX_KERNELS = 1024  # /lib/modules directories
MAX_CLOSURE = 256  # modules one driver needs
MAX_KERNEL_DIRS = 64  # kernel versions whose modules one initrd holds
MAX_DISK_LINES = 4096  # lines of the disks section (mounts, swaps, UUIDs, ESP files)
UUID = re.compile(r"^[0-9A-Fa-f][0-9A-Fa-f-]{7,35}$")
ESP_PATH = re.compile(r"^EFI/[A-Za-z0-9._@+,-]{1,64}(?:/[A-Za-z0-9._@+,-]{1,128})?$")
MAX_SAME = 64  # versioned images that are the same file as one unversioned kernel image
RELEASE_MAX = 64 * 1024  # bytes of a release file (they are read by the distro library, not in linear time)
PATH_MAX = 4096  # bytes of a path on Linux (limits.h): no file has a longer one


def safe_path(path: str) -> bool:
    """An absolute, normalised path (no '.', '..', '//', control characters), of at most PATH_MAX characters."""
    return len(path) <= PATH_MAX and bool(SAFE_PATH.match(path)) and "//" not in path


# --- the @@KVM wire format (gather.sh -> parse_snapshot) -----------------------------------
#
# gather.sh prints sections; each opens with a line "@@KVM <kind> [args]" (args split on single
# spaces) and runs until the next such line. Outside file contents only printable ASCII travels.
#
#   meta                       "key value" lines: uname K, uid N, bootfree KIB (digits),
#                              bootmount OPTS, tool NAME [PATH] (no PATH: not installed),
#                              grubby PATH (grubby --default-kernel, where grubby exists),
#                              drivers N N... (the drivers this answer looked up).
#                              Sent twice: live values first, then (after the fingerprint) the rest.
#   unchanged FP               the host computed fingerprint FP, equal to the one the caller sent:
#                              the caller's cached copy of everything after "fingerprint" stands
#                              (cache.expand() splices it in); followed by "end".
#   fingerprint FP             FP of everything below ('' when it cannot be trusted); at most
#                              FINGERPRINT_MAX characters of printable ASCII, no space.
#   oddname PATH               a file or directory whose name is not plain ASCII was skipped.
#   file PATH                  the file's bytes, then one extra newline (removed again here);
#                              PATH only one of DUMPED_FILES.
#   unreadable PATH            PATH exists but could not be read or is not UTF-8.
#   blacklist                  "FILE:LINE:DRIVER:TEXT" module configuration lines that may stop a
#                              looked-up driver or a module of its closure: FILE a modprobe.d file
#                              in effect, /etc/modprobe.conf or /etc/modprobe.conf.local
#                              (MODPROBE_FILE); each logical line whose first word is blacklist,
#                              install or alias and whose name (a pattern for install and alias)
#                              matches DRIVER, once per DRIVER; LINE its first line, TEXT its
#                              physical lines joined without the backslash-newlines (at most
#                              CONF_TEXT_MAX characters). facts/blacklist.py says which stop it.
#   kernel K                   one /lib/modules/K: "image PATH", "has builtin|dep|config", kernel config
#                              lines, and per looked-up driver N "builtin N", "absent N", or
#                              "closure N N,DEP,DEP..." (N is a module: the modules it needs,
#                              itself first, computed on the host from modules.dep) with a
#                              "module M PATH" line for each module of a closure.
#   ref AS_WRITTEN RESOLVED    an initrd path a bootloader entry names (or a conventional name),
#                              and the file it is on this system ('' when none).
#   initrd PATH SIZE           one initrd: "key PATH|SIZE|MTIME|CTIME", "magic HEX" (first bytes),
#                              then "cached" (the caller's listing stands) or its listing:
#                              "lister python", "m MODULE", "kver K", "modprobe FILE"; and what
#                              its own files say (read from inside it): "conf FILE:LINE:DRIVER:TEXT"
#                              (as a blacklist line; FILE the path inside the image, INITRD_CONF_FILE;
#                              DRIVER a module it holds or a looked-up one), "cmdline FILE:WORD"
#                              (FILE etc/cmdline or etc/cmdline.d/*.conf; WORD modprobe.blacklist=,
#                              module_blacklist=, rd.driver.blacklist=, rdblacklist= or blacklist=
#                              naming such a module), then "confread N" (N files read: the lines
#                              above are all there is) or "conferror WHY" (they could not be read).
#                              A listed image with neither: its configuration is unknown.
#   listfail RC                the listing of the last initrd failed; up to 5 lines of its output.
#   kimage AS_WRITTEN RESOLVED an unversioned kernel image a bootloader entry names:
#                              "version K" (from its bzImage header), "same PATH" (same file).
#   end                        the script finished: an answer without it is cut short.
#
# Every value is checked against these shapes; anything else is recorded in Snapshot.problems
# and makes the host an error (see facts/state.py host_state). So are counts past the MAX_*
# caps above (drivers, kernels, closure and kernel-directory sizes, same files, release-file
# and path lengths), and bootloader configurations past MAX_BOOT_ENTRIES (boot_entries.py): every
# step of reading an answer is linear in its size, and nothing grows with a product of two counts.


def _disk_line(disks: dict[str, Any], line: str) -> bool:
    """Take one line of the disks section into disks; False when it has no shape gather.sh gives."""
    words = line.split(" ")
    if sum(len(v) for v in disks.values() if isinstance(v, (dict, list))) >= MAX_DISK_LINES:
        return True  # far past any real machine: the rest is not read (nothing depends on all of it)
    if words[0] == "mount" and len(words) == 3 and (words[1] == "/" or safe_path(words[1])) and safe_path(words[2]):
        disks["mounts"][words[1]] = words[2]
    elif words[0] == "swap" and len(words) == 2 and safe_path(words[1]):
        disks["swaps"].append(words[1])
    elif words[0] == "uuid" and len(words) == 3 and safe_path(words[1]) and UUID.match(words[2]):
        disks["uuids"][words[1]] = words[2]
    elif words[0] in ("efi", "netgen") and len(words) == 2 and words[1] in ("yes", "no"):
        disks[words[0]] = words[1]
    elif words[0] == "esp" and len(words) == 2 and ESP_PATH.match(words[1]):
        disks["esp"].append(words[1])
    else:
        return False
    return True


def parse_snapshot(lines: list[str]) -> Snapshot:
    """Split the gather script's output into a Snapshot.

    The output is untrusted: malformed lines, unknown sections and values of the wrong shape
    are not used; each is recorded in ``problems`` (the host is then an error).
    """
    snap = Snapshot()
    kind, arg = "", ""
    body: list[str] = []
    initrd: RawInitrd | None = None

    def problem(text: str) -> None:
        if len(snap.problems) < 20:
            snap.problems.append(text[:200].encode("ascii", "backslashreplace").decode())

    def close() -> None:
        if kind == "file":  # gather.sh adds one newline after the file: join() drops it again
            snap.files[arg] = "\n".join(body)
            if arg in RELEASE_FILES and len(snap.files[arg]) > RELEASE_MAX:  # type: ignore[arg-type]
                problem(f"release file {arg} is larger than {RELEASE_MAX} bytes: not read")
                snap.files[arg] = None

    for line in lines:
        if line.startswith(MARK):
            words = line[len(MARK) :].split(" ")
            close()
            kind, arg, body = words[0], (words[1] if len(words) > 1 else ""), []
            if kind in ("file", "unreadable") and not DUMPED_FILES.match(arg):
                problem(f"unexpected file section {arg!r}")
                kind = "ignored"
            elif kind == "unreadable":
                snap.files[arg] = None
                kind = ""
            elif kind == "kernel":
                if len(snap.kernels) >= MAX_KERNELS and arg not in snap.kernels:
                    problem(f"more than {MAX_KERNELS} kernel directories: the others are not read")
                    kind = "ignored"
                elif len(words) == 2 and KERNEL_NAME.match(arg):
                    snap.kernels[arg] = RawKernel(arg)
                else:
                    problem(f"unexpected kernel directory name {arg!r}")
                    kind = "ignored"
            elif kind == "ref":
                resolved = words[2] if len(words) > 2 else ""
                # initrd words as a config writes them (e.g. "$tuned_initrd"): odd ones are not used
                if len(words) <= 3 and safe_path(arg) and (not resolved or safe_path(resolved)):
                    snap.refs[arg] = resolved
            elif kind == "initrd":
                size = words[2] if len(words) > 2 else ""
                if len(words) != 3 or not safe_path(arg) or not DIGITS.match(size):
                    problem(f"unexpected initrd section {' '.join(words[1:])!r}")
                    kind, initrd = "ignored", None
                else:
                    snap.initrds[arg] = initrd = RawInitrd(arg, int(size))
            elif kind == "listfail":
                if initrd is None:
                    problem("a listing failure outside any initrd section")
                    kind = "ignored"
                else:
                    initrd.error = f"listing failed (exit {arg})"
            elif kind == "kimage":
                resolved = words[2] if len(words) > 2 else ""
                if len(words) <= 3 and safe_path(arg) and (not resolved or safe_path(resolved)):
                    snap.kimages[arg] = KernelImage(arg, resolved)
                else:
                    problem(f"unexpected kernel image section {' '.join(words[1:])!r}")
                    kind = "ignored"
            elif kind == "fingerprint":  # one longer than gather.sh ever sends is not kept (nor sent back)
                snap.fingerprint = arg if len(words) == 2 and FINGERPRINT.match(arg) else ""
            elif kind == "end":
                snap.complete = True
            elif kind == "disks":
                snap.disks = {"mounts": {}, "swaps": [], "uuids": {}, "efi": "", "esp": [], "netgen": ""}
            elif kind not in ("file", "meta", "blacklist", "unchanged", "oddname"):
                problem(f"unknown section {kind!r}")
                kind = "ignored"
            if kind == "unchanged":  # cache.expand() replaces it with our copy: here that copy is gone
                problem("the host answered 'unchanged' but the cached answer it refers to is gone; run again")
            if kind == "oddname":
                problem(f"a file name that is not plain ASCII in {arg!r}: it cannot be read safely")
            continue
        if kind == "file":
            body.append(line)
        elif kind == "meta":
            key, _, value = line.partition(" ")
            if key == "tool":
                name, _, path = value.partition(" ")
                if path:
                    snap.tools[name] = path
            elif key == "drivers":
                snap.drivers = [d for d in value.split(" ") if d]
                if not all(MODULE_NAME.match(d) for d in snap.drivers):
                    problem(f"unexpected driver names {value!r:.80}")
                    snap.drivers = [d for d in snap.drivers if MODULE_NAME.match(d)]
                if len(snap.drivers) > MAX_DRIVERS:
                    problem(f"more than {MAX_DRIVERS} drivers looked up")
                    snap.drivers = snap.drivers[:MAX_DRIVERS]
            elif key in ("bootfree", "uid") and value and not DIGITS.match(value):
                problem(f"unexpected {key} value {value!r}")
            else:
                snap.meta[key] = value
        elif kind == "disks":
            if not _disk_line(snap.disks, line):
                problem(f"unexpected line for the disks: {line!r}")
        elif kind == "kernel":
            if not _parse_kernel_line(snap.kernels[arg], line):
                problem(f"unexpected line for kernel {arg}: {line!r}")
        elif kind == "blacklist":
            entry = _conf_line(line, MODPROBE_FILE)
            if entry:
                snap.blacklists.append(entry)
            else:
                problem(f"unexpected modprobe.d line {line!r}")
        elif kind == "kimage":
            key, _, value = line.partition(" ")
            if key == "version" and KERNEL_NAME.match(value):
                snap.kimages[arg].version = value
            elif key == "same" and safe_path(value) and len(snap.kimages[arg].same) < MAX_SAME:
                snap.kimages[arg].same.append(value)
            else:
                problem(f"unexpected line for kernel image {arg}: {line!r}")
        elif kind == "listfail" and initrd is not None:
            if line.strip() and initrd.error and initrd.error.count("\n") + len(initrd.error) < 2000:
                sep = ": " if initrd.error and initrd.error.endswith(")") else " "
                initrd.error = (initrd.error or "") + sep + line.strip()
        elif kind == "initrd" and initrd is not None:
            key, _, value = line.partition(" ")
            if key == "m" and MODULE_NAME.match(value):
                initrd.modules.add(value)
            elif key == "kver" and (len(initrd.kernel_dirs) < MAX_KERNEL_DIRS or value in initrd.kernel_dirs):
                initrd.kernel_dirs.add(value)
            elif key == "modprobe":
                initrd.modprobe_files.append(value)
            elif key == "lister":
                initrd.lister = value
            elif key == "key" and (m := INITRD_KEY.match(value)) and safe_path(m.group(1)):
                initrd.key = value  # it goes back to the host (the listing cache): checked like a path
            elif key == "cached":
                initrd.cached = True
            elif key == "magic":
                initrd.magic = value
            elif key == "conf" and (entry := _conf_line(value, INITRD_CONF_FILE)):
                initrd.blocks.append(entry)
            elif key == "cmdline" and (entry := _cmdline_word(value)):
                initrd.cmdline.append(entry)
            elif key == "confread" and DIGITS.match(value):
                initrd.conf_read = int(value)
            elif key == "conferror" and value and CONF_TEXT.match(value):
                initrd.conf_error = value[:300]
            else:
                problem(f"unexpected line for initrd {initrd.path}: {line!r}")
    close()
    for initrd in snap.initrds.values():  # listed, but its files not read: unknown, never "none"
        if initrd.conf_read is None and not (initrd.conf_error or initrd.cached or initrd.error):
            initrd.conf_error = "the answer does not say what its modprobe.d and command-line files hold"
    return snap


def _conf_line(line: str, files: re.Pattern) -> dict[str, str] | None:
    """{file, line, driver, text} of a "FILE:LINE:DRIVER:TEXT" line of the answer (None: malformed)."""
    path, lineno, driver, text = (line.split(":", 3) + ["", "", ""])[:4]
    if files.match(path) and DIGITS.match(lineno) and MODULE_NAME.match(driver) and CONF_TEXT.match(text):
        return {"file": path, "line": lineno, "driver": driver, "text": text}
    return None


def _cmdline_word(value: str) -> dict[str, str] | None:
    """{file, word} of a "FILE:WORD" line of the answer (None: malformed)."""
    path, _, word = value.partition(":")
    if INITRD_CMDLINE_FILE.match(path) and CMDLINE_WORD.match(word):
        return {"file": path, "word": word}
    return None


def _parse_kernel_line(kernel: RawKernel, line: str) -> bool:
    """Add one line of a kernel section to kernel; False when the line is malformed."""
    words = line.split()
    if not words:
        return True
    if words[0] == "image" and len(words) == 2 and safe_path(words[1]):
        kernel.images.append(words[1])
    elif words[0] == "has" and len(words) == 2 and words[1] in ("builtin", "dep", "config"):
        setattr(kernel, f"has_{words[1]}", True)
    elif words[0] in ("builtin", "absent") and len(words) == 2 and MODULE_NAME.match(words[1]):
        (kernel.builtin if words[0] == "builtin" else kernel.absent).add(words[1])
    elif words[0] == "module" and len(words) == 3 and MODULE_NAME.match(words[1]):
        kernel.modules[words[1]] = words[2]
    elif words[0] == "closure" and len(words) == 3 and MODULE_NAME.match(words[1]):
        closure = words[2].split(",")
        if len(closure) > MAX_CLOSURE or not all(MODULE_NAME.match(m) for m in closure) or closure[0] != words[1]:
            return False
        kernel.closures[words[1]] = closure
    elif line.startswith(("CONFIG_", "# CONFIG_")):  # kernel config lines; odd values are not used
        if m := re.match(r"^CONFIG_(\w+)=(\w+)$", line):
            kernel.config[m.group(1)] = m.group(2)
        elif m := re.match(r"^# CONFIG_(\w+) is not set", line):
            kernel.config[m.group(1)] = "n"
    else:
        return False
    return True
