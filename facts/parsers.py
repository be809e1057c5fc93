"""
Pure parsers: text gathered from a host in, plain data out. No I/O on the host.

Every function here is unit-tested on captured real outputs (tests/fixtures).
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import distro

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
    config: dict[str, str] = field(default_factory=dict)  # CONFIG_X -> y/m/n
    builtin: set[str] = field(default_factory=set)
    modules: dict[str, list[str]] = field(default_factory=dict)  # name -> deps
    absent: set[str] = field(default_factory=set)


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


# What a host may send. Its output is untrusted: anything else is refused (and makes the host
# an error, never "compliant"), and no value outside these shapes reaches a command or a path.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._@+,-]{0,127}"
DUMPED_FILES = re.compile(
    "^(?:/etc/os-release|/usr/lib/os-release|/etc/(?:SuSE|redhat|centos|euleros|openEuler|system|lsb)-release"
    "|/etc/debian_version|/etc/initramfs-tools/modules|/etc/initramfs-tools/initramfs\\.conf|/etc/dracut\\.conf"
    "|/etc/sysconfig/kernel|/etc/sysconfig/bootloader|/etc/default/grub"
    "|/boot/grub2?/(?:grub\\.cfg|grubenv)|/boot/grub/(?:menu\\.lst|grub\\.conf|default)"
    f"|/etc/dracut\\.conf\\.d/{_NAME}\\.conf|/usr/lib/dracut/dracut\\.conf\\.d/{_NAME}\\.conf"
    f"|/boot/loader/entries/{_NAME}\\.conf|/boot/efi/EFI/{_NAME}/grub\\.cfg)$"
)
MODPROBE_FILE = re.compile(f"^/(?:etc|run|usr/lib|lib)/modprobe\\.d/{_NAME}\\.conf$")
# An absolute path without "." or ".." components, empty components or control characters.
SAFE_PATH = re.compile(r"^(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f]+)+$")
DIGITS = re.compile(r"^[0-9]{1,18}$")


def safe_path(path: str) -> bool:
    """An absolute, normalised path (no '.', '..', '//', control characters)."""
    return bool(SAFE_PATH.match(path)) and "//" not in path


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
                if len(words) == 2 and KERNEL_NAME.match(arg):
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
            elif kind == "fingerprint":
                snap.fingerprint = arg
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
            elif key in ("bootfree", "uid") and value and not DIGITS.match(value):
                problem(f"unexpected {key} value {value!r}")
            else:
                snap.meta[key] = value
        elif kind == "kernel":
            if not _parse_kernel_line(snap.kernels[arg], line):
                problem(f"unexpected line for kernel {arg}: {line!r}")
        elif kind == "blacklist":
            path, lineno, driver, text = (line.split(":", 3) + ["", "", ""])[:4]
            if MODPROBE_FILE.match(path) and DIGITS.match(lineno) and MODULE_NAME.match(driver):
                snap.blacklists.append({"file": path, "line": lineno, "driver": driver, "text": text})
            else:
                problem(f"unexpected modprobe.d line {line!r}")
        elif kind == "listfail" and initrd is not None:
            if line.strip():
                sep = ": " if initrd.error and initrd.error.endswith(")") else " "
                initrd.error = (initrd.error or "") + sep + line.strip()
        elif kind == "initrd" and initrd is not None:
            key, _, value = line.partition(" ")
            if key == "m" and MODULE_NAME.match(value):
                initrd.modules.add(value)
            elif key == "kver":
                initrd.kernel_dirs.add(value)
            elif key == "modprobe":
                initrd.modprobe_files.append(value)
            elif key == "lister":
                initrd.lister = value
            elif key == "key":
                initrd.key = value
            elif key == "cached":
                initrd.cached = True
            elif key == "magic":
                initrd.magic = value
            else:
                problem(f"unexpected line for initrd {initrd.path}: {line!r}")
    close()
    return snap


def _parse_kernel_line(kernel: RawKernel, line: str) -> bool:
    """Add one line of a kernel section to kernel; False when the line is malformed."""
    words = line.split()
    if not words:
        return True
    if words[0] == "image" and len(words) == 2 and safe_path(words[1]):
        kernel.images.append(words[1])
    elif words[0] == "has" and len(words) == 2 and words[1] in ("builtin", "dep"):
        setattr(kernel, f"has_{words[1]}", True)
    elif words[0] in ("builtin", "absent") and len(words) == 2 and MODULE_NAME.match(words[1]):
        (kernel.builtin if words[0] == "builtin" else kernel.absent).add(words[1])
    elif words[0] == "module" and len(words) == 4 and MODULE_NAME.match(words[1]):
        deps = [] if words[3] == "-" else [d for d in words[3].split(",") if d]
        if not all(MODULE_NAME.match(d) for d in deps):
            return False
        kernel.modules[words[1]] = deps
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
}


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


# The release files distro may read, each copied to a fixed place of a private directory.
# The destination is ours, never a path the host sent (host output is untrusted input).
RELEASE_FILES = (
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/SuSE-release",
    "/etc/redhat-release",
    "/etc/centos-release",
    "/etc/euleros-release",
    "/etc/openEuler-release",
    "/etc/system-release",
)


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
    if did in SUSE_IDS or "suse" in likes:
        family = suse_family(did, version)
    elif did in RHEL_IDS or likes & {"rhel", "fedora", "centos"}:
        family = "rhel"
    elif did in DEBIAN_IDS or "debian" in likes or "ubuntu" in likes:
        family = "debian"
    else:
        reason = f"unsupported distribution {name or did} {version}".strip()
    return Distro(did, name or did, version, family, reason)


def suse_family(did: str, version: str) -> str:
    """SUSE procedure: legacy (SLES < 12 SP1, openSUSE < 13), 12 SP1, or later."""
    v = _version_tuple(version) or (0,)
    major, minor = v[0], (v[1] if len(v) > 1 else 0)
    if "tumbleweed" in did or "slowroll" in did:
        return "suse"
    if did.startswith("opensuse"):
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


@dataclass
class BootEntry:
    """One boot entry: its title, the kernel version it boots and the initrd it loads."""

    title: str
    kernel: str  # kernel version, from the linux line ('' if unknown)
    initrd: str  # initrd path as written in the config ('' if none)
    ident: str = ""
    path: str = ""  # GRUB index path, e.g. "0" or "1>2"


@dataclass
class BootConfig:
    """Entries of the bootloader configuration that is in use, and the default one."""

    source: str  # the file(s) read
    entries: list[BootEntry] = field(default_factory=list)
    default: int | None = None  # index into entries
    warnings: list[str] = field(default_factory=list)


def kernel_from_path(path: str) -> str:
    """Kernel version from a kernel image path: /boot/vmlinuz-5.14.0-1.el9 -> 5.14.0-1.el9."""
    base = path.rsplit("/", 1)[-1]
    m = re.match(r"^(?:vmlinuz|vmlinux|bzImage|Image|image|kernel)-(.+)$", base)
    return m.group(1) if m else ""


def choose_initrd(paths: list[str]) -> str:
    """The main initrd of an entry's initrd line (skipping early-microcode images)."""
    paths = [p for p in paths if not p.startswith("$")]  # e.g. RHEL's $tuned_initrd
    main = [p for p in paths if not re.search(r"ucode|microcode", p.rsplit("/", 1)[-1])]
    return (main or paths or [""])[-1]


