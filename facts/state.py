"""
The KVM-driver state of one host, as typed data: what ``gather.sh`` saw, interpreted.

``host_state(snapshot)`` is pure: it reads a parsed ``Snapshot`` (facts/wire.py) and
says, for the drivers looked up, which distribution family and initrd generator the host has,
which kernels are installed and which initrd each one boots, what each driver is in each kernel
(built in, a module and its dependency closure, absent), which of those modules each initrd
holds, what the generator's configuration declares, and which modprobe.d lines stop a driver.
It decides nothing: what to do about it is ``operations/plan.py``.

``errors`` are problems of the host itself that mean it cannot be fully checked or safely
changed (an unreadable answer, an unsupported distribution, a default boot entry whose kernel
is not installed...); ``warnings`` are worth a look but change nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kvm_drivers.facts import blacklist as bl
from kvm_drivers.facts import migration
from kvm_drivers.facts.boot_entries import BootConfig, BootEntry, kernel_from_path, system_path
from kvm_drivers.facts.boot_menus import parse_boot, tie_unversioned_entries
from kvm_drivers.facts.config_files import (
    CONFIG_OPTION,
    dracut_omits,
    initramfs_tools_setting,
    norm,
    parse_dracut,
    parse_initrd_modules,
    parse_modules_file,
    selinux_mode,
)
from kvm_drivers.facts.distro import Distro, kernel_version_tuple, parse_distro
from kvm_drivers.facts.wire import (
    DIGITS,
    KERNEL_NAME,
    MODPROBE_FILE,
    MODULE_NAME,
    RawInitrd,
    RawKernel,
    Snapshot,
    safe_path,
)
from kvm_drivers.hostside import CONFIG_PATHS, INITRD_MAGIC

VIRTIO = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]
SUSE_FIRST = ["ata_piix", "ata_generic"]
DEFAULT_LOOKUP = SUSE_FIRST + VIRTIO  # every family's default drivers
OLDEST_KERNEL = (2, 6, 24)  # virtio needs a newer kernel than this
# Where each family's initrd is, by name, when no bootloader entry names it (gather.sh is sent the
# same list, and reports which of these exist): the first one that exists, else the family's own.
FALLBACK_INITRDS = ("/boot/initrd.img-{v}", "/boot/initramfs-{v}.img", "/boot/initrd-{v}", "/boot/initrd-{v}.img")
FAMILY_INITRD = {"debian": 0, "rhel": 1}  # index into FALLBACK_INITRDS; SUSE and others: 2


@dataclass
class Blacklist:
    """A modprobe.d line that stops a driver loading (``blacklist X``, ``install X /bin/false``)."""

    file: str
    line: str  # line number, as text
    driver: str
    text: str
    why: str = ""  # how it stops the driver (facts/blacklist.py)


@dataclass
class Declared:
    """What the initrd generator's configuration declares, and where kvm-drivers writes."""

    path: str | None = None  # the file kvm-drivers writes its declaration to
    drivers: list[str] = field(default_factory=list)  # declared anywhere the generator reads
    omitted: list[list[str]] = field(default_factory=list)  # [module, pattern, file]: dracut's omit_drivers
    by_others: list[str] = field(default_factory=list)  # declared outside kvm-drivers' own drop-in
    setting: str = ""  # the setting that decides what else goes in (MODULES=, hostonly=)
    current: str | None = None  # the text of path now (None: no such file)


@dataclass
class BootInfo:
    """The bootloader configuration in use and its default entry."""

    source: str | None = None
    default_kernel: str | None = None
    default_title: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KernelState:
    """One installed kernel: the initrd its bootloader entry boots, and the looked-up drivers in both."""

    version: str
    default: bool = False  # the default boot entry boots it
    too_old: bool = False  # 2.6.24 or older: no virtio
    initrd: str = ""  # the file the bootloader boots (or the distribution's name for it)
    initrd_source: str = ""  # how initrd was found
    initrd_size: int | None = None
    initrd_error: str = ""  # why its contents are unknown ('' when listed)
    initrd_refused: str = ""  # why kvm-drivers must never replace it ('' when it may)
    no_initrd: bool = False  # its bootloader entry loads no initrd at all
    lister: str | None = None  # what listed the initrd
    kinds: dict[str, str] = field(default_factory=dict)  # driver -> builtin, module or absent
    closures: dict[str, list[str]] = field(default_factory=dict)  # module driver -> it and its module deps
    in_initrd: list[str] = field(default_factory=list)  # modules of those closures the initrd holds
    # what the initrd's own modprobe.d / modprobe.conf / command-line files do: [module, where, why]
    initrd_blocks: list[list[str]] = field(default_factory=list)
    initrd_conf_error: str = ""  # why those files could not be read ('' when they were)
    doubts: dict[str, str] = field(default_factory=dict)  # driver -> why what it is in this kernel cannot be told


