"""
Pure parsers: text gathered from a host in, plain data out. No I/O on the host.

Every function here is unit-tested on captured real outputs (tests/fixtures).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import distro

from kvm_drivers.hostside import (  # the lists and limits gather.sh is sent: defined there, once
    DUMPED_FILES,
    FINGERPRINT_MAX,
    INITRD_CONF_FILE,
    MODPROBE_FILE,
    OTHER_LOADERS,
    RELEASE_FILES,
    REPORTED_BOOT_FILES,
)
from kvm_drivers.hostside import NAME as _NAME

MARK = "@@KVM "

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


# --- raw snapshot ---------------------------------------------------------------------------


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


# What a host may send. Its output is untrusted: anything else is refused (and makes the host
# an error, never "compliant"), and no value outside these shapes reaches a command or a path.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
# DUMPED_FILES, MODPROBE_FILE, INITRD_CONF_FILE (the same files inside an initrd): kvm_drivers.hostside.
# An initrd's command-line files:
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
# and path lengths), and bootloader configurations past MAX_BOOT_ENTRIES: every step of reading
# an answer is linear in its size, and nothing grows with a product of two counts.


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


# --- distribution ---------------------------------------------------------------------------

RHEL_IDS = {
    "centos",
    "rhel",
    "redhat",
    "euleros",
    "openeuler",
    "rocky",
    "almalinux",
    "ol",
    "oracle",
    "fedora",
    "anolis",
    "hce",
    "kylin",
    "circle",
    "scientific",
    "cloudlinux",
    "amzn",
}
DEBIAN_IDS = {"debian", "ubuntu", "linuxmint", "raspbian", "devuan", "uos", "deepin"}
SUSE_IDS = {
    "sles",
    "sled",
    "sles_sap",
    "suse",
    "opensuse",
    "opensuse-leap",
    "opensuse-tumbleweed",
    "opensuse-slowroll",
    "sle-micro",
    "sl-micro",
    "suse-microos",
    "opensuse-microos",
    "alp",
    "alp-dolomite",
    "alp-micro",
}
# SUSE products whose version numbers the procedure's thresholds speak of (SLES 11 / 12 SP1,
# openSUSE 13). The others (SUSE Linux Micro 5.x/6.x, SLE Micro, ALP, MicroOS, Tumbleweed)
# number their releases their own way and all build their initrds with dracut.
SLES_NUMBERED = {"sles", "sled", "sles_sap", "sle_hpc", "suse"}
OPENSUSE_NUMBERED = {"opensuse", "opensuse-leap"}


@dataclass
class Distro:
    """The distribution of a host and the procedure family it belongs to."""

    id: str
    name: str
    version: str
    family: str | None  # rhel, debian, suse-legacy, suse-12sp1, suse; None when unsupported
    reason: str = ""  # why it is unsupported


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# RELEASE_FILES (kvm_drivers.hostside): the release files distro may read, each copied to a fixed
# place of a private directory. The destination is ours, never a path the host sent (host output is
# untrusted input).


def parse_distro(files: dict[str, str | None]) -> Distro:
    """Identify the distribution from its release files (os-release or the legacy ones)."""
    with tempfile.TemporaryDirectory(prefix="kvm-distro-") as tmp:
        root = Path(tmp)
        (root / "etc").mkdir()
        (root / "usr/lib").mkdir(parents=True)
        for path in RELEASE_FILES:  # our constants: only these names are ever written
            text = files.get(path)
            if text is not None:
                (root / path.lstrip("/")).write_text(text, errors="replace")
        try:
            info = distro.LinuxDistribution(root_dir=str(root), include_lsb=False, include_uname=False)
            did, name, version, like = info.id(), info.name(), info.version(best=True), info.like()
        except Exception as exc:  # noqa: BLE001 - distro chokes on some garbage; report it
            return Distro("unknown", "unknown", "", None, f"release files could not be parsed: {exc}")
    did = did.lower()
    if not did:  # no os-release nor a release file distro reads: the older files, parsed here
        did, name, version = _legacy_release(files)
    suse_release = files.get("/etc/SuSE-release")
    if suse_release and not files.get("/etc/os-release") and not files.get("/usr/lib/os-release"):
        fields = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", suse_release, re.M))
        version = fields.get("VERSION", version)
        if fields.get("PATCHLEVEL", "0") != "0":
            version = f"{version}.{fields['PATCHLEVEL']}"
        did = "opensuse" if "opensuse" in suse_release.lower() else "sles"
    if not did:
        return Distro(
            "unknown",
            "unknown",
            "",
            None,
            "no release file found (/etc/os-release, /etc/SuSE-release, /etc/redhat-release, ...)",
        )
    likes = set(like.lower().split())
    family: str | None = None
    reason = ""
    os_release = files.get("/etc/os-release") or files.get("/usr/lib/os-release") or ""
    platform = re.search(r"^PLATFORM_ID=[\"']?platform:(\w+)", os_release, re.M)
    if did == "uos" and platform and re.match(r"^uelc?\d+$", platform.group(1)):
        # UOS / UnionTech OS Server 20 (PLATFORM_ID platform:uel20 or uelc20) is RPM-based with
        # dracut; the UOS desktop and Deepin are Debian-based (Ansible's distribution facts
        # route them the same way: test/units/module_utils/facts/system/distribution/fixtures).
        family = "rhel"
    elif did in SUSE_IDS or "suse" in likes:
        family = suse_family(did, version)
    elif did in RHEL_IDS or likes & {"rhel", "fedora", "centos"}:
        family = "rhel"
    elif did in DEBIAN_IDS or "debian" in likes or "ubuntu" in likes:
        family = "debian"
    else:
        reason = f"unsupported distribution {name or did} {version}".strip()
    return Distro(did, name or did, version, family, reason)


def _legacy_release(files: dict[str, str | None]) -> tuple[str, str, str]:
    """(id, name, version) from the files older hosts have instead of os-release.

    /etc/system-release alone (Amazon Linux AMI before 2016), /etc/lsb-release alone
    (DISTRIB_ID/DISTRIB_RELEASE), /etc/debian_version alone. ('', '', '') when none tells.
    """
    system = (files.get("/etc/system-release") or "").strip()
    # ^(.*?)\s+release\s+(\S+), without its quadratic backtracking over a run of blanks: the
    # first match starts where a run of blanks does, and '.' stops at a newline
    m = re.search(r"(?<!\s)\s+release\s+(\S+)", system)
    if m and "\n" not in system[: m.start()]:
        name = system[: m.start()]
        did = "amzn" if name.lower().startswith("amazon linux") else name.split()[0].lower()
        return did, name, m.group(1)
    lsb = dict(re.findall(r"^(DISTRIB_\w+)=[\"']?([^\"'\n]*)", files.get("/etc/lsb-release") or "", re.M))
    if lsb.get("DISTRIB_ID"):
        did = lsb["DISTRIB_ID"]
        return did.lower(), lsb.get("DISTRIB_DESCRIPTION") or did, lsb.get("DISTRIB_RELEASE", "")
    debian = (files.get("/etc/debian_version") or "").strip()
    if debian:
        return "debian", "Debian", debian if re.match(r"^\d", debian) else ""
    return "", "", ""


def suse_family(did: str, version: str) -> str:
    """SUSE procedure: legacy (SLES < 12 SP1, openSUSE < 13), 12 SP1, or later."""
    v = _version_tuple(version) or (0,)
    major, minor = v[0], (v[1] if len(v) > 1 else 0)
    if did not in SLES_NUMBERED | OPENSUSE_NUMBERED:
        return "suse"  # Micro, ALP, MicroOS, Tumbleweed, Slowroll: dracut, their own numbering
    if did in OPENSUSE_NUMBERED:
        return "suse-legacy" if major < 13 else "suse"
    if major < 12 or (major == 12 and minor == 0):
        return "suse-legacy"
    if (major, minor) == (12, 1):
        return "suse-12sp1"
    return "suse"


def kernel_version_tuple(version: str) -> tuple[int, ...]:
    """(2, 6, 32) from '2.6.32-754.el6.x86_64'."""
    return _version_tuple(version.split("-", 1)[0]) or (0,)


# --- bootloader -----------------------------------------------------------------------------
#
# The default entry is worked out the way GRUB itself does it; the sources read (rhboot/grub2,
# whose branches carry upstream GRUB plus the Fedora/RHEL patches) are cited where used:
# - upstream grub-core/normal/menu.c (branch master, rhel-7.9): get_entry_number() parses the
#   "default" variable with grub_strtoul(); only when it does not start with a number is it
#   compared, with menuentry_eq(), to the title or id of the entries of the CURRENT menu (the
#   top level first). menuentry_eq() compares one '>'-separated component ('>>' is a literal
#   '>'). Not found or out of range: entry 0. grub_menu_execute_entry(): a submenu that is
#   booted gets as its own "default" what follows the first '>' (else "default" is unset:
#   its entry 0).
# - Fedora/RHEL menu.c (rhel-8-main, rhel-9-main, fedora-44; patch "Fix menu entry selection
#   based on ID and title", 2018): get_entry_number_helper() tries the ids first, then the
#   titles, and only then a number that must be the whole value ("1>2" is not a number there).
#   rhel-9-main and fedora-44 no longer unset "default" when entering a submenu (the new
#   environment context copies it, normal/context.c grub_env_context_open()).
# - grub-core/commands/menuentry.c: an entry without --id has its title as its id.
# - grub-core/commands/blscfg.c: see parse_bls().


@dataclass
class BootEntry:
    """One boot entry: its title, the kernel version it boots and the initrd it loads."""

    title: str
    kernel: str  # kernel version, from the linux line ('' if unknown)
    initrd: str  # initrd path as written in the config ('' if none)
    ident: str = ""
    path: str = ""  # GRUB index path, e.g. "0" or "1>2"
    linux_path: str = ""  # kernel image path as written in the config (no device prefix)
    options: str = ""  # the kernel command line after the image path, its variables expanded
    unknown: str = ""  # what in the entry's own lines only GRUB knows at boot ('' when nothing)
    extra_initrds: list[str] = field(default_factory=list)  # further images on its initrd line (not microcode)


@dataclass
class BootConfig:
    """Entries of the bootloader configuration that is in use, and the default one."""

    source: str  # the file(s) read
    entries: list[BootEntry] = field(default_factory=list)
    default: int | None = None  # index into entries
    warnings: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)  # what keeps the boot path from being known: an error


def kernel_from_path(path: str) -> str:
    """Kernel version from a kernel image path: /boot/vmlinuz-5.14.0-1.el9 -> 5.14.0-1.el9."""
    base = path.rsplit("/", 1)[-1]
    m = re.match(r"^(?:vmlinuz|vmlinux|bzImage|Image|image|kernel)-(.+)$", base)
    return m.group(1) if m else ""


def strip_device(path: str) -> str:
    """A GRUB file name without its device: (hd0,1)/vmlinuz -> /vmlinuz, ($root)/x -> /x."""
    return re.sub(r"^\([^)]*\)", "", path)


def system_path(path: str) -> str:
    """Where a file a bootloader names is on the running system.

    GRUB names files on the file system it reads: /vmlinuz-K on a separate /boot partition,
    /boot/vmlinuz-K on the root file system, /@/boot/vmlinuz-K when the root is the btrfs
    subvolume @ (Debian/Ubuntu installers), /@boot/vmlinuz-K for a subvolume mounted on /boot.
    """
    path = re.sub(r"^/@[^/]*(?=/)", "", path)
    return path if path.startswith("/boot/") else "/boot" + path


def choose_initrd(paths: list[str]) -> str:
    """The main initrd of an entry's initrd line (skipping early-microcode images)."""
    paths = [strip_device(p) for p in paths if not p.startswith("$")]  # e.g. RHEL's $tuned_initrd
    main = [p for p in paths if not re.search(r"ucode|microcode", p.rsplit("/", 1)[-1])]
    return (main or paths or [""])[-1]


