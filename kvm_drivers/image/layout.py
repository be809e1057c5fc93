"""What a disk image holds, read from what sfdisk, blkid and the image's own fstab say (pure): its
partitions, their file systems, which one an fstab device names, and what must be mounted besides
"/" for the gather to see what the image boots (kernels, initrds, bootloader files, modules).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from kvm_drivers.facts.boot_path import fstab_entries
from kvm_drivers.image.lvm import mapper_names

# The file systems a root may be on, and those mounted for the check (an ESP is vfat).
ROOT_TYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")
MOUNTED_TYPES = (*ROOT_TYPES, "vfat")
# What the gather reads besides "/": the mount points that may hold them, parents first.
NEEDED = ("/usr", "/boot", "/boot/efi", "/efi")
# File systems an image may hold that the check cannot open: said as an error, never skipped.
UNSUPPORTED = {
    "crypto_LUKS": "an encrypted (LUKS) file system: not supported (open it and check the tree)",
    "zfs_member": "a ZFS pool member: not supported",
    "linux_raid_member": "an MD RAID member: not supported",
}
EXTENDED = {"5", "f", "85"}  # DOS extended-partition containers: sfdisk lists their logical partitions
_KERNEL_NAME = re.compile(r"/dev/(?:(?:sd|vd|xvd|hd)a|nvme0n1p|mmcblk0p|cciss/c0d0p)(\d+)")


@dataclass(frozen=True)
class Part:
    """A partition (number 0: the whole disk, no partition table), in bytes from the disk's start."""

    number: int
    offset: int
    size: int
    partuuid: str = ""
    partlabel: str = ""
    lv: str = ""  # "VG/LV": an LVM volume inside partition number (kvm_drivers.image.lvm)

    @property
    def name(self) -> str:
        """How messages name it."""
        return f"LVM volume {self.lv}" if self.lv else f"partition {self.number}"


@dataclass(frozen=True)
class Fs:
    """A file system blkid found on a partition."""

    part: Part
    type: str
    uuid: str = ""
    label: str = ""


def partitions(sfdisk_json: str, disk_size: int) -> tuple[list[Part], list[str]]:
    """The partitions ``sfdisk --json`` lists (no output: the whole disk is one), and what is wrong
    with the table: a partition past the end of the disk is left out and said.
    """
    if not sfdisk_json.strip():
        return [Part(0, 0, disk_size)], []
    table = json.loads(sfdisk_json)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    disk_id = str(table.get("id", "")).lower().removeprefix("0x")
    parts, problems = [], []
    for p in table.get("partitions", []):
        number = int(re.search(r"(\d+)$", p["node"]).group(1))
        if table["label"] == "dos" and str(p.get("type", "")).lower() in EXTENDED:
            continue
        start, size = int(p["start"]) * sector, int(p["size"]) * sector
        if start + size > disk_size or size <= 0:
            problems.append(f"partition {number} ({start}+{size} bytes) is not inside the disk ({disk_size} bytes)")
            continue
        if table["label"] == "gpt":
            partuuid, label = str(p.get("uuid", "")).lower(), str(p.get("name", ""))
        else:
            partuuid, label = (f"{disk_id:0>8}-{number:02x}" if disk_id else ""), ""
        parts.append(Part(number, start, size, partuuid, label))
    return parts, problems


