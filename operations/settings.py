"""
The settings of one host, read and checked once, before anything is gathered.

They come from the inventory's data (``Settings.from_data``, for the deploy file and ``kvm-drivers
check`` alike) or from the ``@deploy``'s arguments (``Settings.read``): ``kvm_drivers`` replaces the
family's driver list, ``kvm_drivers_extra`` adds to it, ``kvm_kernels`` is ``"all"``, ``"default"``
or a list of kernel versions, ``kvm_remove_blacklists`` allows disabling modprobe.d lines, and
``kvm_gather_timeout`` / ``kvm_change_timeout`` limit each step. A value that cannot be used is an
error that names the setting, and its default stands in so the host can still be described.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvm_drivers.facts.config_files import norm
from kvm_drivers.facts.state import SUSE_FIRST, VIRTIO
from kvm_drivers.facts.wire import KERNEL_NAME, MODULE_NAME

GATHER_TIMEOUT = 300  # seconds a host may take to answer (inventory data kvm_gather_timeout)
CHANGE_TIMEOUT = 1800  # seconds one change (a write, a rebuild and its lock wait) may take (kvm_change_timeout)
# The virtio devices sit on a transport: on the x86 KVM clouds the disk and the NIC are PCI devices,
# so virtio_pci is wanted with any of them, whatever the inventory lists (virtio and virtio_ring
# come with it, through modules.dep).
TRANSPORT = "virtio_pci"
VIRTIO_DEVICES = ("virtio_blk", "virtio_scsi", "virtio_net")


# Each setting by its name (the ``@deploy``'s argument): its inventory data key and its default.
KEYS: dict[str, tuple[str, object]] = {
    "drivers": ("kvm_drivers", None), "extra": ("kvm_drivers_extra", None), "kernels": ("kvm_kernels", "all"),
    "remove_blacklists": ("kvm_remove_blacklists", False),
    "gather_timeout": ("kvm_gather_timeout", GATHER_TIMEOUT), "change_timeout": ("kvm_change_timeout", CHANGE_TIMEOUT),
    "fix_device_names": ("kvm_fix_device_names", False), "fix_network": ("kvm_fix_network", False),
    "fix_efi_fallback": ("kvm_fix_efi_fallback", False), "regenerate_grub": ("kvm_regenerate_grub", False),
    "set_default_kernel": ("kvm_set_default_kernel", False),
}  # fmt: skip


# Which setting allows fixing each kind of boot-path finding (facts/boot_path.py KINDS); the
# others (a static address, an interface renamed) need a person.
OPT_IN = {
    "device-name": "kvm_fix_device_names", "resume-device": "kvm_fix_device_names",
    "grub-no-uuid": "kvm_fix_device_names", "pv-leftover": "kvm_fix_device_names",
    "nic-rule": "kvm_fix_network", "nic-mac-binding": "kvm_fix_network", "nic-mac-set": "kvm_fix_network",
    "efi-fallback": "kvm_fix_efi_fallback",
    "xen-kernel": "kvm_set_default_kernel", "no-virtio-kernel": "kvm_set_default_kernel",
}  # fmt: skip


def default_drivers(family: str | None) -> list[str]:
    """The procedure's driver list for a family (SUSE families list ata_piix ata_generic first)."""
    return SUSE_FIRST + VIRTIO if family and family.startswith("suse") else list(VIRTIO)


def wanted_drivers(family: str | None, drivers: list[str] | None, extra: list[str] | None) -> list[str]:
    """The drivers to guarantee: the given list (or the family default) plus extras, normalised."""
    out: list[str] = []
    for d in (drivers or default_drivers(family)) + (extra or []):
        if norm(d) not in out:
            out.append(norm(d))
    if TRANSPORT not in out and any(d in out for d in VIRTIO_DEVICES):
        out.append(TRANSPORT)
    return out


