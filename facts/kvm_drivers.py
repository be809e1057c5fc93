"""
pyinfra facts: distro, kernels, initrds and declared virtio drivers of a host.

Everything is gathered by ONE remote command (``gather.sh``); the facts below differ only
in which part of the result they return. Use ``KvmDrivers`` when you need several parts:
each fact call is one SSH round trip.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyinfra.api import FactBase, QuoteString, ShortFactBase, StringCommand
from pyinfra.context import ctx_host

from facts import cache
from facts import parsers as p

HERE = Path(__file__).parent


def _compact(script: str) -> str:
    """The script without its comment lines and blank lines: it travels to every host each run."""
    return "".join(ln for ln in script.splitlines(keepends=True) if ln.strip() and not ln.lstrip().startswith("#"))


GATHER_SCRIPT = _compact((HERE / "lib.sh").read_text() + (HERE / "gather.sh").read_text())
LISTER = (HERE / "initrd_ls.py").read_text()
# Cached gather output is only reused with the script that produced it.
SCRIPT_VERSION = hashlib.sha256((GATHER_SCRIPT + LISTER).encode()).hexdigest()[:16]

VIRTIO = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]
SUSE_FIRST = ["ata_piix", "ata_generic"]
OLDEST_KERNEL = (2, 6, 24)  # virtio needs a newer kernel than this
OUTPUT_CAP = 32 * 1024 * 1024  # bytes of gather output accepted from one host
GATHER_TIMEOUT = 300  # seconds a host may take to answer (inventory data kvm_gather_timeout)
CHANGE_TIMEOUT = 1800  # seconds one change (a write, a rebuild and its lock wait) may take (kvm_change_timeout)
CONFIG_PATHS = {
    "initramfs-tools": "/etc/initramfs-tools/modules",
    "dracut": "/etc/dracut.conf.d/90-kvm-drivers.conf",
    "suse-mkinitrd": "/etc/sysconfig/kernel",
}
# The tool each initrd generator needs on the host.
GENERATOR_TOOL = {"initramfs-tools": "mkinitramfs", "dracut": "dracut", "suse-mkinitrd": "mkinitrd"}


def default_drivers(family: str | None) -> list[str]:
    """The procedure's driver list for a family (SUSE families list ata_piix ata_generic first)."""
    return SUSE_FIRST + VIRTIO if family and family.startswith("suse") else list(VIRTIO)


def wanted_drivers(family: str | None, drivers: list[str] | None, extra: list[str] | None) -> list[str]:
    """The drivers to guarantee: the given list (or the family default) plus extras, normalised."""
    out: list[str] = []
    for d in (drivers or default_drivers(family)) + (extra or []):
        if p.norm(d) not in out:
            out.append(p.norm(d))
    return out