def extra_initrds(paths: list[str], main: str) -> list[str]:
    """The images of an initrd line besides the main one and early microcode: each is unpacked
    over the main one at boot, so its files (a modprobe.d blacklist) count too.
    """
    paths = [strip_device(p) for p in paths if not p.startswith("$")]
    return [p for p in paths if p != main and not re.search(r"ucode|microcode", p.rsplit("/", 1)[-1])]


def parse_grubenv(text: str | None) -> dict[str, str]:
    """Variables of a grubenv block."""
    env = {}
    for line in (text or "").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


# rpm version comparison ----------------------------------------------------------------------


def _is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def rpmvercmp(a: str, b: str, caret: str | None = "^") -> int:
    """Segment-wise version comparison of rpm: 1 if a is newer, 0 if equal, -1 if b is newer.

    Written after rpm's rpmvercmp() (rpmio/rpmvercmp.c) and checked against rpm's own table
    tests/rpmvercmp.at. '~' sorts before anything, even the end of the string; ``caret`` sorts
    after the end of the string but before anything else: '^' in rpm, '+' in the copy inside
    GRUB's blscfg.c on Fedora and RHEL 9 (vercmp()), None in RHEL 8's copy (no such separator).
    Only ASCII letters and digits make segments; anything else separates them.
    """
    if a == b:
        return 0
    i, j, la, lb = 0, 0, len(a), len(b)

    def skip(s: str, k: int, n: int) -> int:
        while k < n and not _is_alnum(s[k]) and s[k] != "~" and s[k] != caret:
            k += 1
        return k

    while i < la or j < lb:
        i, j = skip(a, i, la), skip(b, j, lb)
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if caret and (ca == caret or cb == caret):
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != caret:
                return 1
            if cb != caret:
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        test = str.isdigit if ca.isdigit() else str.isalpha
        isnum = test is str.isdigit
        i2, j2 = i, j
        while i2 < la and a[i2].isascii() and test(a[i2]):
            i2 += 1
        while j2 < lb and b[j2].isascii() and test(b[j2]):
            j2 += 1
        one, two = a[i:i2], b[j:j2]
        if not two:  # segments of different types: the numeric one is newer
            return 1 if isnum else -1
        if isnum:
            one, two = one.lstrip("0"), two.lstrip("0")
            if len(one) != len(two):
                return 1 if len(one) > len(two) else -1
        if one != two:
            return 1 if one > two else -1
        i, j = i2, j2
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def _split_nvr(text: str, has_name: bool) -> tuple[str, str, str]:
    """(name, version, release) as blscfg.c split_package_string() cuts them at the last '-'s."""
    rest, dash, release = text.rpartition("-")
    if not dash:
        rest, release = text, ""
    has_release = bool(dash)
    if not has_name:
        version, name = rest, ""
    else:
        name, dash2, version = rest.rpartition("-")
        if not dash2:
            name, version = rest, ""
        if not dash2:  # no version: the release moves up into it
            version, release, has_release = release, "", False
    if not version and has_release:
        version, release = release, ""
    return name, version, release


def _split_cmp(a: str, b: str, has_name: bool, caret: str | None) -> int:
    """blscfg.c split_cmp(): name, then version, then release, each with vercmp()."""
    na, va, ra = _split_nvr(a, has_name)
    nb, vb, rb = _split_nvr(b, has_name)
    for x, y in ((na, nb), (va, vb), (ra, rb)):
        r = rpmvercmp(x, y, caret)
        if r:
            return r
    return 0