def driver_list_errors(key: str, value: object) -> list[str]:
    """Why value (the inventory data key) is not a list of module names ([] when it is)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(d, str) for d in value):
        return [f"{key} must be a list of module names, got {type(value).__name__} {value!r:.60}"]
    bad = [d for d in value if not MODULE_NAME.match(norm(d)) or "/" in d]
    return [f"{key}: not a module name: {', '.join(repr(d)[:60] for d in bad)}"] if bad else []


def _seconds_error(key: str, value: object) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return [f"{key} must be a number of seconds, got {value!r:.40}"]
    return []


@dataclass(frozen=True)
class Settings:
    """One host's settings, checked: drivers and extra normalised (None: the family's list)."""

    drivers: tuple[str, ...] | None = None
    extra: tuple[str, ...] = ()
    kernels: str | tuple[str, ...] = "all"
    remove_blacklists: bool = False
    gather_timeout: float = GATHER_TIMEOUT
    change_timeout: float = CHANGE_TIMEOUT
    fix_device_names: bool = False  # rewrite device names that will not exist on KVM to UUID= (and PV leftovers)
    fix_network: bool = False  # drop NIC rules and settings bound to the old MAC
    fix_efi_fallback: bool = False  # copy the distribution's shim/GRUB to EFI/BOOT/BOOTX64.EFI
    regenerate_grub: bool = False  # allowed to regenerate grub.cfg where a value only lives there
    set_default_kernel: bool = False  # make a kernel that runs on KVM the default (GRUB legacy's default line)
    errors: tuple[str, ...] = ()  # why a given value cannot be used (its default stands in)

    @classmethod
    def read(cls, drivers: object = None, extra: object = None, kernels: object = "all", **rest: object) -> Settings:
        """Check each value; keep those that can be used, the defaults for the others, and why.
        rest: the other settings of KEYS by name (remove_blacklists=..., gather_timeout=..., ...).
        """
        unknown = sorted(set(rest) - set(KEYS))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        given = {name: rest.get(name, default) for name, (_, default) in KEYS.items()}
        remove_blacklists, fix_device_names = given["remove_blacklists"], given["fix_device_names"]
        fix_network, fix_efi_fallback = given["fix_network"], given["fix_efi_fallback"]
        regenerate_grub, set_default_kernel = given["regenerate_grub"], given["set_default_kernel"]
        gather_timeout, change_timeout = given["gather_timeout"], given["change_timeout"]
        errors: list[str] = []
        lists: dict[str, tuple[str, ...] | None] = {}
        for key, value in (("kvm_drivers", drivers), ("kvm_drivers_extra", extra)):
            bad = driver_list_errors(key, value) if value is not None else []
            errors += bad
            lists[key] = None if value is None or bad else tuple(norm(d) for d in value)  # type: ignore[union-attr]
        if isinstance(drivers, (list, tuple)) and not drivers:
            errors.append("kvm_drivers is empty: give the drivers to guarantee, or leave it unset")
            lists["kvm_drivers"] = None
        kept_kernels: str | tuple[str, ...] = "all"
        if isinstance(kernels, (list, tuple)):
            if not kernels or not all(isinstance(k, str) and KERNEL_NAME.match(k) for k in kernels):
                errors.append(f"kvm_kernels must be 'all', 'default' or a non-empty list of kernel versions, "
                              f"got {kernels!r:.80}")  # fmt: skip
            else:
                kept_kernels = tuple(kernels)
        elif kernels in ("all", "default"):
            kept_kernels = kernels  # type: ignore[assignment]
        else:
            errors.append(f"kvm_kernels must be 'all', 'default' or a list of kernel versions, got {kernels!r:.80}")
        flags = {"kvm_remove_blacklists": remove_blacklists, "kvm_fix_device_names": fix_device_names,
                 "kvm_fix_network": fix_network, "kvm_fix_efi_fallback": fix_efi_fallback,
                 "kvm_regenerate_grub": regenerate_grub, "kvm_set_default_kernel": set_default_kernel}  # fmt: skip
        errors += [f"{key} must be True or False, got {value!r:.40}" for key, value in flags.items()
                   if not isinstance(value, bool)]  # fmt: skip
        gather_bad = _seconds_error("kvm_gather_timeout", gather_timeout)
        change_bad = _seconds_error("kvm_change_timeout", change_timeout)
        errors += gather_bad + change_bad
        return cls(
            drivers=lists["kvm_drivers"],
            extra=lists["kvm_drivers_extra"] or (),
            kernels=kept_kernels,
            remove_blacklists=remove_blacklists is True,
            gather_timeout=GATHER_TIMEOUT if gather_bad else float(gather_timeout),  # type: ignore[arg-type]
            change_timeout=CHANGE_TIMEOUT if change_bad else float(change_timeout),  # type: ignore[arg-type]
            fix_device_names=fix_device_names is True,
            fix_network=fix_network is True,
            fix_efi_fallback=fix_efi_fallback is True,
            regenerate_grub=regenerate_grub is True,
            set_default_kernel=set_default_kernel is True,
            errors=tuple(errors),
        )

    @classmethod
    def from_data(cls, data: Any) -> Settings:
        """The settings in a host's inventory data (pyinfra's ``host.data``, or a dict)."""
        return cls.read(**data_arguments(data))

    def wanted(self, family: str | None) -> list[str]:
        """The drivers to guarantee on a host of this family."""
        return wanted_drivers(family, list(self.drivers) if self.drivers else None, list(self.extra))

    def lookup(self) -> list[str]:
        """The drivers to look up on a host before its family is known: every family's list when no
        list is given (the SUSE one holds the others). Only well-formed names travel.
        """
        if self.drivers is None:
            return wanted_drivers("suse", None, list(self.extra))
        return wanted_drivers(None, list(self.drivers), list(self.extra))

    def opt_in(self, kind: str) -> str:
        """The setting that allows fixing a boot-path finding of this kind ('' when none can)."""
        return OPT_IN.get(kind, "")

    def allows(self, kind: str) -> bool:
        """Whether these settings allow fixing a finding of this kind."""
        key = OPT_IN.get(kind, "")
        return bool(key) and getattr(self, key.removeprefix("kvm_"))

    @property
    def named(self) -> list[str]:
        """The drivers the settings name themselves (list and extras)."""
        return list(self.drivers or ()) + list(self.extra)


def data_arguments(data: Any) -> dict[str, Any]:
    """The ``@deploy``'s arguments, as given in a host's inventory data (checked by the deploy, once)."""
    return {name: data.get(key, default) for name, (key, default) in KEYS.items()}