def driver_list_errors(key: str, value: object) -> list[str]:
    """Why value (the inventory data key) is not a list of module names ([] when it is)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(d, str) for d in value):
        return [f"{key} must be a list of module names, got {type(value).__name__} {value!r:.60}"]
    bad = [d for d in value if not p.MODULE_NAME.match(p.norm(d)) or "/" in d]
    return [f"{key}: not a module name: {', '.join(repr(d)[:60] for d in bad)}"] if bad else []


def settings_errors(drivers: object, extra: object, kernels: object) -> list[str]:
    """Why the inventory data (kvm_drivers, kvm_drivers_extra, kvm_kernels) cannot be used."""
    errors = []
    for key, value in (("kvm_drivers", drivers), ("kvm_drivers_extra", extra)):
        if value is not None:
            errors += driver_list_errors(key, value)
    if isinstance(drivers, (list, tuple)) and not drivers:
        errors.append("kvm_drivers is empty: give the drivers to guarantee, or leave it unset")
    if isinstance(kernels, (list, tuple)):
        if not kernels or not all(isinstance(k, str) and p.KERNEL_NAME.match(k) for k in kernels):
            errors.append(f"kvm_kernels must be 'all', 'default' or a non-empty list of kernel versions, "
                          f"got {kernels!r:.80}")  # fmt: skip
    elif kernels not in ("all", "default"):
        errors.append(f"kvm_kernels must be 'all', 'default' or a list of kernel versions, got {kernels!r:.80}")
    return errors


def deploy_settings_errors(data: Any) -> list[str]:
    """Why the deploy-only inventory data (kvm_remove_blacklists, kvm_gather_timeout,
    kvm_change_timeout) cannot be used.
    """
    errors = []
    if not isinstance(data.get("kvm_remove_blacklists", False), bool):
        errors.append(f"kvm_remove_blacklists must be True or False, got {data.get('kvm_remove_blacklists')!r:.40}")
    for key in ("kvm_gather_timeout", "kvm_change_timeout"):
        value = data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            errors.append(f"{key} must be a number of seconds, got {value!r:.40}")
    return errors


def valid_drivers(drivers: object) -> list[str] | None:
    """The driver list, normalised, if it is a valid one, else None (settings_errors says why)."""
    return None if driver_list_errors("", drivers) else [p.norm(d) for d in drivers]  # type: ignore[union-attr]


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


def closure(kernel: p.RawKernel, driver: str) -> list[str]:
    """The loadable modules driver needs in an initrd: itself and its dependencies (not built-ins)."""
    out: dict[str, None] = {}  # ordered set
    queue = deque([driver])
    while queue:
        name = queue.popleft()
        if name in out or name not in kernel.modules:
            continue
        out[name] = None
        queue.extend(kernel.modules[name])
    return list(out)


def driver_kind(kernel: p.RawKernel, driver: str) -> str:
    """'builtin', 'module' or 'absent' for one driver in one kernel."""
    if driver in kernel.builtin:
        return "builtin"
    if driver in kernel.modules:
        return "module"
    option = p.CONFIG_OPTION.get(driver)
    if not kernel.has_builtin and option and kernel.config.get(option) == "y":
        return "builtin"
    return "absent"


def declared_drivers(generator: str | None, files: dict[str, str | None]) -> dict[str, Any]:
    """What the generator's configuration declares, and where kvm-drivers writes its declaration."""
    out: dict[str, Any] = {
        "path": CONFIG_PATHS.get(generator or ""),
        "drivers": [],
        "omitted": [],
        "by_others": [],
        "setting": "",
    }
    if generator == "initramfs-tools":
        out["drivers"] = p.parse_modules_file(files.get("/etc/initramfs-tools/modules"))
        out["by_others"] = out["drivers"]
        out["setting"] = "MODULES=" + p.initramfs_tools_setting(files.get("/etc/initramfs-tools/initramfs.conf"))
    elif generator == "dracut":
        conf = p.parse_dracut(files)
        out["drivers"] = sorted(conf.add_drivers)
        out["by_others"] = sorted(d for d, src in conf.add_drivers.items() if src != out["path"])
        out["omitted"] = sorted(conf.omit_drivers)
        out["setting"] = f"hostonly={conf.hostonly or 'default'}"
    elif generator == "suse-mkinitrd":
        out["drivers"], raw = p.parse_initrd_modules(files.get("/etc/sysconfig/kernel"))
        out["by_others"] = out["drivers"]
        out["setting"] = f"INITRD_MODULES={raw!r}" if raw is not None else "INITRD_MODULES unset"
    out["current"] = files.get(out["path"]) if out["path"] else None
    return out