_SEGMENTS = {c: re.compile("[0-9]+|[A-Za-z]+|" + ("[~" + re.escape(c) + "]" if c else "~")) for c in ("^", "+", None)}


def version_key(text: str, caret: str | None = "^") -> tuple:
    """A key that orders versions as rpmvercmp() does: key(a) < key(b) iff rpmvercmp(a, b) < 0,
    equal iff it is 0.

    rpmvercmp() walks both strings in step, skipping separators (anything but ASCII letters,
    digits, '~' and the caret), and compares one token of each at a time: '~' sorts before the
    end of the string, the end before the caret, the caret before any segment, a letter segment
    before a number segment; letters by their string, numbers by their value (no leading zeros:
    longer is larger, then as strings). That is the order of these token tuples, compared
    lexicographically, the end being the token (1,).
    """
    out: list[tuple] = []
    for m in _SEGMENTS[caret].finditer(text):
        t = m.group()
        if t == "~":
            out.append((0,))
        elif t == caret:
            out.append((2,))
        elif t[0].isdigit():
            t = t.lstrip("0")
            out.append((4, len(t), t))
        else:
            out.append((3, t))
    out.append((1,))
    return tuple(out)


def split_key(text: str, has_name: bool, caret: str | None) -> tuple:
    """A key that orders as blscfg.c split_cmp() does (name, version, release by version_key())."""
    return tuple(version_key(part, caret) for part in _split_nvr(text, has_name))


# GRUB 2 script (the subset grub.cfg files use) -----------------------------------------------

# Variables GRUB >= 2.00 sets itself (grub-core/normal/main.c, features[]).
GRUB_FEATURES = (
    "feature_chainloader_bpb feature_ntldr feature_platform_search_hint feature_default_font_path "
    "feature_all_video_module feature_menuentry_id feature_menuentry_options feature_200_final "
    "feature_nativedisk_cmd feature_timeout_style"
).split()
# Variables GRUB sets at run time that a file cannot tell: a test on them has no known answer.
GRUB_RUNTIME = set(
    "grub_platform grub_cpu prefix root cmdpath config_directory config_file boot "
    "lang locale_dir secondary_locale_dir net_default_server pxe_default_server".split()
)
# REPORTED_BOOT_FILES (kvm_drivers.hostside): files whose presence gather.sh always reports (dumped
# when they exist): a GRUB test '-f' on one of them has a known answer, and sourcing one that is not
# there does nothing.
# Commands that read another configuration file and put its menu in place of this one
# (grub-core/normal/main.c configfile, commands/legacycfg.c, commands/syslinuxcfg.c): not followed.
GRUB_CONFIGFILE = frozenset(
    "configfile legacy_configfile legacy_source extract_entries_configfile extract_entries_source "
    "extract_legacy_entries_configfile extract_legacy_entries_source syslinux_configfile syslinux_source "
    "extract_syslinux_entries_configfile extract_syslinux_entries_source".split()
)
_UNKNOWN_WORD = object()  # a test operand whose value only GRUB knows

_VAR = re.compile(r"\$\{([A-Za-z0-9_#?*@]+)\}|\$([A-Za-z_][A-Za-z0-9_]*|[0-9#?*@])")
_Word = list  # parts (text, quote) with quote "'", '"' or ''


def _add(word: list | None, text: str, quote: str) -> list:
    """Append a part to a word under construction, merging it with a last part of the same
    quoting (parts are [chunks, quote] until _done(): building a word stays linear).
    """
    word = word or []
    if word and word[-1][1] == quote:
        word[-1][0].append(text)
    else:
        word.append([[text], quote])
    return word


def _done(word: list) -> list:
    """A finished word: a list of (text, quote) parts."""
    return [("".join(chunks), quote) for chunks, quote in word]


_PLAIN = re.compile(r"[^\\\s;#{}'\"$]+")
_BLANKS = re.compile(r"[ \t\r]+")
_SEPARATORS = re.compile(r"[\n;][\n; \t\r]*")  # ';' and newlines, and the blanks between them
_IN_DOUBLE_QUOTES = re.compile(r'[^"\\]+')


# Outside a word: a whole plain word ending where a word ends, blanks, separators, or a brace;
# anything else (quotes, '$', a backslash, '#'...) goes through the general rules below.
_SIMPLE = re.compile(r"(?P<w>[^\\\s;#{}'\"$]+)(?=[ \t\r\n;{}]|\Z)|(?P<b>[ \t\r]+)|(?P<s>[\n;][\n; \t\r]*)|(?P<c>[{}])")


def _grub_tokens(text: str) -> Iterator:
    """GRUB script tokens: words (lists of (text, quote) parts), and newline (also for ';'), '{', '}'.

    Blocks opened and closed on one line ('{ true; }') come out as multi-line ones do. A run of
    separators is one newline token (an empty statement does nothing). Runs of plain characters,
    blanks, comments and quoted text are taken whole: the cost is linear in the text, with few
    steps of Python per token.
    """
    word: list | None = None
    i, n = 0, len(text)
    simple = _SIMPLE.match
    while i < n:
        if word is None and (m := simple(text, i)):
            kind = m.lastgroup
            if kind == "w":
                yield [(m.group(), "")]
            elif kind == "s":
                yield "\n"
            elif kind == "c":
                yield m.group()
            i = m.end()
            continue
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                word = _add(word, text[i + 1], "'")
            i += 2
        elif c in " \t\r":
            if word is not None:
                yield _done(word)
                word = None
            i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]
        elif c in "\n;":
            if word is not None:
                yield _done(word)
                word = None
            yield "\n"
            i = _SEPARATORS.match(text, i).end()  # type: ignore[union-attr]
        elif c == "#" and word is None:
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "{}":
            if word is not None:
                yield _done(word)
                word = None
            yield c
            i += 1
        elif c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            word = _add(word, text[i + 1 : j], "'")
            i = j + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n:
                m = _IN_DOUBLE_QUOTES.match(text, j)
                if m:
                    buf.append(m.group())
                    j = m.end()
                elif text[j] == '"':
                    break
                elif j + 1 < n and text[j + 1] in '"\\$':  # a backslash escapes these only
                    buf.append(text[j + 1])
                    j += 2
                else:
                    buf.append("\\")
                    j += 1
            word = _add(word, "".join(buf), '"')
            i = j + 1
        elif c == "$" and text.startswith("${", i):
            j = text.find("}", i)
            j = n - 1 if j < 0 else j
            word = _add(word, text[i : j + 1], "")
            i = j + 1
        else:
            m = _PLAIN.match(text, i)
            j = m.end() if m else i + 1
            word = _add(word, text[i:j], "")
            i = j
    if word is not None:
        yield _done(word)


def _grub_lex(text: str) -> list:
    """All of _grub_tokens(text)."""
    return list(_grub_tokens(text))


class _Unknown(Exception):
    """A value GRUB would know at boot time but the files do not tell."""


@dataclass
class _Item:
    """A menu item as GRUB builds it: an entry, or a submenu with its own items."""

    title: str
    ident: str
    children: list[_Item] | None = None  # None: a menuentry
    entry: BootEntry | None = None
    bls: bool = False  # the place where 'blscfg' adds the BLS entries


@dataclass
class _Block:
    kind: str  # menuentry, submenu, function, if, loop
    item: _Item | None = None
    name: str = ""  # a function's name
    steers: str = ""  # a function's body adds menu entries or changes the default: what it does
    state: bool | None = True  # the current branch runs (True), does not (False), or unknown
    taken: bool | None = False  # an earlier branch of this if ran
    saved: _Vars | None = None  # the variables outside a submenu's own context
    # What the blocks below this one say (set when it is pushed; they cannot change while it is
    # on the stack: only the innermost block's branch moves): runs(), entry_block(), menu() and
    # runs_in_entry() as they were just before it. Each statement then costs O(1), however deep.
    outer_runs: bool | None = True
    outer_entry: _Block | None = None
    outer_menu: list[_Item] | None = None
    outer_in_entry: bool = True