@dataclass
class HostState:
    """The whole KVM-driver state of one host (what the ``KvmDrivers`` fact returns)."""

    drivers: list[str] = field(default_factory=list)  # the drivers looked up
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    readable: bool = True  # False: the host's answer was cut short or malformed
    distro: Distro = field(default_factory=lambda: Distro("unknown", "unknown", "", None, ""))
    generator: str | None = None  # initramfs-tools, dracut or suse-mkinitrd
    tools: dict[str, str] = field(default_factory=dict)  # tool name -> path
    running_kernel: str = ""  # live values, sent by the host on every run (not a problem if not installed:
    # what boots next is what is checked; a lab host reports the control machine's kernel)
    image: bool = False  # the answer describes a disk image's tree (gather.sh under KVM_ROOT): no running kernel
    selinux: str = ""  # SELINUX= of /etc/selinux/config (enforcing, permissive, disabled; '' when unset)
    boot_free_kib: int | None = None
    boot_mount: list[str] = field(default_factory=list)  # mount options of /boot
    module_dirs: list[str] = field(default_factory=list)  # every /lib/modules/* (installed or not)
    boot: BootInfo = field(default_factory=BootInfo)
    kernels: list[KernelState] = field(default_factory=list)  # installed kernels, newest first
    declared: Declared = field(default_factory=Declared)
    blacklists: list[Blacklist] = field(default_factory=list)
    # blacklist words on the default boot entry's kernel line: [module, word, why]
    cmdline_blocks: list[list[str]] = field(default_factory=list)
    # Beyond the initrd (facts/migration.py): what else stops the boot or the network on KVM, each a
    # dict {kind, severity, where, line, text, message, fix}; the files a fix would edit, as read;
    # the host's block devices now {mounts: {mount point: device}, swaps, uuids: {device: UUID}}.
    boot_path: list[dict[str, Any]] = field(default_factory=list)
    boot_files: dict[str, str | None] = field(default_factory=dict)
    disks: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:  # pyinfra names an unnamed operation after its arguments: keep it short
        return f"<state: {self.distro.id} {self.distro.version}, {len(self.kernels)} kernel(s)>"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostState:
        """The inverse of to_dict; missing keys take their defaults (for tests and tools)."""
        data = dict(data)
        if "distro" in data:
            data["distro"] = Distro(**{"reason": "", **data["distro"]})
        if "boot" in data:
            data["boot"] = BootInfo(**data["boot"])
        if "declared" in data:
            data["declared"] = Declared(**data["declared"])
        data["kernels"] = [KernelState(**k) for k in data.get("kernels", [])]
        data["blacklists"] = [Blacklist(**b) for b in data.get("blacklists", [])]
        return cls(**data)


def failed_state(message: str) -> HostState:
    """The state of a host that could not be read: an error, never a pass."""
    distro = Distro("unknown", "unknown", "", None, message)
    return HostState(errors=[message], readable=False, distro=distro)


def host_state(snap: Snapshot) -> HostState:
    """What snap (one gathered answer) says about the host, for the drivers it looked up (the
    answer says which).
    """
    return with_live(stored_state(snap), snap.meta, snap.disks)


