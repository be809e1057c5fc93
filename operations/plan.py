"""
What to do on a host: a pure function of its state (facts/state.py) and the inventory's settings.

``plan(state, drivers, extra, kernels)`` returns a ``Plan``: the host's status (compliant, drifted,
unsupported, error), every reason not to touch it, and the work: which drivers to declare, which
kernels' initrds to rebuild, which modprobe.d lines stop a wanted driver. The deploy turns a plan
into operations; the fleet check and its reports read the same plan.

The settings arrive checked (operations/settings.py): their errors are the host's errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kvm_drivers.facts.migration import DEFAULT_LINE
from kvm_drivers.facts.state import Blacklist, Declared, HostState, KernelState
from kvm_drivers.operations.settings import TRANSPORT, Settings

STATUSES = ("compliant", "drifted", "unsupported", "error")
# Without these in the kernel the default entry boots, the root disk on virtio-blk or the NIC is
# never found: a kernel that lacks one cannot be made to boot on KVM by any initrd.
ESSENTIAL = ("virtio_blk", "virtio_net", "virtio_pci", "virtio", "virtio_ring")


# --- the plan ------------------------------------------------------------------------------


@dataclass
class KernelPlan:
    """One handled kernel, for the wanted drivers: their kinds, the modules its initrd needs and lacks."""

    version: str
    default: bool = False
    too_old: bool = False
    initrd: str = ""
    initrd_source: str = ""
    initrd_size: int | None = None
    initrd_error: str = ""
    initrd_refused: str = ""
    lister: str | None = None
    builtin: list[str] = field(default_factory=list)  # wanted drivers built into the kernel
    modules: list[str] = field(default_factory=list)  # wanted drivers that are modules
    absent: list[str] = field(default_factory=list)  # wanted drivers this kernel does not have
    needed: list[str] = field(default_factory=list)  # the modules' closure: what the initrd must hold
    missing: list[str] = field(default_factory=list)  # needed, and not in the initrd
    doubts: dict[str, str] = field(default_factory=dict)  # wanted driver -> why what it is in it cannot be told
    blocks: list[list[str]] = field(default_factory=list)  # [module, where, why]: the initrd's own files stop it
    conf_error: str = ""  # why the initrd's own configuration files could not be read


@dataclass
class Plan:
    """What a host needs: its status, why it must not be touched (errors), and the work."""

    status: str  # compliant, drifted, unsupported or error
    state: HostState
    errors: list[str] = field(default_factory=list)  # any error: change nothing on this host
    warnings: list[str] = field(default_factory=list)
    wanted: list[str] = field(default_factory=list)
    kernels: list[KernelPlan] = field(default_factory=list)  # the handled kernels, newest first
    declare: list[str] = field(default_factory=list)  # wanted drivers that are modules: to be declared
    to_declare: list[str] = field(default_factory=list)  # those not declared yet
    to_rebuild: list[str] = field(default_factory=list)  # kernel versions whose initrd lacks a module
    blacklisted: list[Blacklist] = field(default_factory=list)  # modprobe.d lines stopping a wanted driver
    # beyond the initrd: the state's boot-path findings, each with "opt_in" (the setting that fixes
    # it, '' when a person must) and "fixing" (that setting is on)
    boot_path: list[dict[str, Any]] = field(default_factory=list)

    @property
    def generator(self) -> str | None:
        return self.state.generator

    @property
    def declared(self) -> Declared:
        return self.state.declared


def kernel_plan(k: KernelState, wanted: list[str]) -> KernelPlan:
    """One kernel's needs for the wanted drivers (all of which were looked up)."""
    kinds = {d: k.kinds.get(d, "absent") for d in wanted}
    needed: dict[str, None] = {}  # ordered set
    for d in wanted:
        for m in k.closures.get(d, []) if kinds[d] == "module" else []:
            needed[m] = None
    error = k.initrd_error
    if k.no_initrd:
        error = f"booted without an initrd, yet it needs the modules {' '.join(needed)}" if needed else ""
        missing = list(needed)
    elif error:
        missing = list(needed)
    else:
        have = set(k.in_initrd)  # not the list: closures x listing would be quadratic
        missing = [m for m in needed if m not in have]
    return KernelPlan(
        version=k.version, default=k.default, too_old=k.too_old, initrd=k.initrd, initrd_source=k.initrd_source,
        initrd_size=k.initrd_size, initrd_error=error, initrd_refused=k.initrd_refused, lister=k.lister,
        builtin=[d for d in wanted if kinds[d] == "builtin"], modules=[d for d in wanted if kinds[d] == "module"],
        absent=[d for d in wanted if kinds[d] == "absent"], needed=list(needed), missing=missing,
        doubts={d: k.doubts[d] for d in wanted if d in k.doubts},
        blocks=[b for b in k.initrd_blocks if b[0] in needed or b[0] in wanted], conf_error=k.initrd_conf_error,
    )  # fmt: skip