def analyse(
    snap: p.Snapshot, drivers: list[str] | None = None, extra: list[str] | None = None, kernels: str | list[str] = "all"
) -> dict[str, Any]:
    """Turn a gathered Snapshot into the host's KVM-driver state and the work it needs."""
    distro = p.parse_distro(snap.files)
    generator, generator_error = choose_generator(distro.family, snap.tools)
    errors: list[str] = settings_errors(drivers, extra, kernels)
    warnings: list[str] = []
    bad_settings = bool(errors)
    if bad_settings:  # check with the defaults; nothing is changed on a host with bad settings
        drivers, extra, kernels = None, None, "all"
    wanted = wanted_drivers(distro.family, drivers, extra)
    errors += [f"malformed answer from the host: {x}" for x in snap.problems]
    if not snap.complete:
        errors.append("the state gathering script did not finish (output cut short)")
    if distro.family is None:
        errors.append(distro.reason)
    elif generator_error:
        errors.append(generator_error)
    loader = p.initramfs_tools_setting(snap.files.get("/etc/sysconfig/bootloader"), "LOADER_TYPE")
    if distro.family and distro.family.startswith("suse") and loader in ("grub2-bls", "systemd-boot"):
        errors.append(f"LOADER_TYPE={loader}: this system builds its initrds with sdbootutil, which kvm-drivers "
                      "does not drive; declare the drivers and run 'sdbootutil add-all-kernels' by hand")  # fmt: skip

    boot = p.parse_boot(snap.files)
    if boot is None:
        warnings.append("no bootloader configuration found; using the distribution's initrd names")
    else:
        warnings += [f"bootloader: {w}" for w in boot.warnings]
        warnings += tie_unversioned_entries(boot, snap)
    default_entry = boot.entries[boot.default] if boot and boot.default is not None else None
    if "grubby" in snap.meta:  # the host's own tool names the default kernel: we must agree with it
        theirs = p.kernel_from_path(snap.meta["grubby"].strip())
        ours = default_entry.kernel if default_entry else ""
        if theirs != ours:
            errors.append(f"grubby --default-kernel says {snap.meta['grubby'].strip()!r:.120}, kvm-drivers reads "
                          f"the default as {ours or 'none'}: not changing this host until they agree")  # fmt: skip

    running = snap.meta.get("uname", "")
    installed = [k for k in snap.kernels.values() if k.has_dep and k.images]
    for k in snap.kernels.values():
        if k not in installed:
            why = "no modules.dep" if not k.has_dep else "no kernel image in /boot"
            warnings.append(f"/lib/modules/{k.version} skipped: not an installed kernel ({why})")
    if running and running not in snap.kernels:
        warnings.append(f"running kernel {running} is not installed; handling the installed kernels")
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

    chosen = installed
    if kernels == "default":
        chosen = [k for k in installed if default_entry and k.version == default_entry.kernel] or installed[:1]
    elif isinstance(kernels, (list, tuple)):
        chosen = [k for k in installed if k.version in kernels]
        unknown = [v for v in kernels if v not in {k.version for k in installed}]
        if unknown:
            have = ", ".join(k.version for k in installed) or "none"
            errors.append(f"kvm_kernels names kernels that are not installed: {', '.join(unknown)} "
                          f"(installed: {have})")  # fmt: skip

    result_kernels = []
    for k in sorted(chosen, key=lambda k: p.kernel_version_tuple(k.version), reverse=True):
        result_kernels.append(_kernel_state(snap, k, wanted, boot, default_entry, distro.family))
    usable = [k for k in result_kernels if not k["too_old"]]
    if result_kernels and not usable:
        versions = ", ".join(k["version"] for k in result_kernels)
        errors.append(f"kernel {versions} is 2.6.24 or older: virtio drivers do not exist for it")
    for k in result_kernels:
        if k["too_old"] and usable:
            warnings.append(f"kernel {k['version']} is 2.6.24 or older: skipped")
        if k["initrd_refused"]:
            errors.append(f"kernel {k['version']}: {k['initrd_refused']}")
        elif k["initrd_error"] and not k["initrd"]:  # no initrd to rebuild: a person must add one
            errors.append(f"kernel {k['version']}: {k['initrd_error']} (add an initrd to its bootloader entry)")
        elif k["initrd_error"]:
            warnings.append(f"initrd {k['initrd']} of kernel {k['version']}: {k['initrd_error']}")

    named = list(drivers or []) + list(extra or [])  # drivers the user asked for by name must exist
    nowhere = [p.norm(d) for d in named if installed and all(driver_kind(k, p.norm(d)) == "absent" for k in installed)]
    if nowhere:
        errors.append(f"driver(s) named in the inventory exist in no installed kernel: {' '.join(nowhere)} "
                      "(a typo?)")  # fmt: skip
    declared = declared_drivers(generator, snap.files)
    if generator == "suse-mkinitrd":
        raw_value = p.parse_initrd_modules(snap.files.get("/etc/sysconfig/kernel"))[1] or ""
        odd = [w for w in raw_value.split() if not p.MODULE_NAME.match(p.norm(w))]
        if odd:
            errors.append(f"INITRD_MODULES in /etc/sysconfig/kernel holds something other than module names "
                          f"({' '.join(odd)[:80]!r}): refusing to rewrite it")  # fmt: skip
    if declared["path"] in snap.files and snap.files[declared["path"]] is None:
        errors.append(f"{declared['path']} exists but could not be read (permissions, or not UTF-8 text): "
                      "refusing to rewrite it")  # fmt: skip
    as_module = [d for d in wanted if any(d in k["modules"] for k in usable)]
    to_declare = [d for d in as_module if d not in declared["drivers"]]
    omitted = [d for d in as_module if d in declared["omitted"]]
    if omitted:
        warnings.append(f"dracut omit_drivers removes {' '.join(omitted)}: remove it from the dracut configuration")
    to_rebuild = [k["version"] for k in usable if k["missing"]]
    blacklisted = [b for b in snap.blacklists if b["driver"] in wanted]
    for b in blacklisted:
        warnings.append(f"{b['file']} line {b['line']} stops {b['driver']} loading ({b['text'].strip()}); "
                        "set kvm_remove_blacklists to remove it")  # fmt: skip
    if to_rebuild and not errors:
        errors += boot_prechecks(snap, [k for k in usable if k["version"] in to_rebuild])

    if errors:
        unreadable = bool(snap.problems) or not snap.complete or bad_settings
        unsupported = distro.family is None or (result_kernels and not usable)
        status = "unsupported" if unsupported and not unreadable else "error"  # not fully checked: error
    elif to_rebuild or to_declare or blacklisted:
        status = "drifted"
    else:
        status = "compliant"
    return {
        "status": status,
        "errors": [e for e in errors if e],
        "warnings": warnings,
        "distro": asdict(distro),
        "generator": generator,
        "tools": snap.tools,
        "running_kernel": running,
        "boot_free_kib": int(snap.meta["bootfree"]) if p.DIGITS.match(snap.meta.get("bootfree", "")) else None,
        "boot": {
            "source": boot.source if boot else None,
            "default_kernel": default_entry.kernel if default_entry else None,
            "default_title": default_entry.title if default_entry else None,
            "entries": [asdict(e) for e in boot.entries] if boot else [],
        },
        "wanted": wanted,
        "kernels": result_kernels,
        "declared": declared,
        "to_declare": to_declare,
        "to_rebuild": to_rebuild,
        "blacklisted": blacklisted,
    }