def _grub_words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def parse_grubenv(text: str | None) -> dict[str, str]:
    """Variables of a grubenv block."""
    env = {}
    for line in (text or "").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def parse_grub2(text: str, env: dict[str, str], source: str) -> BootConfig:
    """Entries and default of a GRUB 2 grub.cfg (menuentry/submenu blocks, set default=)."""
    cfg = BootConfig(source)
    stack: list[tuple[str, int]] = []  # (kind, index) of open menuentry/submenu blocks
    counters: list[int] = [0]  # entry counter per nesting level of submenus
    current: BootEntry | None = None
    defaults: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = _grub_words(line)
        if not words:
            continue
        head = words[0]
        if head in ("menuentry", "submenu"):
            title = words[1] if len(words) > 1 else ""
            ident = ""
            for i, w in enumerate(words):
                if w in ("$menuentry_id_option", "--id") and i + 1 < len(words):
                    ident = words[i + 1]
            index = counters[-1]
            counters[-1] += 1
            path = ">".join([str(i) for _, i in stack if _ == "submenu"] + [str(index)])
            if head == "submenu":
                stack.append(("submenu", index))
                counters.append(0)  # a submenu is not bootable; its entries count from 0
            else:
                stack.append(("menuentry", index))
                current = BootEntry(title, "", "", ident, path)
            continue
        if head == "}" or line == "}":
            if stack:
                kind, _ = stack.pop()
                if kind == "menuentry" and current is not None:
                    cfg.entries.append(current)
                    current = None
                elif kind == "submenu":
                    counters.pop()
            continue
        if current is not None and head in ("linux", "linux16", "linuxefi", "kernel") and len(words) > 1:
            current.kernel = kernel_from_path(words[1])
        elif current is not None and head in ("initrd", "initrd16", "initrdefi") and len(words) > 1:
            current.initrd = choose_initrd(words[1:])
        elif head == "set" and len(words) > 1 and words[1].startswith("default="):
            defaults.append(words[1].split("=", 1)[1])
    if not cfg.entries:
        return cfg
    wanted = [d for d in defaults if "next_entry" not in d] or ["0"]
    value = wanted[-1]
    if "saved_entry" in value or value == "saved":
        value = env.get("saved_entry", "0") or "0"
    cfg.default = _resolve_default(cfg.entries, value, cfg.warnings)
    return cfg