def plan(state: HostState, settings: Settings = Settings()) -> Plan:  # noqa: B008 - frozen, never changed
    """Decide what the host needs for these settings. Pure: state in, plan out."""
    errors = list(settings.errors)
    bad_settings = bool(errors)  # checked with the defaults; nothing is changed on a host with bad settings
    wanted = settings.wanted(state.distro.family)
    kernels = settings.kernels
    errors += state.errors
    warnings = list(state.warnings)
    unlooked = [d for d in wanted if d not in state.drivers]
    if unlooked and state.readable:
        errors.append(f"internal: drivers {' '.join(unlooked)} were not looked up on the host")

    if settings.drivers is not None and TRANSPORT in wanted and TRANSPORT not in settings.named:
        warnings.append(f"{TRANSPORT} is wanted too, though kvm_drivers does not list it: the virtio disk and NIC "
                        "are PCI devices on KVM, and are not found without it")  # fmt: skip
    installed = state.kernels
    new_default = next_default(state, settings)
    if new_default:  # the opt-in makes another kernel the default: plan for what will boot
        installed = [replace(k, default=k.version == new_default) for k in installed]
    chosen = installed
    if kernels == "default":
        chosen = [k for k in installed if k.default] or installed[:1]
    elif isinstance(kernels, tuple):
        chosen = [k for k in installed if k.version in kernels]
        unknown = [v for v in kernels if v not in {k.version for k in installed}]
        if unknown:
            have = ", ".join(k.version for k in installed) or "none"
            errors.append(f"kvm_kernels names kernels that are not installed: {', '.join(unknown)} "
                          f"(installed: {have})")  # fmt: skip

    boots = next((k for k in installed if k.default), None)
    if boots is not None and boots not in chosen:
        errors.append(f"kvm_kernels leaves out kernel {boots.version}, which the default boot entry boots: what "
                      "boots cannot be verified (add it, or set kvm_kernels to 'default' or 'all')")  # fmt: skip
    handled = [kernel_plan(k, wanted) for k in chosen]
    usable = [k for k in handled if not k.too_old]
    for k in usable:
        errors += [f"cannot verify: {d}" for d in k.doubts.values()]
        lacking = [d for d in k.absent if d in ESSENTIAL and d not in k.doubts]
        if k.default and lacking:
            errors.append(f"kernel {k.version}, which the default boot entry boots, has no {' '.join(lacking)} "
                          "(neither built in nor a module): it cannot find its disk or network on KVM, whatever "
                          "its initrd holds; make a kernel that has them the default")  # fmt: skip
        elif lacking:
            warnings.append(f"kernel {k.version} has no {' '.join(lacking)}: it would not boot on KVM")
    if handled and not usable:
        errors.append(f"kernel {', '.join(k.version for k in handled)} is 2.6.24 or older: "
                      "virtio drivers do not exist for it")  # fmt: skip
    for k in handled:
        if k.too_old and usable:
            warnings.append(f"kernel {k.version} is 2.6.24 or older: skipped")
        if k.initrd_refused:
            errors.append(f"kernel {k.version}: {k.initrd_refused}")
        elif k.initrd_error and not k.initrd:  # no initrd to rebuild: a person must add one
            errors.append(f"kernel {k.version}: {k.initrd_error} (add an initrd to its bootloader entry)")
        elif k.initrd_error:
            warnings.append(f"initrd {k.initrd} of kernel {k.version}: {k.initrd_error}")

    nowhere = [d for d in settings.named if installed and all(k.kinds.get(d, "absent") == "absent" for k in installed)]
    if nowhere:
        errors.append(f"driver(s) named in the inventory exist in no installed kernel: {' '.join(nowhere)} "
                      "(a typo?)")  # fmt: skip
    declared = state.declared
    as_module = [d for d in wanted if any(d in k.modules for k in usable)]
    to_declare = [d for d in as_module if d not in declared.drivers]
    needed_modules = {m for k in usable for m in k.needed}
    for module, pattern, path in declared.omitted:
        if pattern.replace("-", "_", 1) in as_module:  # our declaration names it: dracut drops the pattern
            continue
        if not module:
            errors.append(f"cannot verify: dracut's omit_drivers pattern {pattern!r:.80} in {path} cannot be "
                          "evaluated: it might keep a wanted module out of every initrd dracut builds")  # fmt: skip
        elif module in needed_modules:
            errors.append(f"dracut's omit_drivers pattern {pattern!r:.80} in {path} keeps {module} out of every "
                          "initrd dracut builds (the next kernel update drops it): remove it from there")  # fmt: skip
    watched = set(wanted) | needed_modules
    blacklisted = [b for b in state.blacklists if b.driver in watched]
    for b in blacklisted:
        warnings.append(f"{b.file} line {b.line} stops {b.driver} loading ({b.text.strip()[:120]}: {b.why}); "
                        "set kvm_remove_blacklists to remove it")  # fmt: skip
    for module, word, why in state.cmdline_blocks:
        if module in watched:
            errors.append(f"the default boot entry's kernel command line has {word!r:.80} ({why}): {module} can "
                          "never load; remove it from the entry (and from GRUB_CMDLINE_LINUX in /etc/default/grub)")
    stopped_on_host = {b.driver for b in blacklisted}
    for k in usable:
        if k.conf_error and not k.initrd_error and not k.missing:  # (a rebuilt one is proven by rebuild.sh)
            errors.append(f"cannot verify: initrd {k.initrd} of kernel {k.version}: what its own modprobe.d and "
                          f"command-line files say is not known ({k.conf_error})")  # fmt: skip
        for module, where, why in k.blocks:
            tail = ("rebuilding it drops it" if module not in stopped_on_host
                    else "the host's own configuration has it too")  # fmt: skip
            warnings.append(f"initrd {k.initrd} of kernel {k.version} stops {module} ({where}: {why}); {tail}")
    # an initrd that lacks a module, or carries a line that the host's configuration no longer has
    to_rebuild = [k.version for k in usable
                  if k.missing or any(b[0] not in stopped_on_host for b in k.blocks)]  # fmt: skip
    if to_rebuild and not errors:
        errors += boot_prechecks(state, [k for k in usable if k.version in to_rebuild])

    boot_path = [{**f, "opt_in": settings.opt_in(f["kind"]) if fixable(f) else "",
                  "fixing": settings.allows(f["kind"]) and fixable(f)} for f in state.boot_path]  # fmt: skip
    blocking = [f for f in boot_path if f["severity"] != "advice"]
    warnings += [finding_text(f) for f in boot_path if f["severity"] == "advice"]
    if errors:
        unsupported = state.distro.family is None or (handled and not usable)
        readable = state.readable and not bad_settings
        status = "unsupported" if unsupported and readable else "error"  # not fully checked: error
    elif to_rebuild or to_declare or blacklisted or blocking:
        status = "drifted"
    else:
        status = "compliant"
    return Plan(
        status=status, state=state, errors=[e for e in errors if e], warnings=warnings, wanted=wanted,
        kernels=handled, declare=as_module, to_declare=to_declare, to_rebuild=to_rebuild, blacklisted=blacklisted,
        boot_path=boot_path,
    )  # fmt: skip