def tie_unversioned_entries(boot: p.BootConfig, snap: p.Snapshot) -> list[str]:
    """Give entries that boot an image without a version in its name (/boot/linux.vmx) their kernel.

    Through the image itself, never its name: the version in its bzImage header when that kernel
    is installed (/lib/modules/<version>), else a versioned image that is the same file.
    """
    notes = []
    for entry in boot.entries:
        img = snap.kimages.get(entry.linux_path) if not entry.kernel and entry.linux_path else None
        if img is None:
            continue
        if img.version and img.version in snap.kernels:
            entry.kernel, how = img.version, "its header's version string"
        else:
            owner = [k.version for k in snap.kernels.values() if set(k.images) & set(img.same)]
            if not owner:
                notes.append(f"bootloader entry '{entry.title}' boots {entry.linux_path}, which is not tied to "
                             f"an installed kernel (header version {img.version or 'unreadable'})")  # fmt: skip
                continue
            entry.kernel, how = owner[0], f"the same file as {' '.join(img.same)}"
        notes.append(f"bootloader entry '{entry.title}' boots {entry.linux_path}: kernel {entry.kernel} ({how})")
    return notes


def boot_prechecks(snap: p.Snapshot, rebuild: list[dict[str, Any]]) -> list[str]:
    """Why the initrds cannot be rebuilt safely (read-only or too full /boot), checked before any change."""
    options = snap.meta.get("bootmount", "").split(",")
    if "ro" in options:
        return ["/boot is mounted read-only: cannot write a new initrd (remount it rw first)"]
    free = snap.meta.get("bootfree", "")
    if not p.DIGITS.match(free):
        return []
    sizes = [k["initrd_size"] or 64 * 1024 * 1024 for k in rebuild]
    # a backup of each old image, the largest new one built beside it (it grows), and slack
    need = (sum(sizes) + 2 * max(sizes)) // 1024 + 8192
    if int(free) < need:
        return [f"not enough free space in /boot for {len(rebuild)} new initrd(s) and backups: "
                f"need about {need // 1024} MiB, {int(free) // 1024} MiB free"]  # fmt: skip
    return []