class _Vars:
    """The variables of one GRUB environment context (normal/context.c).

    A submenu's body runs in a new context that starts as a copy of the exported variables
    (upstream, RHEL 8) or of all of them (RHEL 9, Fedora). The copy is made lazily: a name not
    set in the new context is looked up in the one below it, if it was exported when the submenu
    was opened (``cutoff``: export numbers below it; None: every variable). Nothing is written
    below while the submenu is open, so this is the copy, at O(1) per submenu.
    """

    __slots__ = ("own", "below", "cutoff", "exports")

    def __init__(self, own: dict[str, str | None], below: _Vars | None = None, cutoff: int | None = None,
                 exports: dict[str, int] | None = None):  # fmt: skip
        self.own = own
        self.below = below
        self.cutoff = cutoff
        self.exports = exports if exports is not None else {}  # name -> when it was first exported

    def find(self, name: str) -> tuple[bool, str | None]:
        """(is set, value)."""
        ctx: _Vars | None = self
        while ctx is not None:
            if name in ctx.own:
                return True, ctx.own[name]
            if ctx.cutoff is not None and self.exports.get(name, ctx.cutoff) >= ctx.cutoff:
                return False, None
            ctx = ctx.below
        return False, None

    def get(self, name: str) -> str | None:
        return self.find(name)[1]

    def __contains__(self, name: str) -> bool:
        return self.find(name)[0]

    def __setitem__(self, name: str, value: str | None) -> None:
        self.own[name] = value


_HEADS = ("then", "else", "do")
MAX_SUBMENU_DEPTH = 16  # submenus inside submenus: real menus nest one or two deep
MAX_BOOT_ENTRIES = 4096  # menu entries and submenus of a bootloader configuration (real ones: a few hundred)
EXPANSION_BUDGET = 8  # variables may expand to this many times the size of grub.cfg (+ 1 MiB) in all


class BootConfigTooLarge(ValueError):
    """A bootloader configuration whose reading would cost more than a real one ever does: refused."""


@dataclass
class ExpansionBudget:
    """Characters variable expansions may still produce, shared by the grub.cfg files of one host
    (each one read adds EXPANSION_BUDGET times its size): a grubenv value expanded by many files
    costs in all, not per file.
    """

    left: int = 1 << 20