def with_live(state: HostState, meta: dict[str, str], disks: dict[str, Any] | None = None) -> HostState:
    """State with the live values a host sends on every run (running kernel, /boot's free space
    and mount options): what an "unchanged" answer still brings. A disk image's tree ("image yes")
    has no running kernel (nor uid, nor mount options).
    """
    image = meta.get("image") == "yes"
    disks = disks or {}
    return replace(
        state,
        disks=disks,
        boot_path=state.boot_path + migration.efi_findings(disks, state.distro.id),
        image=image,
        running_kernel="" if image else meta.get("uname", ""),
        boot_free_kib=int(meta["bootfree"]) if DIGITS.match(meta.get("bootfree", "")) else None,
        boot_mount=[o for o in meta.get("bootmount", "").split(",") if o],
    )


def stored_state(snap: Snapshot) -> HostState:
    """host_state() without the live values: what the control side may keep for an unchanged host."""
    drivers = snap.drivers
    distro = parse_distro(snap.files)
    generator, generator_error = choose_generator(distro.family, snap.tools)
    problems = list(snap.problems)
    for k in snap.kernels.values():
        lost = [d for d in drivers if d in k.modules and d not in k.closures]
        if lost:
            problems.append(f"kernel {k.version}: no dependency list for module(s) {' '.join(lost)}")
    errors = [f"malformed answer from the host: {x}" for x in problems]
    warnings: list[str] = []
    if not snap.complete:
        errors.append("the state gathering script did not finish (output cut short)")
    if distro.family is None:
        errors.append(distro.reason)
    elif generator_error:
        errors.append(generator_error)
    loader = initramfs_tools_setting(snap.files.get("/etc/sysconfig/bootloader"), "LOADER_TYPE")
    if distro.family and distro.family.startswith("suse") and loader in ("grub2-bls", "systemd-boot"):
        errors.append(f"LOADER_TYPE={loader}: this system builds its initrds with sdbootutil, which kvm-drivers "
                      "does not drive; declare the drivers and run 'sdbootutil add-all-kernels' by hand")  # fmt: skip

    boot = parse_boot(snap.files)
    if boot is None:
        if distro.family:
            errors.append("cannot verify what boots: no bootloader configuration found (looked for GRUB 2's "
                          "grub.cfg, BLS entries and GRUB legacy's menu.lst/grub.conf)")  # fmt: skip
    else:
        warnings += [f"bootloader: {w}" for w in boot.warnings]
        warnings += tie_unversioned_entries(boot, snap)
        errors += [f"cannot verify what boots: {d}" for d in boot.doubts]
        if boot.entries and boot.default is None:
            errors.append(f"cannot verify what boots: {boot.source} has no default entry GRUB would boot")
        elif not boot.entries and not boot.doubts:
            errors.append(f"cannot verify what boots: {boot.source} has no boot entry kvm-drivers can read")
    default_entry = boot.entries[boot.default] if boot and boot.default is not None else None
    if default_entry is not None:
        where = f"the default boot entry '{default_entry.title}'"
        if default_entry.unknown:
            errors.append(f"cannot verify what boots: {where}: {default_entry.unknown}")
        if default_entry.extra_initrds:
            errors.append(f"cannot verify what boots: {where} loads further initrd images "
                          f"({' '.join(default_entry.extra_initrds)[:200]}) over {default_entry.initrd}: "
                          "kvm-drivers checks one image per entry")  # fmt: skip
    if "grubby" in snap.meta:  # the host's own tool names the default kernel: we must agree with it
        theirs = kernel_from_path(snap.meta["grubby"].strip())
        ours = default_entry.kernel if default_entry else ""
        if theirs != ours:
            errors.append(f"grubby --default-kernel says {snap.meta['grubby'].strip()!r:.120}, kvm-drivers reads "
                          f"the default as {ours or 'none'}: not changing this host until they agree")  # fmt: skip

    installed = [k for k in snap.kernels.values() if k.has_dep and k.images]
    for k in snap.kernels.values():
        if not (k.has_dep and k.images):  # not installed
            why = "no modules.dep" if not k.has_dep else "no kernel image in /boot"
            warnings.append(f"/lib/modules/{k.version} skipped: not an installed kernel ({why})")
    if not installed and distro.family:
        errors.append("no installed kernel found (/lib/modules/* with an image in /boot)")
    elif default_entry is not None and distro.family:  # what GRUB boots must be what we check
        where = f"the default boot entry '{default_entry.title}'"
        if not default_entry.kernel:
            errors.append(f"cannot tell which kernel {where} boots ({default_entry.linux_path or 'no linux line'}): "
                          "it cannot be checked")  # fmt: skip
        elif default_entry.kernel not in {k.version for k in installed}:
            raw_k = snap.kernels.get(default_entry.kernel)
            why = ("no /lib/modules directory" if raw_k is None else "no modules.dep" if not raw_k.has_dep
                   else "no kernel image in /boot")  # fmt: skip
            errors.append(f"{where} boots kernel {default_entry.kernel}, which is not an installed kernel ({why}): "
                          "it cannot be checked")  # fmt: skip

    wanted_modules = {m for k in snap.kernels.values() for d in drivers for m in k.closures.get(d, [d])}
    watched = wanted_modules | set(drivers)  # what a blacklist must not stop
    declared = declared_drivers(generator, snap.files, watched)
    if generator == "suse-mkinitrd":
        raw_value = parse_initrd_modules(snap.files.get("/etc/sysconfig/kernel"))[1] or ""
        odd = [w for w in raw_value.split() if not MODULE_NAME.match(norm(w))]
        if odd:
            errors.append(f"INITRD_MODULES in /etc/sysconfig/kernel holds something other than module names "
                          f"({' '.join(odd)[:80]!r}): refusing to rewrite it")  # fmt: skip
    if declared.path in snap.files and snap.files[declared.path] is None:
        errors.append(f"{declared.path} exists but could not be read (permissions, or not UTF-8 text): "
                      "refusing to rewrite it")  # fmt: skip

    newest_first = sorted(installed, key=lambda k: kernel_version_tuple(k.version), reverse=True)
    by_kernel: dict[str, list[BootEntry]] = {}  # the entries of each kernel, found once
    for e in boot.entries if boot else []:
        by_kernel.setdefault(e.kernel, []).append(e)
    return HostState(
        drivers=list(drivers),
        errors=errors,
        warnings=warnings,
        readable=snap.complete and not problems,
        distro=distro,
        generator=generator,
        tools=snap.tools,
        module_dirs=sorted(snap.kernels),
        boot=BootInfo(
            source=boot.source if boot else None,
            default_kernel=default_entry.kernel if default_entry else None,
            default_title=default_entry.title if default_entry else None,
            entries=[asdict(e) for e in boot.entries] if boot else [],
        ),
        kernels=[kernel_state(snap, k, drivers, boot, default_entry, distro.family, by_kernel) for k in newest_first],
        declared=declared,
        blacklists=[Blacklist(**b, why=why) for b in snap.blacklists
                    for _, _, why in bl.reasons([b["text"]], [b["driver"]])[:1]],
        cmdline_blocks=[[m, w, why] for m, w, why in bl.cmdline_reasons(
            bl.split_cmdline(default_entry.options if default_entry else ""), sorted(watched))],
        boot_path=migration.stored_findings(snap, default_entry, generator, boot.entries if boot else []),
        boot_files=migration.boot_files(snap),
        selinux=selinux_mode(snap.files.get("/etc/selinux/config")),
    )