def fixable(f: dict[str, Any]) -> bool:
    """Whether a finding carries a change its opt-in makes (a default kernel only where a GRUB legacy
    menu sets it: the fix then names that file).
    """
    fix = f.get("fix") or {}
    return bool(fix) and (fix.get("action") != "set-default-kernel" or bool(fix.get("path")))


def next_default(state: HostState, settings: Settings) -> str | None:
    """The kernel the default boot entry will boot once the allowed set-default-kernel fix is made
    (its new ``default N`` line names entry N of that menu), or None.
    """
    for f in state.boot_path:
        fix = f.get("fix") or {}
        if fix.get("action") != "set-default-kernel" or not fix.get("path") or not settings.allows(f["kind"]):
            continue
        m = DEFAULT_LINE.fullmatch(str(fix.get("new", "")))
        entry = next((e for e in state.boot.entries if m and e.get("origin") == fix["path"]
                      and e.get("path") == m.group(2)), None)  # fmt: skip
        if entry and entry.get("kernel") in {k.version for k in state.kernels}:
            return str(entry["kernel"])
    return None


def finding_text(f: dict[str, Any]) -> str:
    """A boot-path finding in one line: where, then what."""
    where = f"{f['where']} line {f['line']}" if f.get("line") else f["where"]
    return f"{where}: {f['message']}"


def boot_prechecks(state: HostState, rebuild: list[KernelPlan]) -> list[str]:
    """Why the initrds cannot be rebuilt safely (read-only or too full /boot), checked before any change."""
    if "ro" in state.boot_mount:
        return ["/boot is mounted read-only: cannot write a new initrd (remount it rw first)"]
    if state.boot_free_kib is None:
        return []
    sizes = [k.initrd_size or 64 * 1024 * 1024 for k in rebuild]
    # a backup of each old image, the largest new one built beside it (it grows), and slack
    need = (sum(sizes) + 2 * max(sizes)) // 1024 + 8192
    if state.boot_free_kib < need:
        return [f"not enough free space in /boot for {len(rebuild)} new initrd(s) and backups: "
                f"need about {need // 1024} MiB, {state.boot_free_kib // 1024} MiB free"]  # fmt: skip
    return []