class _GrubScript:
    """Runs the statements of a grub.cfg that decide the menu and the default, nothing else."""

    def __init__(
        self, env: dict[str, str], export_all: bool = False, users_optional: bool = False,
        budget: ExpansionBudget | None = None, files: dict[str, str | None] | None = None, config_file: str = "",
    ):  # fmt: skip
        self.users_optional = users_optional  # Red Hat's GRUB: '--users' may come without a value
        # load_env: grubenv's variables (00_header loads them first) over GRUB's own; both are
        # read through, never copied (one grubenv, many grub.cfg files on an EFI partition)
        below = _Vars(env, _Vars(dict.fromkeys(GRUB_FEATURES, "y")))  # type: ignore[arg-type]
        self.export_count = 1
        exports = dict.fromkeys(GRUB_FEATURES, 0)  # normal/main.c exports the feature variables
        self.vars = _Vars({}, below, exports=exports)
        if config_file:  # normal/main.c sets it to the directory of the file it reads
            self.vars["config_directory"] = config_file.rsplit("/", 1)[0]
        self.files = files or {}  # the files the host sent: 'source' reads them, '-f' tests them
        self.reading = [config_file or "grub.cfg"]  # the file being run, and the ones sourcing it
        self.functions: dict[str, str] = {}  # name -> what it does to the menu ('' nothing)
        self.sourced: set[str] = set()  # the files 'source' ran
        self.doubts: list[str] = []  # what keeps the menu or the default from being known
        self.export_all = export_all
        self.top: list[_Item] = []
        self.stack: list[_Block] = []
        self.submenus = 0  # submenu blocks open
        self.items = 0  # items added to a menu
        self.warnings: list[str] = []
        self.default_doubt = ""
        self.budget = budget or ExpansionBudget()  # run() adds the file's share

    # values
    def expand(self, word: _Word, keep_empty: bool = False) -> str | None:
        out = []
        budget = self.budget.left
        for text, quote in word:
            if quote == "'":
                out.append(text)
                budget -= len(text)
                continue
            pos = 0
            for m in _VAR.finditer(text):
                out.append(text[pos : m.start()])
                name = m.group(1) or m.group(2)
                known, value = self.vars.find(name)
                if value is None and (known or name in GRUB_RUNTIME):
                    raise _Unknown(name)  # set at boot time, or under a condition we cannot evaluate
                out.append(value or "")
                budget -= m.start() - pos + len(value or "")
                if budget < 0:  # e.g. 'set a=$a$a' over and over: twice the size each time
                    raise BootConfigTooLarge("grub.cfg: its variables expand to far more text than the file holds")
                pos = m.end()
            out.append(text[pos:])
            budget -= len(text) - pos
        if budget < 0:
            raise BootConfigTooLarge("grub.cfg: its variables expand to far more text than the file holds")
        self.budget.left = budget
        value = "".join(out)
        if not value and not keep_empty and all(q == "" for _, q in word):
            return None  # an unquoted empty expansion is no argument at all
        return value

    def args(self, words: list[_Word]) -> list[str]:
        return [v for v in (self.expand(w) for w in words) if v is not None]

    # context: each answer is the innermost block's, combined with what the blocks below it said
    # when it was pushed (see _Block.outer_runs)
    def runs(self) -> bool | None:
        """Whether a statement here runs when grub.cfg is read (None: cannot tell)."""
        if not self.stack:
            return True
        b = self.stack[-1]
        if b.outer_runs is False or b.kind in ("menuentry", "submenu", "function") or b.state is False:
            return False
        return None if b.outer_runs is None or b.state is None or b.kind == "loop" else True

    def entry_block(self) -> _Block | None:
        if not self.stack:
            return None
        b = self.stack[-1]
        return b if b.kind in ("menuentry", "submenu", "function") else b.outer_entry

    def menu(self) -> list[_Item] | None:
        """The item list that a menuentry here would join (None: not built now)."""
        if not self.stack:
            return self.top
        b = self.stack[-1]
        if b.kind == "submenu":
            return b.item.children if b.item is not None and b.state is not False else None
        if b.kind in ("menuentry", "function") or b.state is False:
            return None
        return b.outer_menu

    def push(self, block: _Block) -> None:
        block.outer_runs, block.outer_entry = self.runs(), self.entry_block()
        block.outer_menu, block.outer_in_entry = self.menu(), self.runs_in_entry()
        self.stack.append(block)

    # statements
    def test(self, words: list[_Word]) -> bool | None:
        """GRUB's test command (grub-core/commands/test.c) on what a file can know: True, False,
        or None when it depends on what only GRUB knows (an operand that is unknown makes its own
        comparison unknown, not the whole test: 'false -a unknown' is false).
        """
        args: list = []
        for w in words:
            try:
                v = self.expand(w)
            except _Unknown:
                v = _UNKNOWN_WORD
            if v is not None:
                args.append(v)
        if args and args[0] == "[" and args[-1] == "]":
            args = args[1:-1]
        elif args and args[0] == "test":
            args = args[1:]
        elif args in (["true"], ["false"]):
            return args == ["true"]
        else:
            return None  # a command's exit status (search, keystatus, ...)

        def primary(a: list) -> bool | None:
            nots = 0
            while nots < len(a) and a[nots] == "!":  # '! ! x': each '!' negates what follows
                nots += 1
            if nots:
                r = primary(a[nots:])
                return None if r is None else r != (nots % 2 == 1)
            if _UNKNOWN_WORD in a:
                return None
            if len(a) == 2 and a[0] in ("-f", "-e", "-s"):
                return self.exists(a[1])
            if len(a) == 1:
                return a[0] != ""
            if len(a) == 2 and a[0] in ("-n", "-z"):
                return (a[1] != "") == (a[0] == "-n")
            if len(a) == 3 and a[1] in ("=", "==", "!="):
                return (a[0] == a[2]) == (a[1] != "!=")
            if len(a) == 3 and a[1] in ("-eq", "-ne", "-lt", "-gt", "-le", "-ge"):
                try:
                    x, y = int(a[0]), int(a[2])
                except ValueError:
                    return None
                return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-gt": x > y, "-le": x <= y, "-ge": x >= y}[a[1]]
            return None  # file tests and the rest

        def split(a: list[str], op: str) -> list[list[str]]:
            out: list[list[str]] = [[]]
            for x in a:
                out.append([]) if x == op else out[-1].append(x)
            return out

        any_true = False
        unknown = False
        for group in split(args, "-o"):
            values = [primary(p) for p in split(group, "-a")]
            value = False if False in values else None if None in values else True
            any_true |= value is True
            unknown |= value is None
        return True if any_true else None if unknown else False

    def exists(self, grub_path: str) -> bool | None:
        """Whether a file GRUB tests for is there (None: a file the host does not report on)."""
        path = system_path(strip_device(grub_path))
        if path in self.files:
            return True
        return False if path in REPORTED_BOOT_FILES else None

    def doubt(self, text: str) -> None:
        if len(self.doubts) < 20 and text not in self.doubts:
            self.doubts.append(f"{self.reading[-1]}: {text}")

    def source(self, words: list[_Word], runs: bool | None) -> None:
        """'source FILE' ('. FILE'): FILE runs here, in this context; its entries join this menu."""
        try:
            args = self.args(words)
        except _Unknown as exc:
            self.doubt(f"sources a file named through ${exc.args[0]}, which only GRUB knows")
            return
        if not args:
            return
        path = system_path(strip_device(args[0]))
        text = self.files.get(path)
        if path in self.files and text is None:
            self.doubt(f"sources {path}, which could not be read")
        elif text is None:
            if path not in REPORTED_BOOT_FILES:  # those are reported when there: this one is not
                self.doubt(f"sources {path}, which kvm-drivers does not read")
        elif runs is None:
            self.doubt(f"sources {path} under a condition that cannot be evaluated")
        elif path in self.reading or path in self.sourced or len(self.reading) > 8:
            self.doubt(f"sources {path} again (a loop, twice, or nested too deeply): not followed")
        else:  # each file at most once: what is run stays linear in what the host sent
            self.sourced.add(path)
            self.reading.append(path)
            self.run(text)
            self.reading.pop()

    def assign(self, name: str, word: _Word) -> None:
        runs = self.runs()
        if runs is False:
            return
        value: str | None
        try:
            value = self.expand(word, keep_empty=True)
        except _Unknown as exc:
            value = None
            if name == "default":
                self.default_doubt = f"default set from ${exc.args[0]}, which only GRUB knows"
        if runs is None:
            if name == "default":
                self.default_doubt = "a 'set default' runs under a condition that cannot be evaluated"
            value = None
        self.vars[name] = value

    def statement(self, words: list[_Word], opens: bool) -> None:
        if not words and not opens:
            return
        k = 0
        while k < len(words) and len(words[k]) == 1 and words[k][0][1] == "" and words[k][0][0] in _HEADS:
            if words[k][0][0] == "else" and self.stack and self.stack[-1].kind == "if":
                b = self.stack[-1]
                b.state = False if b.taken is True else None if b.taken is None else True
            k += 1
        words = words[k:] if k else words
        if not words:
            if opens:
                self.push(_Block("function"))
            return
        head = "".join(t for t, _ in words[0])
        inner = self.entry_block()
        if head == "if" or head == "elif":
            if head == "if":
                self.push(_Block("if"))
            b = self.stack[-1] if self.stack and self.stack[-1].kind == "if" else _Block("if")
            cond = self.test(words[1:]) if not (inner and inner.kind != "submenu") else None
            if b.taken is True:
                b.state = False
            else:
                b.state = cond if b.taken is False else (None if cond is not False else False)
                b.taken = True if cond is True and b.taken is False else (b.taken if cond is False else None)
            return
        if head == "fi" or head == "done":
            if self.stack and self.stack[-1].kind in ("if", "loop"):
                self.stack.pop()
            return
        if head in ("while", "until", "for"):
            self.push(_Block("loop", state=None))
            return
        if head in ("menuentry", "submenu") and opens:
            self.steer(f"adds menu entries ({head})")
            item = self.new_item(head, words[1:])
            where = self.menu()
            if where is not None and item is not None:
                self.add(where, item)
            block = _Block(head, item, state=True)
            self.push(block)
            if head == "submenu":
                # Its body runs in a new context (normal/context.c grub_env_context_open()):
                # upstream and RHEL 8 copy only exported variables, RHEL 9 and Fedora all of them.
                self.submenus += 1
                if self.submenus > MAX_SUBMENU_DEPTH:
                    raise BootConfigTooLarge(f"grub.cfg: submenus nested more than {MAX_SUBMENU_DEPTH} deep")
                block.saved = self.vars
                self.vars = _Vars({}, self.vars, None if self.export_all else self.export_count, self.vars.exports)
            return
        if opens:  # function NAME {, or anything else that opens a block
            name = "".join(t for t, _ in words[1]) if head == "function" and len(words) > 1 else ""
            self.push(_Block("function", name=name))
            return
        if inner is not None:
            if inner.kind == "menuentry" and inner.item is not None and self.runs_in_entry():
                self.entry_line(inner.item.entry, head, words[1:])
            elif inner.kind != "menuentry" and (head in ("source", ".") or head in GRUB_CONFIGFILE):
                self.steer(f"reads another file ({head})")
            elif inner.kind != "menuentry" and head in self.functions and self.functions[head]:
                self.steer(self.functions[head])
            elif inner.kind != "menuentry" and re.match(r"^(set )?(default|saved_entry|next_entry)=", " ".join(
                    "".join(t for t, _ in w) for w in words[:2])):  # fmt: skip
                self.steer("changes the default entry")
            return
        runs = self.runs()
        if head in ("source", ".") and runs is not False:
            self.source(words[1:], runs)
        elif head in GRUB_CONFIGFILE and runs is not False:
            what = " ".join("".join(t for t, _ in w) for w in words[1:2])
            self.doubt(f"runs '{head} {what}'{'' if runs else ' (under a condition)'}: its menu would replace "
                       "this one, and kvm-drivers does not follow it")  # fmt: skip
        elif head in self.functions and self.functions[head] and runs is not False:
            self.doubt(f"calls function {head}, which {self.functions[head]}: kvm-drivers does not follow it")
        if head == "export" and self.runs() is not False:
            for name in self.args(words[1:]):
                if name not in self.vars.exports:
                    self.vars.exports[name] = self.export_count
                    self.export_count += 1
        elif head == "blscfg" and self.runs() is not False:
            known, blsdir = self.vars.find("blsdir")
            if len(words) > 1 or known and blsdir not in ("", "/loader/entries", "/boot/loader/entries"):
                self.doubt("runs blscfg on entries other than /boot/loader/entries: not read")
            where = self.menu()
            if where is not None:
                self.add(where, _Item("", "", None, None, bls=True))
        elif head == "set" and len(words) > 1:
            self.assign_word(words[1])
        elif len(words) == 1:
            self.assign_word(words[0])

    def add(self, menu: list[_Item], item: _Item) -> None:
        self.items += 1
        if self.items > MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"grub.cfg: more than {MAX_BOOT_ENTRIES} menu entries")
        menu.append(item)

    def assign_word(self, word: _Word) -> None:
        """'name=value' as one word ('set name=value' or 'name=value'): the value follows the '='."""
        first, quote = word[0]
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", first, re.S)
        if quote == "" and m:
            self.assign(m.group(1), [(m.group(2), quote)] + word[1:])

    def runs_in_entry(self) -> bool:
        if not self.stack:
            return True
        b = self.stack[-1]
        if b.kind in ("menuentry", "submenu", "function"):
            return True
        return False if b.state is False else b.outer_in_entry

    def new_item(self, kind: str, words: list[_Word]) -> _Item | None:
        words = [[("--id", "")] if w == [("$menuentry_id_option", "")] else w for w in words]  # 00_header's
        try:
            args = self.args(words)
        except _Unknown:
            args = ["".join(t for t, _ in w) for w in words]
        # commands/menuentry.c options, parsed as lib/arg.c grub_arg_parse() does: "--opt value"
        # takes the next word only if it does not start with '-'; an option that needs a value
        # and gets none, or an unknown option, is an error and the entry is not added (e.g.
        # "--users $grub_users --id X" with grub_users unset, upstream). Red Hat's GRUB makes
        # the value of --users optional: rhboot/grub2 commit "Make the menu entry users option
        # argument to be optional" (2018-11-26, Related: rhbz#1652434) gives "users"
        # GRUB_ARG_OPTION_OPTIONAL in menuentry.c options[], which grub_arg_parse() accepts
        # without a value, and grub_cmd_menuentry() then ignores it (branches rhel-8.0.0 to
        # rhel-8-main, rhel-9*, rhel-10*, fedora-30 and later; not rhel-7.x, fedora-29 or
        # before, master). So on the Fedora/RHEL variants such an entry is added.
        title, ident, error, i = "", "", "", 0
        while i < len(args):
            a = args[i]
            if a.startswith("--") and a != "--":
                name, eq, value = a[2:].partition("=")
                if name not in ("class", "users", "hotkey", "source", "id", "unrestricted"):
                    error = f"unknown argument `{a}'"
                elif name != "unrestricted" and not eq:
                    if i + 1 < len(args) and not args[i + 1].startswith("-"):
                        value, i = args[i + 1], i + 1
                    elif not (name == "users" and self.users_optional):
                        error = f"missing mandatory option for `{name}'"
                if name == "id":
                    ident = value
            elif not title:
                title = a
            i += 1
        if error:
            self.warnings.append(f"{kind} {title!r}: {error}: GRUB does not add it")
            return None
        ident = ident or title  # menuentry.c: menu_id = id ? : menu_title
        if kind == "submenu":
            return _Item(title, ident, [])
        return _Item(title, ident, None, BootEntry(title, "", "", ident))

    def entry_line(self, entry: BootEntry | None, head: str, words: list[_Word]) -> None:
        if entry is None:
            return
        args: list[str] = []
        unknown = ""
        for w in words:
            try:
                v = self.expand(w)
            except _Unknown as exc:
                v = "".join(t for t, _ in w)
                m = re.match(r"^\(\$\{?root\}?\)(/.*)$", v)  # ($root)/vmlinuz: the device is dropped anyway
                if m:
                    v = m.group(1)
                else:
                    unknown = unknown or f"${exc.args[0]}"
            if v is not None:
                args.append(v)
        if head in ("linux", "linux16", "linuxefi", "kernel") and args and not entry.linux_path:
            entry.linux_path = strip_device(args[0])
            entry.kernel = kernel_from_path(entry.linux_path)
            entry.options = " ".join(args[1:])
            if unknown:
                entry.unknown = entry.unknown or f"its {head} line uses {unknown}, which only GRUB knows"
        elif head in ("initrd", "initrd16", "initrdefi") and args and not entry.initrd:
            entry.initrd = choose_initrd(args)
            entry.extra_initrds = extra_initrds(args, entry.initrd)
            if unknown:
                entry.unknown = entry.unknown or f"its {head} line uses {unknown}, which only GRUB knows"

    def steer(self, what: str) -> None:
        """A statement inside a function body does what: the function, when called, does it too."""
        for b in reversed(self.stack):
            if b.kind == "function":
                b.steers = b.steers or what
                return
            if b.kind in ("menuentry", "submenu"):
                return

    def close(self) -> None:
        while self.stack:
            b = self.stack.pop()
            if b.saved is not None:
                self.vars = b.saved
                self.submenus -= 1
            if b.kind == "function" and b.name:
                self.functions[b.name] = b.steers
            if b.kind in ("menuentry", "submenu", "function"):
                return

    def run(self, text: str) -> None:
        self.budget.left += EXPANSION_BUDGET * len(text)
        words: list[_Word] = []
        for tok in _grub_tokens(text):
            if tok == "\n":
                if words:
                    self.statement(words, False)
                    words = []
            elif tok == "{":
                self.statement(words, True)
                words = []
            elif tok == "}":
                self.statement(words, False)
                words = []
                self.close()
            else:
                words.append(tok)
        self.statement(words, False)