def _kernel_state(
    snap: p.Snapshot,
    k: p.RawKernel,
    wanted: list[str],
    boot: p.BootConfig | None,
    default_entry: p.BootEntry | None,
    family: str | None,
) -> dict[str, Any]:
    """Per-kernel state: its initrd, and each wanted driver built in, a module, or absent."""
    entries = [e for e in (boot.entries if boot else []) if e.kernel == k.version]
    if default_entry is not None and default_entry in entries:
        entries.insert(0, default_entry)
    initrd, source = "", ""
    for entry in entries:
        if entry.initrd:
            initrd = snap.refs.get(entry.initrd) or p.system_path(entry.initrd)
            source = f"bootloader entry '{entry.title}'"
            break
    no_initrd = bool(entries) and not initrd  # the bootloader boots this kernel without any initrd
    if no_initrd:
        source = f"bootloader entry '{entries[0].title}' (no initrd)"
    elif not initrd:
        names = [
            f"/boot/initrd.img-{k.version}",
            f"/boot/initramfs-{k.version}.img",
            f"/boot/initrd-{k.version}",
            f"/boot/initrd-{k.version}.img",
        ]
        found = [snap.refs[n] for n in names if snap.refs.get(n)]
        initrd = found[0] if found else names[0 if family == "debian" else 1 if family == "rhel" else 2]
        source = "distribution naming convention"
    raw = snap.initrds.get(initrd)
    refused = "" if no_initrd else initrd_refusal(initrd, raw)
    if not refused and raw is not None and raw.kernel_dirs and k.version not in raw.kernel_dirs:
        refused = (f"{initrd} holds the modules of kernel {' '.join(sorted(raw.kernel_dirs))}, not of {k.version} "
                   "that its bootloader entry boots: fix the entry (rebuilding it would break the other kernel)")
    kinds = {d: driver_kind(k, d) for d in wanted}
    needed_set: dict[str, None] = {}  # ordered set
    for d in wanted:
        for m in closure(k, d) if kinds[d] == "module" else []:
            needed_set[m] = None
    needed = list(needed_set)
    if no_initrd:
        error = f"booted without an initrd, yet it needs the modules {' '.join(needed)}" if needed else ""
        missing = needed
    elif raw is None:
        error = "initrd file does not exist"
        missing = needed
    elif raw.error:
        error = raw.error
        missing = needed
    else:
        error = ""
        missing = [m for m in needed if m not in raw.modules]
    return {
        "version": k.version,
        "default": default_entry is not None and default_entry.kernel == k.version,
        "too_old": p.kernel_version_tuple(k.version) <= OLDEST_KERNEL,
        "initrd": initrd,
        "initrd_source": source,
        "initrd_size": raw.size if raw else None,
        "initrd_error": error,
        "initrd_refused": refused,
        "lister": raw.lister if raw else None,
        "builtin": [d for d in wanted if kinds[d] == "builtin"],
        "modules": [d for d in wanted if kinds[d] == "module"],
        "absent": [d for d in wanted if kinds[d] == "absent"],
        "needed": needed,
        "missing": missing,
    }


# First bytes of the formats an initrd comes in: cpio (newc, crc; early microcode too), gzip,
# xz, zstd, lz4 (legacy and frame), bzip2, lzop, lzma.
INITRD_MAGIC = ("303730373031", "303730373032", "1f8b", "fd377a585a00", "28b52ffd", "02214c18", "04224d18",
                "425a68", "894c5a4f", "5d0000")  # fmt: skip


INITRD_PATH = re.compile(r"^/boot/[A-Za-z0-9._@+,:=~/-]+$")  # no spaces, patterns or non-ASCII


def initrd_refusal(path: str, raw: p.RawInitrd | None) -> str:
    """Why kvm-drivers must not rebuild path as an initrd ('' when it may): whatever the
    bootloader configuration says, only a file in /boot that looks like an initrd is replaced.
    """
    if not p.safe_path(path) or not path.startswith("/boot/") or not INITRD_PATH.match(path):
        return f"the bootloader names {path!r} as an initrd: not a file in /boot, refusing to touch it"
    if raw is not None and raw.magic and not raw.magic.startswith(INITRD_MAGIC):
        return f"{path} does not look like an initrd (first bytes {raw.magic[:12]}): refusing to replace it"
    return ""


def gather_command(drivers: list[str], known: list[str] | None = None, seen: str = "") -> StringCommand:
    """The one remote command that gathers everything.

    drivers: the superset of drivers to look up; known: initrd keys whose listing is cached;
    seen: fingerprint of our cached copy of the output (the host answers "unchanged" if equal).
    """
    return StringCommand(
        "sh",
        "-c",
        QuoteString(GATHER_SCRIPT),
        "kvm-gather",
        QuoteString(LISTER),
        QuoteString(" ".join(known or [])),
        QuoteString(seen),
        *[QuoteString(d) for d in drivers],
        "|",  # an answer past the cap is cut (no "end" line: an error), whatever the host holds
        "head",
        "-c",
        str(OUTPUT_CAP),
    )