def _resolve_default(entries: list[BootEntry], value: str, warnings: list[str]) -> int:
    value = value.strip().strip("'\"")
    for i, entry in enumerate(entries):
        if value and value in (entry.path, entry.ident, entry.title):
            return i
    # "gnulinux-advanced-xxx>gnulinux-5.10-advanced-xxx": the last part names the entry.
    last = value.rsplit(">", 1)[-1]
    for i, entry in enumerate(entries):
        if last and last in (entry.ident, entry.title):
            return i
    if value == "0":
        return 0
    warnings.append(f"default entry {value!r} not found; GRUB falls back to the first entry")
    return 0


def bls_sort_key(entry: BootEntry) -> list:
    """Sort key approximating GRUB's BLS order (rpm version compare, newest first)."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[a-zA-Z]+", entry.kernel)]


def parse_bls(files: dict[str, str | None], env: dict[str, str]) -> BootConfig:
    """Entries of /boot/loader/entries/*.conf (Boot Loader Specification), newest first."""
    cfg = BootConfig("/boot/loader/entries")
    for path, text in sorted(files.items()):
        if not path.startswith("/boot/loader/entries/") or text is None:
            continue
        keys: dict[str, list[str]] = {}
        for line in text.splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                keys.setdefault(parts[0], []).append(parts[1])
        ident = path.rsplit("/", 1)[-1][: -len(".conf")]
        kernel = keys.get("version", [""])[0] or kernel_from_path(keys.get("linux", [""])[0])
        initrds = " ".join(keys.get("initrd", [])).split()
        cfg.entries.append(BootEntry(keys.get("title", [ident])[0], kernel, choose_initrd(initrds), ident, ""))
    cfg.entries.sort(key=bls_sort_key, reverse=True)
    for i, entry in enumerate(cfg.entries):
        entry.path = str(i)
    if cfg.entries:
        cfg.default = _resolve_default(cfg.entries, env.get("saved_entry", "0") or "0", cfg.warnings)
    return cfg


def parse_grub_legacy(text: str, saved: str | None, source: str) -> BootConfig:
    """Entries and default of a GRUB legacy menu.lst / grub.conf."""
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
            current = BootEntry(rest.strip(), "", "", "", str(len(cfg.entries)))
            cfg.entries.append(current)
        elif current is not None and key == "kernel" and rest:
            current.kernel = kernel_from_path(rest.split()[0].split(")")[-1])
        elif current is not None and key == "initrd" and rest:
            current.initrd = choose_initrd([w.split(")")[-1] for w in rest.split()])
    if cfg.entries:
        if default == "saved":
            default = (saved or "0").strip().split()[0] if (saved or "").strip() else "0"
        cfg.default = _resolve_default(cfg.entries, default, cfg.warnings)
    return cfg


def parse_boot(files: dict[str, str | None]) -> BootConfig | None:
    """The bootloader configuration in use, read (never regenerated): BLS, GRUB 2 or GRUB legacy."""
    env: dict[str, str] = {}
    for p in ("/boot/grub2/grubenv", "/boot/grub/grubenv"):
        env = env or parse_grubenv(files.get(p))
    grub2 = [(p, files.get(p)) for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")]
    grub2 += sorted((p, t) for p, t in files.items() if p.startswith("/boot/efi/EFI/"))
    has_bls = any(p.startswith("/boot/loader/entries/") for p in files)
    warnings = [f"{p}: unreadable" for p, t in grub2 if p in files and t is None]
    for path, text in grub2:
        if not text:
            continue
        if has_bls and re.search(r"^\s*blscfg\b", text, re.M):
            cfg = parse_bls(files, env)
            cfg.source = f"{path} (blscfg) + /boot/loader/entries"
            cfg.warnings = warnings + cfg.warnings
            return cfg
        cfg = parse_grub2(text, env, path)
        if cfg.entries:
            cfg.warnings = warnings + cfg.warnings
            return cfg
    if has_bls:
        cfg = parse_bls(files, env)
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
    text.split(newline): a backslash-newline or a quote left open continues on the next line.
    """
    out = []
    lines = (text or "").split("\n")
    i = 0
    while i < len(lines):
        first, stmt = i, lines[i].replace("\r", "")
        while i + 1 < len(lines):
            if stmt.endswith("\\") and not stmt.endswith("\\\\"):
                stmt = stmt[:-1] + lines[i + 1].replace("\r", "")
            elif _open_quote(stmt):
                stmt = stmt + "\n" + lines[i + 1].replace("\r", "")
            else:
                break
            i += 1
        out.append((first, i, stmt))
        i += 1
    return out


def _open_quote(stmt: str) -> bool:
    try:
        shlex.split(stmt, comments=True)
    except ValueError as exc:
        return "quotation" in str(exc)
    return False


def shell_assignments(text: str | None) -> list[tuple[str, str, str]]:
    """(key, operator, value) of the shell-style assignments in a dracut/sysconfig file."""
    out = []
    for _, _, line in shell_statements(text):
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)(\+?=)(.*)$", line, re.S)
        if not m:
            continue
        key, op, rest = m.groups()
        try:
            words = shlex.split(rest, comments=True)
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
    hostonly: str = ""
    files: list[str] = field(default_factory=list)


def parse_dracut(files: dict[str, str | None]) -> DracutConf:
    """Drivers declared (add_drivers/force_drivers) and omitted, and the hostonly setting."""
    conf = DracutConf(files=dracut_conf_files(files))
    for path in conf.files:
        for key, op, value in shell_assignments(files.get(path)):
            if key in ("add_drivers", "force_drivers", "omit_drivers"):
                target = conf.omit_drivers if key == "omit_drivers" else conf.add_drivers
                if op == "=" and key != "force_drivers":
                    target.clear()
                for d in value.split():
                    target[norm(d)] = path
            elif key == "hostonly":
                conf.hostonly = value
    return conf


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