_DIGITS_OF = {10: re.compile("[0-9]*"), 8: re.compile("[0-7]*"), 16: re.compile("[0-9a-fA-F]*")}


def _grub_strtoul(value: str) -> tuple[int, str] | None:
    """grub_strtoul(value, &tail, 0) (kern/misc.c): (number, tail), None for GRUB_ERR_BAD_NUMBER."""
    s = value.lstrip(" \t\n\r\f\v")
    base = 10
    if s[:2].lower() == "0x":
        base, s = 16, s[2:]
    elif len(s) > 1 and s[0] == "0" and s[1] in "01234567":
        base = 8
    k = _DIGITS_OF[base].match(s).end()  # type: ignore[union-attr]
    if k == 0:
        return None
    return int(s[:k], base), s[k:]


_GT_RUN = re.compile(">+")


def _first_component(spec: str) -> tuple[str, str | None]:
    """('a>b' -> 'a', 'b'): the first '>'-separated component ('>>' is a '>'), and the rest.

    Read left to right, '>>' is a '>' and a single '>' ends the component: in a run of '>', pairs
    are literal, and an odd run's last '>' is the separator.
    """
    for m in _GT_RUN.finditer(spec):
        if (m.end() - m.start()) % 2:
            return spec[: m.end() - 1].replace(">>", ">"), spec[m.end() :]
    return spec.replace(">>", ">"), None


def _entry_number(items: list[_Item], spec: str, fedora: bool) -> int:
    """GRUB's get_entry_number() for one menu level; -1 when nothing matches."""
    first, _ = _first_component(spec)
    if not fedora:  # upstream: a leading number wins, else title or id, entry by entry
        number = _grub_strtoul(spec)
        if number is not None:
            return number[0]
        return next((i for i, it in enumerate(items) if first in (it.title, it.ident)), -1)
    # Fedora/RHEL: ids (the value up to the first blank), then titles, then a whole number.
    if not re.search(r"\s", spec):
        for i, it in enumerate(items):
            if it.ident and it.ident == first:
                return i
    for i, it in enumerate(items):
        if it.title == first:
            return i
    number = _grub_strtoul(spec)
    return number[0] if number is not None and number[1] == "" else -1