def declared_drivers(generator: str | None, files: dict[str, str | None], modules: set[str] | None = None) -> Declared:
    """What the generator's configuration declares, and where kvm-drivers writes its declaration;
    ``modules``: the modules the wanted drivers need (which dracut's omit_drivers patterns are
    matched against).
    """
    modules = modules or set()
    out = Declared(path=CONFIG_PATHS.get(generator or ""))
    if generator == "initramfs-tools":
        out.drivers = parse_modules_file(files.get("/etc/initramfs-tools/modules"))
        out.by_others = out.drivers
        out.setting = "MODULES=" + initramfs_tools_setting(files.get("/etc/initramfs-tools/initramfs.conf"))
    elif generator == "dracut":
        conf = parse_dracut(files)
        out.drivers = sorted(conf.add_drivers)
        out.by_others = sorted(d for d, src in conf.add_drivers.items() if src != out.path)
        out.omitted = [list(t) for t in dracut_omits(conf, sorted(modules), [])]
        out.setting = f"hostonly={conf.hostonly or 'default'}"
    elif generator == "suse-mkinitrd":
        out.drivers, raw = parse_initrd_modules(files.get("/etc/sysconfig/kernel"))
        out.by_others = out.drivers
        out.setting = f"INITRD_MODULES={raw!r}" if raw is not None else "INITRD_MODULES unset"
    out.current = files.get(out.path) if out.path else None
    return out


