"""
Will this server boot on KVM: the boot path beyond the initrd (issue 20), read from file texts.

Pure functions over what a host sends (fstab, crypttab, a kernel command line, /etc/default/grub,
/boot/config-*, modprobe files, /etc/sysconfig/kernel, the ESP's file list), returning ``Finding``s:
what stops the boot on KVM (``blocks boot``) or is worth a look (``advice``), its file and 1-based
line, and the change the opt-in fix would make (``Fix``). NIC names and addresses: facts/network.py.

What decides a severity (sources: tests/fixtures/boot_path/SOURCES.md):
- fstab (systemd-fstab-generator): a mount without nofail is *required* by local-fs.target, whose
  OnFailure=emergency.target stops the boot; noauto (the last of noauto/auto wins) is not pulled in;
  nofail and x-systemd.automount are only *wanted*; "/" ignores noauto/nofail. A swap unit is required
  by swap.target, but sysinit.target only *wants* swap.target, which has no OnFailure: a missing swap
  device costs the device timeout (90 s) and the boot goes on (advice).
- resume=: systemd's hibernate-resume generator (in current initrds) waits for the device with
  JobTimeoutSec=0, for ever (blocks boot). initramfs-tools waits max(30 s, rootdelay) in its
  local-premount/resume script, says "Gave up waiting for suspend/resume device" and boots on
  (advice: the lab boots such a Debian host through real GRUB, tests/test_lab_boot_path.py).
- Kernels, PV leftovers, the UEFI fallback: as virt-v2v (libguestfs-common linux_kernels.ml,
  virt-v2v convert_linux.ml) decides and rewrites them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

BLOCKS_BOOT = "blocks boot"
BLOCKS_NETWORK = "blocks network"
ADVICE = "advice"
SEVERITIES = (BLOCKS_BOOT, BLOCKS_NETWORK, ADVICE)
DISK_BUSES = ("virtio-blk", "virtio-scsi")
KINDS = ("device-name", "resume-device", "grub-no-uuid", "xen-kernel", "no-virtio-kernel", "pv-leftover",
         "efi-fallback", "nic-rule", "nic-mac-binding", "nic-mac-set", "static-address", "unread")  # fmt: skip
# What a Fix asks for (the opt-in fix implements them; nothing here writes):
FIX_ACTIONS = {
    "device-to-uuid": "on line, replace old (a device name as written) by UUID=<its UUID, from blkid on the host>",
    "replace-line": "replace line (whose text is old) by new",
    "delete-line": "delete line (whose text is old)",
    "move-aside": "move the file path aside (keep it as a backup)",
    "rename": "rename the file path to new (in the same directory)",
    "drop-mac-match": "remove the MAC condition on line; match the interface by name or type instead",
    "set-default-kernel": "make kernel new the default boot entry (old is the current default)",
    "copy": "copy each (source, target) of copies, both relative to the ESP",
}


@dataclass(frozen=True)
class Fix:
    """A change the opt-in fix would make (see FIX_ACTIONS)."""

    action: str
    path: str  # the file to change ("" when the caller knows where the value lives)
    line: int = 0
    old: str = ""
    new: str = ""
    copies: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Finding:
    """One thing that stops the server booting or being reached on KVM, or is worth a look."""

    kind: str  # a stable identifier (KINDS): one report row kind each
    severity: str  # blocks boot, blocks network or advice
    where: str  # the file (or "kernel line", "default kernel", the ESP)
    line: int  # 1-based line number, 0 when the finding is about the whole file
    text: str  # the line as written
    message: str
    fix: Fix | None = None


def _content(text: str) -> Iterable[tuple[int, str, list[str]]]:
    """(number, line, fields) of each line that is not blank or a whole-line '#' comment."""
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if fields and not fields[0].startswith("#"):
            yield n, raw, fields


# --- device names ---------------------------------------------------------------------------------

# Kernel names of disks that a virtio-blk disk never gets (it is vdX), with what they are.
_RAW_NAMES = (
    (re.compile(r"xvd[a-z]+\d*"), "a Xen virtual disk name"),
    (re.compile(r"hd[a-z]+\d*"), "an IDE disk name"),
    (re.compile(r"sd[a-z]+\d*"), "a SCSI/SATA disk name"),
    (re.compile(r"nvme\d+n\d+(p\d+)?"), "an NVMe disk name"),
    (re.compile(r"(cciss|ida|rd)/c\d+d\d+(p\d+)?"), "a hardware RAID (Smart Array/DAC960) disk name"),
    (re.compile(r"mmcblk\d+(p\d+)?"), "an MMC/SD card name"),
    (re.compile(r"vd[a-z]+\d*"), "a virtio-blk disk name"),
)
# Block majors of those drivers (a kernel line may name the root as major:minor or hex dev_t).
_RAW_MAJORS = {3, 8, 22, 33, 34, 56, 57, 88, 89, 90, 91, 202} | set(range(65, 72)) | set(range(104, 112)) \
    | set(range(128, 136))  # fmt: skip
_STABLE_BY_ID = ("dm-", "md-", "lvm-pv-uuid-")  # by-id links of device-mapper, MD and LVM: not the disk's


def device_name_problem(spec: str, disk_bus: str = "virtio-blk", *, kernel_line: bool = False) -> str | None:
    """Why the device spec (an fstab/crypttab source, a root= or resume= value) names a device that
    will not exist on KVM with disks on disk_bus, or None when it will (or is not a disk at all).

    The whole name is matched (no substrings: /dev/sdab is an sd disk, "nvme" inside a UUID is not).
    kernel_line also reads the kernel's numeric forms (8:1, 0801).
    """
    if disk_bus not in DISK_BUSES:
        raise ValueError(f"disk_bus must be one of {', '.join(DISK_BUSES)}, got {disk_bus!r}")
    spec = spec.strip()
    if len(spec) > 1 and spec[0] == spec[-1] and spec[0] in "\"'":
        spec = spec[1:-1]
    if spec.startswith("block:"):  # dracut's root=block:/dev/...
        spec = spec[len("block:"):]
    if kernel_line:
        m = re.fullmatch(r"(\d+):(\d+)|([0-9a-fA-F]{3,4})", spec)
        if m:
            major = int(m.group(1)) if m.group(1) else (int(m.group(3), 16) & 0xFFF00) >> 8
            return f"device number {spec} is major {major}, a disk driver KVM's disks do not use" \
                if major in _RAW_MAJORS else None  # fmt: skip
    if not spec.startswith("/dev/"):
        return None  # a network share, a pseudo-filesystem, a file, "none"
    name = spec[len("/dev/"):]
    if name.startswith("disk/by-path/"):
        return f"{spec} names the old machine's bus path, which KVM's virtual hardware does not have"
    if name.startswith("disk/by-id/"):
        if name[len("disk/by-id/"):].startswith(_STABLE_BY_ID):
            return None
        return f"{spec} names the old disk's serial/WWN; a KVM disk has another (virtio-<serial>)"
    for pattern, what in _RAW_NAMES:
        if pattern.fullmatch(name):
            bus_names = "vd" if disk_bus == "virtio-blk" else "sd"
            if name.startswith(bus_names):
                return None
            new = {"virtio-blk": "vdX", "virtio-scsi": "sdX"}[disk_bus]
            return f"{spec} is {what}; on KVM the disk is {new} ({disk_bus}), and the order may differ"
    return None  # UUID links, /dev/mapper, LVM /dev/VG/LV, MD, dm-N, loop, nfs, cdrom... (UUID= and the
    # other tags never start with /dev/)


def _dm_number(spec: str) -> bool:
    return re.fullmatch(r"/dev/dm-\d+", spec.strip("\"'")) is not None


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _last(options: Sequence[str], yes: str, no: str) -> bool:
    """Whether yes is set: the last of yes/no wins (systemd's fstab_test_yes_no_option)."""
    state = False
    for o in options:
        state = True if o == yes else False if o == no else state
    return state


def fstab_entries(text: str) -> list[tuple[str, str, str, list[str]]]:
    """(device, mount point, type, options) of each fstab entry, octal escapes undone."""
    return [(_unescape(f[0]), _unescape(f[1]), f[2] if len(f) > 2 else "auto",
             f[3].split(",") if len(f) > 3 else ["defaults"]) for _, _, f in _content(text) if len(f) >= 2]  # fmt: skip


def fstab_findings(text: str, path: str = "/etc/fstab", disk_bus: str = "virtio-blk") -> list[Finding]:
    """Entries of fstab whose device will not exist on KVM (device-name): blocking when the boot
    needs them, advice for swap, nofail and automount entries; noauto entries and network block
    devices (_netdev, iSCSI LUNs keep their names) are skipped. dm-N names are advice.
    """
    out = []
    for n, raw, fields in _content(text):
        if len(fields) < 2:
            continue
        spec, target = _unescape(fields[0]), _unescape(fields[1])
        fstype = fields[2] if len(fields) > 2 else "auto"
        opts = fields[3].split(",") if len(fields) > 3 else ["defaults"]
        noauto, nofail = _last(opts, "noauto", "auto"), _last(opts, "nofail", "fail")
        if target == "/":
            noauto = nofail = False
        if noauto or "_netdev" in opts:
            continue
        problem = device_name_problem(spec, disk_bus)
        if problem is None:
            if _dm_number(spec):
                out.append(Finding("device-name", ADVICE, path, n, raw, f"{spec} ({target}): dm-N numbers follow "
                                   "the order devices are activated in; /dev/mapper/NAME is stable"))  # fmt: skip
            continue
        automount = "x-systemd.automount" in opts or "comment=systemd.automount" in opts
        if fstype == "swap":
            severity, why = ADVICE, "the swap unit fails after the device timeout (90 s); the boot goes on"
        elif nofail or automount:
            severity, why = ADVICE, f"{'nofail' if nofail else 'automount'}: the boot goes on without {target}"
        else:
            severity, why = BLOCKS_BOOT, "the boot stops (systemd: emergency mode, local-fs.target requires it)"
        out.append(Finding("device-name", severity, path, n, raw, f"{target}: {problem}; {why}",
                           Fix("device-to-uuid", path, n, fields[0])))  # fmt: skip
    return out


def crypttab_findings(text: str, path: str = "/etc/crypttab", disk_bus: str = "virtio-blk") -> list[Finding]:
    """Entries of crypttab whose source device (field 2) will not exist on KVM: blocking unless
    noauto (skipped), nofail or a swap mapping (advice).
    """
    out = []
    for n, raw, fields in _content(text):
        if len(fields) < 2:
            continue
        opts = fields[3].split(",") if len(fields) > 3 else []
        problem = device_name_problem(fields[1], disk_bus)
        if problem is None or "noauto" in opts:
            continue
        soft = "nofail" in opts or "swap" in opts
        why = "only what is mounted from it is lost" if soft else "unlocking it fails, and so does the boot"
        out.append(Finding("device-name", ADVICE if soft else BLOCKS_BOOT, path, n, raw,
                           f"/dev/mapper/{fields[0]}: {problem}; {why}", Fix("device-to-uuid", path, n, fields[1])))
    return out


def _kernel_tokens(cmdline: str) -> list[tuple[str, str | None, str]]:
    """(name, value, token as written) of each parameter, split and unquoted as the kernel's
    next_arg() does (lib/cmdline.c); parsing stops at a bare "--" (what follows is init's).
    """
    out: list[tuple[str, str | None, str]] = []
    i, n = 0, len(cmdline)
    while True:
        while i < n and cmdline[i] in " \t\n\v\f\r":
            i += 1
        if i >= n:
            return out
        begin, quoted = i, cmdline[i] == '"'
        start = i + 1 if quoted else i
        j, in_quote = start, quoted
        while j < n and (in_quote or cmdline[j] not in " \t\n\v\f\r"):
            in_quote = not in_quote if cmdline[j] == '"' else in_quote
            j += 1
        token, i = cmdline[start:j], j
        eq = token.find("=", 1)
        val_quoted = eq >= 0 and token[eq + 1:eq + 2] == '"'
        if token.endswith('"') and (quoted or val_quoted):
            token = token[:-1]
        if eq < 0:
            if token == "--":
                return out
            out.append((token, None, cmdline[begin:j]))
        else:
            value = token[eq + 1:]
            out.append((token[:eq], value[1:] if val_quoted and value.startswith('"') else value, cmdline[begin:j]))


def kernel_args(cmdline: str) -> dict[str, str | None]:
    """The parameters of a kernel command line (as the kernel receives it), name -> value (None for
    a bare word); the last of a repeated name wins, as for root= and resume=.
    """
    return {name: value for name, value, _ in _kernel_tokens(cmdline)}


def kernel_line_findings(cmdline: str, where: str = "kernel line", line: int = 0,
                         disk_bus: str = "virtio-blk", generator: str | None = None) -> list[Finding]:  # fmt: skip
    """root= (device-name) and resume= (resume-device) values on a kernel command line that name a
    device KVM will not have; both block the boot, but for resume= under initramfs-tools (generator),
    which gives up on it after 30 s (advice). where/line say where the line lives (a menu.lst line, a
    BLS options line, grubenv's kernelopts...).
    """
    last = {name: (value, raw) for name, value, raw in _kernel_tokens(cmdline)}
    out = []
    for name, kind in (("root", "device-name"), ("resume", "resume-device")):
        value, raw = last.get(name, (None, ""))
        if not value or (name == "resume" and "noresume" in last):
            continue
        problem = device_name_problem(value, disk_bus, kernel_line=True)
        if problem:
            severity, why = BLOCKS_BOOT, "the kernel cannot mount its root"
            if name == "resume" and generator == "initramfs-tools":
                severity, why = ADVICE, "initramfs-tools waits 30 s for it, then boots without resuming"
            elif name == "resume":
                why = "the initrd waits for the resume device (systemd: for ever)"
            fix = Fix("device-to-uuid", where if where.startswith("/") else "", line, raw)
            out.append(Finding(kind, severity, where, line, cmdline, f"{name}={value}: {problem}; {why}", fix))
    return out


def _assignments(text: str, pattern: str) -> Iterator[tuple[int, str, re.Match[str], str | None]]:
    """(line number, line, match, value as the shell reads it, None when it cannot) of each line of
    a shell-style file that matches pattern (group 2: the value as written).
    """
    for n, raw, _ in _content(text):
        m = re.match(pattern, raw)
        if not m:
            continue
        try:
            value: str | None = " ".join(shlex.split(m.group(2), comments=True))
        except ValueError:
            value = None
        yield n, raw, m, value


def default_grub_findings(text: str, path: str = "/etc/default/grub", disk_bus: str = "virtio-blk",
                          generator: str | None = None) -> list[Finding]:  # fmt: skip
    """/etc/default/grub: root=/resume= in GRUB_CMDLINE_LINUX(_DEFAULT), which the next
    grub-mkconfig writes to every entry, and GRUB_DISABLE_LINUX_UUID=true, which makes it write
    root=/dev/<the device now> (advice: harmful when grub.cfg is regenerated before the move).
    """
    out = []
    pattern = r"\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?|GRUB_DISABLE_LINUX_UUID)=(.*)"
    for n, raw, m, value in _assignments(text, pattern):
        value = m.group(2) if value is None else value
        if m.group(1) == "GRUB_DISABLE_LINUX_UUID":
            if value == "true":
                out.append(Finding("grub-no-uuid", ADVICE, path, n, raw, "grub-mkconfig will write root=/dev/<the "
                                   "disk now> (e.g. /dev/xvda1), which KVM does not have",
                                   Fix("delete-line", path, n, raw)))  # fmt: skip
            continue
        out += [replace(f, text=raw, message=f"{m.group(1)}: {f.message}")
                for f in kernel_line_findings(value, path, n, disk_bus, generator)]
    return out


# --- kernels ---------------------------------------------------------------------------------------


def _config(text: str) -> dict[str, str]:
    """CONFIG_X -> value, the first line of each (as virt-v2v's grep takes the first)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"(CONFIG_[A-Za-z0-9_]+)=(.*)", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


_DISK_DRIVER = {"virtio-blk": ("virtio_blk", "CONFIG_VIRTIO_BLK"), "virtio-scsi": ("virtio_scsi", "CONFIG_SCSI_VIRTIO")}


def _norm(module: str) -> str:
    return module.replace("-", "_")


def kernel_problem(version: str, config_text: str | None, modules: Iterable[str] = (),
                   disk_bus: str = "virtio-blk") -> tuple[str, str] | None:  # fmt: skip
    """(kind, reason) when kernel version cannot boot as a KVM guest, else None. config_text is
    /boot/config-<version> (None when absent), modules the module names it has (optional).
    xen-kernel: a Xen-PV-only kernel (CONFIG_X86_XEN/CONFIG_X86_64_XEN; without a config, a
    version ending in "xen": RHEL 5 el5xen, SUSE -xen). no-virtio-kernel: no virtio disk driver.
    """
    driver, key = _DISK_DRIVER[disk_bus]
    has_module = driver in {_norm(m) for m in modules}
    if config_text is None:
        if version.endswith("xen"):
            return "xen-kernel", f"{version} is a Xen kernel flavour (no /boot/config-{version} says otherwise)"
        return None
    cfg = _config(config_text)
    xen = [k for k in ("CONFIG_X86_XEN", "CONFIG_X86_64_XEN") if cfg.get(k) in ("y", "m")]
    if xen:
        return "xen-kernel", f"{version} is a Xen paravirtual kernel ({xen[0]}={cfg[xen[0]]}): it does not boot on KVM"
    if cfg.get(key) not in ("y", "m") and not has_module:
        return "no-virtio-kernel", f"{version} has no {driver} ({key} {cfg.get(key, 'unset')}): it cannot find its disk"
    return None


def _supports(config_text: str | None, modules: Iterable[str], key: str, driver: str) -> bool:
    cfg = _config(config_text) if config_text is not None else {}
    return driver in {_norm(m) for m in modules} or cfg.get(key) in ("y", "m")


def _version_key(version: str) -> list[tuple[int, int | str]]:
    return [(1, int(x)) if x.isdigit() else (0, x) for x in re.findall(r"\d+|[A-Za-z]+", version)]


def kernel_findings(kernels: Sequence[tuple[str, str | None]], default: str,
                    modules: Mapping[str, Iterable[str]] | None = None,
                    disk_bus: str = "virtio-blk") -> list[Finding]:  # fmt: skip
    """A finding (blocks boot) when the default kernel cannot run on KVM (kernel_problem), naming
    the installed kernels that would; the fix makes the best of them the default, chosen as
    virt-v2v does (virtio_net support, then the highest version, then not a debug kernel).
    kernels: (version, /boot/config-<version> text or None); modules: version -> module names.
    """
    modules = modules or {}
    configs = dict(kernels)
    if default not in configs:
        return []
    problem = kernel_problem(default, configs[default], modules.get(default, ()), disk_bus)
    if problem is None:
        return []
    driver, key = _DISK_DRIVER[disk_bus]
    good = [v for v, cfg in kernels if v != default and kernel_problem(v, cfg, modules.get(v, ()), disk_bus) is None
            and _supports(cfg, modules.get(v, ()), key, driver)]  # fmt: skip
    good.sort(key=lambda v: (_supports(configs[v], modules.get(v, ()), "CONFIG_VIRTIO_NET", "virtio_net"),
                             _version_key(v.replace("debug", "")), "debug" not in v), reverse=True)  # fmt: skip
    if good:
        tail = f"; installed kernels that would boot: {', '.join(good)} (best: {good[0]})"
    else:
        tail = f"; no installed kernel has {driver}: install one (e.g. the distribution's default flavour)"
    where = f"/boot/config-{default}" if configs[default] is not None else "default kernel"
    return [Finding(problem[0], BLOCKS_BOOT, where, 0, default, f"the default kernel {problem[1]}{tail}",
                    Fix("set-default-kernel", "", 0, default, good[0]) if good else None)]  # fmt: skip


# --- paravirtual leftovers --------------------------------------------------------------------------

XEN_BLOCK = ("xenblk", "xen_vbd")  # virt-v2v's list (xennet, xen-vnif, xenblk, xen-vbd), '-' as '_'
XEN_NET = ("xennet", "xen_vnif")
OLD_NICS = XEN_NET + ("xen_netfront", "vmxnet", "vmxnet3", "hv_netvsc")


def modprobe_findings(text: str, path: str) -> list[Finding]:
    """modprobe.conf / modprobe.d aliases old mkinitrd reads (pv-leftover, advice): `alias
    scsi_hostadapterN xenblk` (mkinitrd adds the aliased module to the initrd and stops when a
    kernel lacks it) and `alias ethN xennet` (or another hypervisor's NIC). The fixes are
    virt-v2v's configure_kernel_modules: the first block alias becomes virtio_blk and the other
    Xen ones go, the NIC aliases become virtio_net.
    """
    out, first = [], True
    for n, raw, f in _content(text):
        if len(f) < 3 or f[0] != "alias":
            continue
        module = _norm(f[2])
        if re.fullmatch(r"scsi_hostadapter\d*", f[1]) and module in XEN_BLOCK:
            fix = Fix("replace-line", path, n, raw, f"alias {f[1]} virtio_blk") if first else \
                Fix("delete-line", path, n, raw)  # fmt: skip
            first = False
            out.append(Finding("pv-leftover", ADVICE, path, n, raw, f"{f[1]} -> {f[2]}: mkinitrd puts it in the "
                               "initrd and stops where a kernel has no such module", fix))  # fmt: skip
        elif re.fullmatch(r"eth\d+", f[1]) and module in OLD_NICS:
            out.append(Finding("pv-leftover", ADVICE, path, n, raw, f"{f[1]} -> {f[2]}: the old hypervisor's NIC "
                               "driver", Fix("replace-line", path, n, raw, f"alias {f[1]} virtio_net")))  # fmt: skip
    return out


def sysconfig_kernel_findings(text: str, path: str = "/etc/sysconfig/kernel") -> list[Finding]:
    """SUSE's INITRD_MODULES / DOMU_INITRD_MODULES naming Xen drivers (pv-leftover, advice):
    mkinitrd adds the first to every initrd, the second when it runs in a Xen domU (as it does on
    this host before the move). The fix drops them, as virt-v2v's unconfigure_xen does.
    """
    out = []
    for n, raw, m, value in _assignments(text, r"\s*((?:DOMU_)?INITRD_MODULES)=(.*)"):
        if value is None:
            continue
        words = value.split()
        xen = [w for w in words if _norm(w) in XEN_BLOCK + XEN_NET]
        if xen:
            kept = " ".join(w for w in words if w not in xen)
            out.append(Finding("pv-leftover", ADVICE, path, n, raw, f"{m.group(1)} lists Xen drivers "
                               f"({' '.join(xen)})", Fix("replace-line", path, n, raw, f'{m.group(1)}="{kept}"')))
    return out


# --- UEFI ------------------------------------------------------------------------------------------

def efi_fallback_findings(efi_files: Iterable[str], firmware: str = "uefi", arch: str = "x64",
                          distro: str | None = None, esp: str = "/boot/efi") -> list[Finding]:  # fmt: skip
    """An EFI host whose ESP (efi_files: paths relative to it, any case, as FAT) lacks
    EFI/BOOT/BOOT<arch>.EFI blocks boot: imported as an image it has no NVRAM boot entry, and the
    firmware then boots only that removable-media path. The fix copies, as virt-v2v does, the
    distribution's shim as BOOT<arch>.EFI and its GRUB (plus MokManager and grub.cfg) beside it, or
    GRUB itself (and a legacy grub.conf as BOOT<arch>.conf) when there is no shim. With several
    distribution directories, distro's (if given) wins, then one with a shim, then the first by name.
    BIOS hosts: nothing.
    """
    if firmware != "uefi":
        return []
    lower = {f.replace("\\", "/").strip("/").lower(): f.replace("\\", "/").strip("/") for f in efi_files}
    target = f"EFI/BOOT/BOOT{arch.upper()}.EFI"
    if target.lower() in lower:
        return []
    dirs: dict[str, dict[str, str]] = {}
    for low, real in lower.items():
        parts = low.split("/")
        if len(parts) == 3 and parts[0] == "efi" and parts[1] != "boot":
            dirs.setdefault(real.split("/")[1], {})[parts[2]] = real

    def pick(d: dict[str, str], names: Iterable[str]) -> str | None:
        return next((d[x] for x in names if x in d), None)

    found = {}
    for name, d in dirs.items():
        loader = pick(d, (f"grub{arch}.efi", "grub.efi"))
        if loader:
            found[name] = (pick(d, (f"shim{arch}.efi", "shim.efi")), loader, pick(d, (f"mm{arch}.efi",
                           "mokmanager.efi")), pick(d, ("grub.cfg",)), pick(d, ("grub.conf",)))  # fmt: skip
    if not found:
        return [Finding("efi-fallback", BLOCKS_BOOT, esp, 0, target, f"no {target} on the ESP, and no GRUB or "
                        "shim in EFI/<distribution>/ to put there")]  # fmt: skip
    order = sorted(found, key=lambda d: (d.lower() != (distro or "").lower(), found[d][0] is None, d.lower()))
    name = order[0]
    shim, loader, mm, cfg, conf = found[name]
    boot = "EFI/BOOT/"
    if shim:
        copies = [(shim, target), (loader, boot + loader.rsplit("/", 1)[1])]
        copies += [(mm, boot + mm.rsplit("/", 1)[1])] if mm else []
    else:
        copies = [(loader, target)] + ([(conf, target[:-4] + ".conf")] if conf else [])
    copies += [(cfg, boot + "grub.cfg")] if cfg else []
    also = f" (also found: {', '.join(order[1:])}; chose {name})" if len(order) > 1 else ""
    return [Finding("efi-fallback", BLOCKS_BOOT, esp, 0, target, f"no {target}: without NVRAM boot entries "
                    f"the firmware finds nothing to boot; copy EFI/{name}'s {'shim' if shim else 'GRUB'}{also}",
                    Fix("copy", esp, 0, copies=tuple(copies)))]  # fmt: skip