class KvmDrivers(FactBase[dict]):
    """
    The whole KVM-driver state of a host, in one remote command.

    Returns a dict:

    - ``status``: ``compliant``, ``drifted``, ``unsupported`` or ``error``
    - ``errors`` / ``warnings``: messages (errors mean: do not change this host)
    - ``distro``: ``id``, ``name``, ``version``, ``family`` (rhel, debian, suse-legacy,
      suse-12sp1, suse or None) and ``reason`` when unsupported
    - ``generator``: initramfs-tools, dracut or suse-mkinitrd; ``tools``: name -> path
    - ``running_kernel``; ``boot``: ``source``, ``default_kernel``, ``entries``
    - ``kernels``: per installed kernel, newest first: ``version``, ``default``,
      ``initrd`` (the file the bootloader boots), ``builtin``/``modules``/``absent``
      (wanted drivers by kind), ``needed`` (module closure), ``missing`` (not in the initrd)
    - ``declared``: config ``path``, ``drivers`` declared, ``omitted``, ``setting``
    - ``wanted``, ``to_declare``, ``to_rebuild`` (kernel versions)
    - ``blacklisted``: modprobe.d lines stopping a wanted driver (``file``, ``line``, ``driver``, ``text``)

    Arguments: ``drivers`` replaces the family's default list, ``extra`` adds to it,
    ``kernels`` is ``"all"`` (default), ``"default"`` or a list of versions.
    """

    def command(
        self, drivers: list[str] | None = None, extra: list[str] | None = None, kernels: str | list[str] = "all"
    ) -> StringCommand:
        self._args = (drivers, extra, kernels)
        self._host = ctx_host.get().name if ctx_host.isset() else ""
        self._cached = cache.load(self._host) if self._host else cache.HostCache()
        # Only well-formed names travel (bad inventory data is reported by analyse()).
        names, more = valid_drivers(drivers), valid_drivers(extra) or []
        lookup = wanted_drivers("suse", None, more) if names is None else wanted_drivers(None, names, more)
        return gather_command(lookup, sorted(self._cached.listings), cache.seen(self._cached, SCRIPT_VERSION))

    def process(self, output: list[str]) -> dict:
        drivers, extra, kernels = getattr(self, "_args", (None, None, "all"))
        try:
            size = sum(len(line) + 1 for line in output)
            if size >= OUTPUT_CAP:
                return failed_state(f"the host sent {size} bytes or more (limit {OUTPUT_CAP}): answer refused")
            cached = getattr(self, "_cached", cache.HostCache())
            lines = cache.expand(cached, output)
            snap = p.parse_snapshot(lines)
            if getattr(self, "_host", ""):
                cache.apply(self._host, cached, snap, lines, SCRIPT_VERSION)
            return analyse(snap, drivers, extra, kernels)
        except Exception as exc:  # noqa: BLE001 - one host's odd answer must not stop the others
            return failed_state(f"could not make sense of the host's answer ({type(exc).__name__}: {exc})")


def failed_state(message: str) -> dict[str, Any]:
    """The state of a host that could not be checked: an error, with every key analyse() gives."""
    return {
        "status": "error", "errors": [message], "warnings": [],
        "distro": {"id": "unknown", "name": "unknown", "version": "", "family": None, "reason": message},
        "generator": None, "tools": {}, "running_kernel": "", "boot_free_kib": None,
        "boot": {"source": None, "default_kernel": None, "default_title": None, "entries": []},
        "wanted": [], "kernels": [], "declared": declared_drivers(None, {}), "to_declare": [], "to_rebuild": [],
        "blacklisted": [],
    }  # fmt: skip


class _Part(ShortFactBase[Any]):
    fact = KvmDrivers
    key = ""

    def process_data(self, data: dict) -> Any:
        return data.get(self.key)


class Distro(_Part):
    """The host's distribution: ``id``, ``name``, ``version``, ``family``, ``reason``."""

    key = "distro"


class Kernels(_Part):
    """Installed kernels with each wanted driver's kind and the initrd state (see KvmDrivers)."""

    key = "kernels"


class Initrds(ShortFactBase[Any]):
    """Per installed kernel: the initrd the bootloader boots, whether it is the default entry,
    and the wanted modules it lacks: ``{version: {initrd, default, source, missing, error}}``.
    """

    fact = KvmDrivers

    def process_data(self, data: dict) -> Any:
        return {
            k["version"]: {"initrd": k["initrd"], "default": k["default"], "source": k["initrd_source"],
                           "missing": k["missing"], "error": k["initrd_error"]}
            for k in data["kernels"]
        }  # fmt: skip


class DeclaredDrivers(_Part):
    """What the family's configuration declares (see KvmDrivers ``declared``)."""

    key = "declared"