def kernel_state(
    snap: Snapshot,
    k: RawKernel,
    drivers: list[str],
    boot: BootConfig | None,
    default_entry: BootEntry | None,
    family: str | None,
    by_kernel: dict[str, list[BootEntry]] | None = None,
) -> KernelState:
    """One kernel: the initrd it boots, and each looked-up driver built in, a module, or absent.
    by_kernel: boot's entries by kernel version (saves looking through all of them per kernel).
    """
    if by_kernel is not None:
        entries = list(by_kernel.get(k.version, []))
    else:
        entries = [e for e in (boot.entries if boot else []) if e.kernel == k.version]
    if default_entry is not None and default_entry in entries:
        # What GRUB boots is the default entry's own lines: never an initrd another entry of the
        # same kernel (recovery) loads. Without an initrd line it boots without one.
        entries = [default_entry]
    initrd, source = "", ""
    for entry in entries:
        if entry.initrd:
            initrd = snap.refs.get(entry.initrd) or system_path(entry.initrd)
            source = f"bootloader entry '{entry.title}'"
            break
    # the bootloader boots this kernel without any initrd (not said when a variable hides it: an error)
    no_initrd = bool(entries) and not initrd and not entries[0].unknown
    if no_initrd:
        source = f"bootloader entry '{entries[0].title}' (no initrd)"
    elif not initrd:
        names = [n.format(v=k.version) for n in FALLBACK_INITRDS]
        found = [snap.refs[n] for n in names if snap.refs.get(n)]
        initrd = found[0] if found else names[FAMILY_INITRD.get(family or "", 2)]
        source = "distribution naming convention"
    raw = snap.initrds.get(initrd)
    refused = "" if no_initrd else initrd_refusal(initrd, raw)
    watched = sorted(set(drivers) | {m for d in drivers for m in k.closures.get(d, [])})
    blocks: list[list[str]] = []
    conf_error = ""
    if raw is not None and not no_initrd and not raw.error:
        conf_error = raw.conf_error
        for b in raw.blocks:
            blocks += [[m, f"{b['file']} in the initrd: {b['text'][:200]}", why]
                       for m, _, why in bl.reasons([b["text"]], [b["driver"]]) if m in watched]  # fmt: skip
        for c in raw.cmdline:
            blocks += [[m, f"{c['file']} in the initrd: {c['word'][:200]}", why]
                       for m, _, why in bl.cmdline_reasons([c["word"]], watched)]  # fmt: skip
    if not refused and raw is not None and raw.kernel_dirs and k.version not in raw.kernel_dirs:
        refused = (f"{initrd} holds the modules of kernel {' '.join(sorted(raw.kernel_dirs))}, not of {k.version} "
                   "that its bootloader entry boots: fix the entry (rebuilding it would break the other kernel)")
    kinds = {d: driver_kind(k, d) for d in drivers}
    closures = {d: k.closures.get(d, []) for d in drivers if kinds[d] == "module"}
    doubts = {d: x for d in drivers if (x := kind_doubt(k, d, kinds[d]))}
    modules = {m for c in closures.values() for m in c}
    error = "" if no_initrd else "initrd file does not exist" if raw is None else raw.error or ""
    return KernelState(
        version=k.version,
        default=default_entry is not None and default_entry.kernel == k.version,
        too_old=kernel_version_tuple(k.version) <= OLDEST_KERNEL,
        initrd=initrd,
        initrd_source=source,
        initrd_size=raw.size if raw else None,
        initrd_error=error,
        initrd_refused=refused,
        no_initrd=no_initrd,
        lister=raw.lister if raw else None,
        kinds=kinds,
        closures=closures,
        in_initrd=sorted(modules & raw.modules) if raw is not None and not error and not no_initrd else [],
        doubts=doubts,
        initrd_blocks=blocks,
        initrd_conf_error=conf_error,
    )