def _resolve(
    items: list[_Item], value: str | None, fedora: bool, keep: bool, warnings: list[str]
) -> tuple[_Item | None, str]:
    """The item GRUB boots by default, and its index path ('1>0')."""
    path: list[str] = []
    spec = value
    while True:
        if not items:
            return None, ">".join(path)
        idx = _entry_number(items, spec, fedora) if spec else -1
        if spec and not 0 <= idx < len(items):
            where = "the top level" if not path else f"submenu {'>'.join(path)}"
            warnings.append(f"default entry {spec!r} not found at {where} of the menu (GRUB looks titles and ids "
                            "up there only; an entry inside a submenu needs the 'submenu>entry' form): "
                            "GRUB falls back to its first entry")  # fmt: skip
        if not 0 <= idx < len(items):
            idx = 0
        item = items[idx]
        path.append(str(idx))
        if item.children is None:
            return item, ">".join(path)
        _, rest = _first_component(spec or "")
        spec = rest if rest else (spec if keep else None)  # a submenu named itself: its first entry
        items = item.children


def _flatten(items: list[_Item], prefix: str, out: list[BootEntry]) -> None:
    for i, item in enumerate(items):
        path = f"{prefix}{i}"
        if item.children is not None:
            _flatten(item.children, path + ">", out)
        elif item.entry is not None:
            item.entry.path = path
            out.append(item.entry)


def _grub_variant(files: dict[str, str | None]) -> str:
    """Which GRUB reads the menu, from os-release: 'upstream', 'rhel8' or 'fedora'.

    'rhel8': Fedora's entry lookups, RHEL 8's blscfg order; 'fedora': Fedora's lookups, BLS
    order by file name (Fedora >= 30, RHEL >= 9 and its rebuilds).
    """
    text = files.get("/etc/os-release") or files.get("/usr/lib/os-release") or ""
    fields = {k: v.strip("\"'") for k, v in re.findall(r"^([A-Z_]+)=(.*)$", text, re.M)}
    ids = {fields.get("ID", "")} | set(fields.get("ID_LIKE", "").split())
    major = (_version_tuple(fields.get("VERSION_ID", "")) or (0,))[0]
    if fields.get("ID") == "fedora":
        return "fedora" if major >= 30 or not major else "rhel8"
    if ids & {"rhel", "centos", "fedora"}:
        return "upstream" if 0 < major <= 7 else "rhel8" if major == 8 else "fedora"
    return "upstream"


def parse_grub2(
    text: str, env: dict[str, str], source: str, bls: list[BootEntry] | None = None, variant: str = "upstream",
    budget: ExpansionBudget | None = None, files: dict[str, str | None] | None = None, path: str = "",
) -> BootConfig:  # fmt: skip
    """Entries and default of a GRUB 2 grub.cfg, evaluated as GRUB does (see the notes above).

    Blocks opened and closed on one line, if/elif/else/fi (a 'set default' runs only when its
    condition holds for the grubenv given), variables, submenus, 'source' of the files given
    (``files``, the host's; ``path``: this file's own, for ${config_directory}). ``bls``: the
    entries that a 'blscfg' command in the file adds, in their menu order; when not given and
    ``files`` holds /boot/loader/entries, they are read from there, their variables expanded
    as GRUB expands them at boot (with what grub.cfg and grubenv set). ``budget``: shared with
    the other files read for the same host (default: this file's own).
    """
    cfg = BootConfig(source)
    script = _GrubScript(env, variant == "fedora", variant != "upstream", budget, files, path)
    script.run(text)
    cfg.warnings += script.warnings
    cfg.doubts += script.doubts
    top = script.top
    if bls is None and files is not None and any(i.bls for i in top):
        found = parse_bls(files, env, variant if variant != "upstream" else "fedora", script.vars)
        bls = found.entries
        cfg.warnings += found.warnings
    if bls is not None:  # blscfg puts the BLS entries where it is called
        calls = sum(1 for item in top if item.bls)
        if script.items + calls * (len(bls) - 1) > MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"grub.cfg and its BLS entries: more than {MAX_BOOT_ENTRIES} menu entries")
        spliced: list[_Item] = []
        for item in top:
            spliced += [_Item(e.title, e.ident, None, e) for e in bls] if item.bls else [item]
        top = spliced
    top = [i for i in top if not i.bls]
    _flatten(top, "", cfg.entries)
    if not cfg.entries:
        return cfg
    value = script.vars.get("default")
    if script.default_doubt or value is None and "default" in script.vars:
        cfg.doubts.append(f"{path or source}: cannot tell which entry GRUB boots: "
                          f"{script.default_doubt or 'default cannot be evaluated'}")  # fmt: skip
        value = None
    if env.get("next_entry") and value == env.get("next_entry"):
        cfg.warnings.append(f"next_entry={value!r} in grubenv: the next boot only boots it")
    fedora = variant != "upstream"
    item, _ = _resolve(top, value, fedora, variant == "fedora", cfg.warnings)
    index = _index_of(cfg.entries, item.entry) if item is not None else None
    if index is not None:
        cfg.default = index
    else:
        cfg.warnings.append("the default is an empty submenu")
    return cfg


def _index_of(entries: list[BootEntry], entry: BootEntry | None) -> int | None:
    """Where entry (the object itself) is in entries (None: not there)."""
    return next((i for i, e in enumerate(entries) if e is entry), None)


def _resolve_default(entries: list[BootEntry], value: str, warnings: list[str], variant: str = "upstream") -> int:
    """Index into a flat menu (BLS, GRUB legacy) of the entry GRUB boots for ``value``."""
    items = [_Item(e.title, e.ident, None, e) for e in entries]
    item, _ = _resolve(items, value, variant != "upstream", variant == "fedora", warnings)
    index = _index_of(entries, item.entry) if item is not None else None
    return index if index is not None else 0


def bls_sort_key(variant: str = "fedora", use_version: bool = True) -> Callable[[tuple[str, str]], Any]:
    """Sort key of (file name without '.conf', version field) that puts BLS entries in the
    menu order of GRUB's blscfg when sorted with ``reverse=True`` (newest first).

    rhboot/grub2 grub-core/commands/blscfg.c: on RHEL 8 (branch rhel-8-main) bls_cmp() compares
    the 'version' fields with split_cmp() (version, then release, by vercmp()) when every entry
    has one, then the file names (name-version-release without '.conf'); the sorted array is
    added to the menu from its end. From Fedora 30 and RHEL 9 on (commit 5b463a17e, "store the
    BLS entries in a sorted linked list"; branches rhel-9-main, fedora-44) only the file name
    is compared (split_cmp(), name first: the machine-id), newest first, and a second entry that
    compares equal is dropped.

    The key orders as those comparisons do (see split_key()), so a stable sort on it gives the
    order a stable sort with split_cmp() would, in O(n log n) tuple comparisons.
    """
    caret = None if variant == "rhel8" else "+"

    def key(x: tuple[str, str]) -> tuple:
        name, version = x
        if variant == "rhel8" and use_version:
            return split_key(version, False, caret), split_key(name, True, caret)
        return (split_key(name, True, caret),)

    return key


def _expand_bls(value: str, variables: dict[str, str | None]) -> tuple[str, str]:
    """A BLS value with its $variables expanded as GRUB does at boot, and the first one only
    GRUB knows ('' when none): blscfg.c makes each key a line of a menuentry's script.
    """
    unknown = ""

    def one(m: re.Match) -> str:
        nonlocal unknown
        name = m.group(1) or m.group(2)
        if variables.get(name) is None and (name in variables or name in GRUB_RUNTIME):
            unknown = unknown or f"${name}"
            return ""
        return variables.get(name) or ""

    return _VAR.sub(one, value), unknown