def overlaps(parts: list[Part]) -> str:
    """Two partitions that share bytes ('' when none do): said, then refused."""
    ordered = sorted(parts, key=lambda p: p.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset < a.offset + a.size:
            return f"{a.name} and {b.name} overlap"
    return ""


_SUBVOL = re.compile(r"[A-Za-z0-9@._+-]+(?:/[A-Za-z0-9@._+-]+)*")


def plain_subvol(name: str) -> bool:
    """Whether a btrfs subvolume name can go into mount's options as it is (no comma, quote, control...)."""
    return bool(_SUBVOL.fullmatch(name)) and ".." not in name.split("/")


def blkid_fields(export: str) -> dict[str, str]:
    """``blkid -o export`` KEY=value lines."""
    out = {}
    for line in export.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def find(spec: str, filesystems: list[Fs]) -> tuple[Fs | None, str]:
    """The file system an fstab device names, and a note when it was found by a kernel name
    (which names the partition of this, the only, disk). None with the reason when none is.
    """
    kinds = {"UUID": "uuid", "LABEL": "label", "PARTUUID": "partuuid", "PARTLABEL": "partlabel"}
    key, value = "", ""
    if "=" in spec and spec.split("=", 1)[0] in kinds:
        key, value = spec.split("=", 1)
    elif m := re.fullmatch(r"/dev/disk/by-(uuid|label|partuuid|partlabel)/(.+)", spec):
        key, value = m.group(1).upper(), m.group(2)
    if key:
        attr = kinds[key]

        def of(fs: Fs) -> str:
            return getattr(fs.part, attr) if attr.startswith("part") else getattr(fs, attr)

        fold = attr != "label" and attr != "partlabel"  # UUIDs are matched whatever their case
        hits = [fs for fs in filesystems if of(fs) and (of(fs).lower() == value.lower() if fold else of(fs) == value)]
        if len(hits) == 1:
            return hits[0], ""
        return None, f"{spec}: {'several' if hits else 'no'} file system{'s' if hits else ''} of this image"
    if lvs := [fs for fs in filesystems if fs.part.lv and spec in mapper_names(*fs.part.lv.split("/", 1))]:
        return lvs[0], ""
    if m := _KERNEL_NAME.fullmatch(spec):
        hits = [fs for fs in filesystems if fs.part.number == int(m.group(1)) and not fs.part.lv]
        if hits:
            return hits[0], f"{spec} taken as partition {m.group(1)} of this image (a kernel name, not an identifier)"
    return None, f"{spec}: not a name the check can tie to this image's file systems"


@dataclass(frozen=True)
class Mount:
    """A file system mounted for the check at target (a path of the image), with its options."""

    target: str
    fs: Fs
    subvol: str = ""


def subvol_of(options: list[str]) -> str:
    """The btrfs subvolume an fstab entry's options name ('' when none)."""
    for o in options:
        if o.startswith("subvol="):
            return o.split("=", 1)[1].strip("/")
    return ""


def root_spec(fstab: str) -> str:
    """The device fstab mounts on "/" ('' when none)."""
    return next((spec for spec, target, _, _ in fstab_entries(fstab) if target == "/"), "")


def root_subvol(fstab: str) -> str:
    """The btrfs subvolume fstab mounts on "/" ('' when none)."""
    for _, target, _, options in fstab_entries(fstab):
        if target == "/":
            return subvol_of(options)
    return ""


def extra_mounts(fstab: str, filesystems: list[Fs], root: Fs) -> tuple[list[Mount], list[str], list[str]]:
    """What fstab mounts on NEEDED targets (parents first), with notes and errors: a needed entry
    whose device is not in the image is an error, unless the boot does without it (noauto, nofail).
    """
    mounts, notes, errors = [], [], []
    entries = {target: (spec, fstype, options) for spec, target, fstype, options in fstab_entries(fstab)}
    for target in NEEDED:
        if target not in entries:
            continue
        spec, fstype, options = entries[target]
        fs, note = find(spec, filesystems)
        if fs is None:
            optional = "noauto" in options or "nofail" in options
            (notes if optional else errors).append(f"fstab's {target} ({note})")
            continue
        if note:
            notes.append(f"fstab's {target}: {note}")
        if fs.type not in MOUNTED_TYPES:
            errors.append(f"fstab's {target} is on a {fs.type or 'unknown'} file system, which the check cannot read")
            continue
        if fs == root and not subvol_of(options):
            errors.append(f"fstab's {target} names the root file system itself")
            continue
        mounts.append(Mount(target, fs, subvol_of(options) if fs.type == "btrfs" else ""))
    return mounts, notes, errors