def choose_generator(family: str | None, tools: dict[str, str]) -> tuple[str | None, str]:
    """(generator, error): which initrd tool this host uses, or why none can be used."""
    if family == "debian":
        # dracut replaces initramfs-tools (update-initramfs) but may leave mkinitramfs behind.
        if "update-initramfs" in tools and "mkinitramfs" in tools:
            return "initramfs-tools", ""
        if "dracut" in tools:
            return "dracut", ""
        return None, "no initrd generator found (neither mkinitramfs nor dracut is installed)"
    if family == "suse-legacy":
        if "mkinitrd" in tools:
            return "suse-mkinitrd", ""
        return None, "mkinitrd is not installed (needed to rebuild the initrd on this SUSE release)"
    if family in ("rhel", "suse", "suse-12sp1"):
        if "dracut" in tools:
            return "dracut", ""
        return None, "dracut is not installed (needed to rebuild the initrd on this distribution)"
    return None, ""



def driver_kind(kernel: RawKernel, driver: str) -> str:
    """'builtin', 'module' or 'absent' for one driver in one kernel."""
    if driver in kernel.builtin:
        return "builtin"
    if driver in kernel.modules:
        return "module"
    option = CONFIG_OPTION.get(driver)
    if not kernel.has_builtin and option and kernel.config.get(option) == "y":
        return "builtin"
    return "absent"



def kind_doubt(kernel: RawKernel, driver: str, kind: str) -> str:
    """Why what driver is in kernel cannot be told from its files ('' when the files agree):
    modules.dep, modules.builtin and /boot/config-<version> must say the same thing (an empty or
    cut modules.dep, left by depmod on a full disk, lists no module at all).
    """
    option = CONFIG_OPTION.get(driver)
    value = kernel.config.get(option or "")
    v = kernel.version
    if kind == "absent" and value == "m":
        return (f"kernel {v}: /boot/config-{v} builds {driver} as a module (CONFIG_{option}=m), but modules.dep "
                f"does not list it (empty or cut short? run 'depmod {v}')")  # fmt: skip
    if kind == "absent" and value == "y":
        return (f"kernel {v}: /boot/config-{v} builds {driver} in (CONFIG_{option}=y), but modules.builtin "
                "does not list it")  # fmt: skip
    if kind == "absent" and option and not kernel.has_config:
        return (f"kernel {v}: nothing says whether it has {driver}: modules.dep and modules.builtin do not list "
                f"it, and there is no /boot/config-{v}")  # fmt: skip
    return ""


INITRD_PATH = re.compile(r"^/boot/[A-Za-z0-9._@+,:=~/-]+$")  # no spaces, patterns or non-ASCII


def initrd_refusal(path: str, raw: RawInitrd | None) -> str:
    """Why kvm-drivers must not rebuild path as an initrd ('' when it may): whatever the
    bootloader configuration says, only a file in /boot that looks like an initrd is replaced.
    """
    if not safe_path(path) or not path.startswith("/boot/") or not INITRD_PATH.match(path):
        return f"the bootloader names {path!r} as an initrd: not a file in /boot, refusing to touch it"
    if raw is not None and raw.magic and not raw.magic.startswith(INITRD_MAGIC):
        return f"{path} does not look like an initrd (first bytes {raw.magic[:12]}): refusing to replace it"
    return ""


def shape_problems(state: HostState) -> list[str]:
    """What in state has a shape no answer of gather.sh can give (for a state read back from the
    control-side cache, which is a file: it must be checked like a host's answer).
    """
    out = []
    names = list(state.drivers) + [d for k in state.kernels for c in k.closures.values() for d in c]
    names += list(state.declared.drivers) + [b.driver for b in state.blacklists]
    if not all(isinstance(n, str) and MODULE_NAME.match(n) for n in names):
        out.append("a module name")
    for k in state.kernels:
        if not KERNEL_NAME.match(k.version):
            out.append(f"kernel {k.version!r:.40}")
        elif k.initrd and not k.initrd_refused and initrd_refusal(k.initrd, None):
            out.append(f"initrd {k.initrd!r:.60}")
    if state.declared.path != CONFIG_PATHS.get(state.generator or ""):
        out.append(f"declaration path {state.declared.path!r:.60}")
    if not all(MODPROBE_FILE.match(b.file) and DIGITS.match(b.line) for b in state.blacklists):
        out.append("a modprobe.d reference")
    return out