def parse_bls(
    files: dict[str, str | None], env: dict[str, str], variant: str = "fedora",
    variables: dict[str, str | None] | None = None,
) -> BootConfig:
    """Entries of /boot/loader/entries/*.conf (Boot Loader Specification) in blscfg's menu order.

    ``variables``: what grub.cfg set (its $kernelopts, $tuned_initrd...); grubenv's when not given.
    """
    variables = dict(env) if variables is None else variables
    cfg = BootConfig("/boot/loader/entries")
    found: list[tuple[str, str, BootEntry]] = []
    for path, text in sorted(files.items()):
        if not path.startswith("/boot/loader/entries/") or not path.endswith(".conf") or text is None:
            continue
        if len(found) >= MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"/boot/loader/entries: more than {MAX_BOOT_ENTRIES} entries")
        keys: dict[str, list[str]] = {}
        for line in text.splitlines():  # blscfg.c read_entry(): key, blanks, value
            parts = line.strip(" \t").split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                keys.setdefault(parts[0], []).append(parts[1].strip())
        ident = path.rsplit("/", 1)[-1][: -len(".conf")]
        linux = keys.get("linux", [""])[0]
        version = keys.get("version", [""])[0]
        # ostree (Fedora CoreOS): 'version 2' is a deployment serial; the kernel is in the path.
        kernel = kernel_from_path(linux) or (version if re.match(r"^\d+\.\d+", version) else "")
        initrd_line, unknown_i = _expand_bls(" ".join(keys.get("initrd", [])), variables)
        options, unknown_o = _expand_bls(" ".join(keys.get("options", [])), variables)
        initrds = initrd_line.split()
        title = keys.get("title", [linux])[0]
        entry = BootEntry(title, kernel, choose_initrd(initrds), ident, "", linux, " ".join(options.split()))
        entry.extra_initrds = extra_initrds(initrds, entry.initrd)
        if unknown_i or unknown_o:
            entry.unknown = f"its {'initrd' if unknown_i else 'options'} line uses {unknown_i or unknown_o}, " \
                            "which only GRUB knows"
        found.append((ident, version if "version" in keys else "", entry))
    use_version = all(v for _, v, _ in found)  # blscfg.c: sort by version only if every entry has one
    key = bls_sort_key(variant, use_version)
    found.sort(key=lambda f: key((f[0], f[1])), reverse=True)
    # "compares equal" (split_cmp() == 0) is "has the same split_key()": a set finds it
    seen: set[tuple] = set()
    for ident, _, entry in found:
        if variant != "rhel8":
            same = split_key(ident, True, "+")
            if same in seen:
                cfg.warnings.append(f"BLS entry {ident} compares equal to another one: blscfg drops it")
                continue
            seen.add(same)
        if not entry.linux_path:  # blscfg.c create_entry(): "Skipping file ... with no 'linux' key"
            continue
        cfg.entries.append(entry)
    for i, entry in enumerate(cfg.entries):
        entry.path = str(i)
    if cfg.entries:
        cfg.default = _resolve_default(cfg.entries, env.get("saved_entry", ""), cfg.warnings, variant)
    return cfg


def parse_grub_legacy(text: str, saved: str | None, source: str) -> BootConfig:
    """Entries and default of a GRUB legacy menu.lst / grub.conf.

    GRUB 0.97 stage2/cmdline.c and builtins.c: 'default N' counts titles from 0, 'default saved'
    takes the number stored by savedefault/grub-set-default (the file /boot/grub/default);
    a default past the last entry boots entry 0.
    """
    cfg = BootConfig(source)
    default = "0"
    current: BootEntry | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[\s=]+", line, maxsplit=1)
        key, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
        if key == "default" and current is None:
            default = rest.strip()
        elif key == "title":
            if len(cfg.entries) >= MAX_BOOT_ENTRIES:
                raise BootConfigTooLarge(f"{source}: more than {MAX_BOOT_ENTRIES} entries")
            current = BootEntry(rest.strip(), "", "", "", str(len(cfg.entries)))
            cfg.entries.append(current)
        elif current is not None and key == "kernel" and rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            if words:
                current.linux_path = strip_device(words[0])
                current.kernel = kernel_from_path(current.linux_path)
        elif current is not None and key == "initrd" and rest:
            current.initrd = choose_initrd(rest.split())
    if cfg.entries:
        if default == "saved":
            default = (saved or "0").strip().split()[0] if (saved or "").strip() else "0"
        number = _grub_strtoul(default)
        index = number[0] if number is not None else -1
        if not 0 <= index < len(cfg.entries):
            cfg.warnings.append(f"default {default!r} is not an entry number: GRUB boots the first entry")
            index = 0
        cfg.default = index
    return cfg


# OTHER_LOADERS (kvm_drivers.hostside): configurations of boot loaders kvm-drivers does not read: on
# a host that has one, which loader really boots (and what) cannot be told from GRUB's files alone.


def parse_boot(files: dict[str, str | None]) -> BootConfig | None:
    """The bootloader configuration in use, read (never regenerated): BLS, GRUB 2 or GRUB legacy.

    Its ``doubts`` say what keeps the boot path from being known (another loader's configuration
    on the host, a file GRUB would read that was not sent...).
    """
    cfg = _parse_boot(files)
    others = [f"{path} exists: this host may boot with {name}, which kvm-drivers does not read"
              for path, name in OTHER_LOADERS.items() if path in files]  # fmt: skip
    if others:
        cfg = cfg or BootConfig(", ".join(p for p in OTHER_LOADERS if p in files))
        cfg.doubts = others + cfg.doubts
    return cfg


def _parse_boot(files: dict[str, str | None]) -> BootConfig | None:
    env: dict[str, str] = {}
    for p in ("/boot/grub2/grubenv", "/boot/grub/grubenv"):
        env = env or parse_grubenv(files.get(p))
    variant = _grub_variant(files)
    grub2 = [(p, files.get(p)) for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")]
    grub2 += sorted((p, t) for p, t in files.items() if p.startswith("/boot/efi/EFI/"))
    has_bls = any(p.startswith("/boot/loader/entries/") for p in files)
    warnings = [f"{p}: unreadable" for p, t in grub2 if p in files and t is None]
    read: list[BootConfig] = []  # the BLS entries, read once (not once per EFI grub.cfg calling blscfg)
    budget = ExpansionBudget()

    def bls_entries() -> BootConfig:
        if not read:
            read.append(parse_bls(files, env, variant if variant != "upstream" else "fedora"))
        return read[0]

    for path, text in grub2:
        if not text:
            continue
        if re.search(r"^[^\S\n]*blscfg\b", text, re.M):  # = ^\s*blscfg, without its quadratic backtracking
            # the BLS entries are read with this file's variables only when there are any (read
            # once to know): a file that yields none moves on without reading them again
            bls = bls_entries()
            cfg = parse_grub2(text, env, f"{path} (blscfg) + /boot/loader/entries", None if bls.entries else [],
                              variant, budget, files, path)  # fmt: skip
            if cfg.entries:
                cfg.warnings = warnings + bls.warnings + cfg.warnings
                return cfg
            continue
        cfg = parse_grub2(text, env, path, None, variant, budget, files, path)
        if cfg.entries:
            cfg.warnings = warnings + cfg.warnings
            return cfg
    if has_bls:
        cfg = bls_entries()
        cfg.warnings = warnings + cfg.warnings
        return cfg
    for path in ("/boot/grub/menu.lst", "/boot/grub/grub.conf"):
        text = files.get(path)
        if text:
            cfg = parse_grub_legacy(text, files.get("/boot/grub/default"), path)
            if cfg.entries:
                cfg.warnings = warnings + cfg.warnings
                return cfg
    if warnings:
        return BootConfig(", ".join(p for p, _ in grub2 if p in files), warnings=warnings)
    return None


# --- declared drivers -----------------------------------------------------------------------


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
