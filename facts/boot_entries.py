"""
What does a boot menu hold? Its entries (title, kernel, initrd), the configuration read, GRUB's
menu items, the caps on their number, and where the files an entry names are on the system.
Shared by the GRUB 2 script, the default lookup and the menu readers (boot_menus.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_BOOT_ENTRIES = 4096  # menu entries and submenus of a bootloader configuration (real ones: a few hundred)


class BootConfigTooLarge(ValueError):
    """A bootloader configuration whose reading would cost more than a real one ever does: refused."""


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
    origin: str = ""  # the file its lines are in (a BLS entry file, menu.lst, the grub.cfg read)


@dataclass
class BootConfig:
    """Entries of the bootloader configuration that is in use, and the default one."""

    source: str  # the file(s) read
    entries: list[BootEntry] = field(default_factory=list)
    default: int | None = None  # index into entries
    warnings: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)  # what keeps the boot path from being known: an error


@dataclass
class _Item:
    """A menu item as GRUB builds it: an entry, or a submenu with its own items."""

    title: str
    ident: str
    children: list[_Item] | None = None  # None: a menuentry
    entry: BootEntry | None = None
    bls: bool = False  # the place where 'blscfg' adds the BLS entries


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
