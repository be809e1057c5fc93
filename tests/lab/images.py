"""Disk images made from lab hosts' trees, as users hold them when they import one (issue 21): a
partitioned disk in one of qemu's formats, whose fstab names its file systems by UUID.

Layouts: whole (one ext4, no partition table), split (MBR, /boot its own ext4, as RHEL installs it),
gpt-esp (GPT, an EFI system partition on /boot/efi, then the root), btrfs (one btrfs, the tree in
subvolume @, as Ubuntu installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.lab import boot
from tests.lab.bases import BOOT_UUID, ROOT_UUID, run

MiB = boot.MiB
ROOT_SIZE = 4 << 30
BOOT_SIZE = 512 * MiB
ESP_SIZE = 64 * MiB
ESP_UUID = f"{boot.ESP_ID[:4]}-{boot.ESP_ID[4:]}"  # how blkid and fstab write a FAT volume id
GPT_ESP, GPT_LINUX = boot.GPT_ESP, boot.GPT_LINUX
FORMATS = {"raw": [], "qcow2": [], "vmdk": ["-o", "subformat=streamOptimized"], "vpc": [], "vhdx": []}


def make_image(tree: Path, out: Path, layout: str, fmt: str) -> Path:
    """out: the tree as a disk image of that layout and format (qemu-img convert from a raw disk)."""
    work = out.parent / f"{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.parent.mkdir(parents=True)
    run(["cp", "-a", "--reflink=auto", f"{tree}/.", f"{root}/"])
    raw = work / "disk.raw"
    fstab = [f"UUID={ROOT_UUID} / {'btrfs' if layout == 'btrfs' else 'ext4'} defaults"
             + (",subvol=@" if layout == "btrfs" else "") + " 0 1"]  # fmt: skip
    if layout == "whole":
        write_fstab(root, fstab)
        boot.mkfs_ext4(root, raw, 0, ROOT_SIZE, ROOT_UUID)
    elif layout == "split":
        bootfs = work / "boot"
        shutil.move(root / "boot", bootfs)
        (root / "boot").mkdir()
        write_fstab(root, [*fstab, f"UUID={BOOT_UUID} /boot ext4 defaults 0 2"])
        boot.mkfs_ext4(bootfs, raw, MiB, BOOT_SIZE, BOOT_UUID)
        boot.mkfs_ext4(root, raw, MiB + BOOT_SIZE, ROOT_SIZE, ROOT_UUID)
        boot.partition(raw, [(MiB, BOOT_SIZE, "83"), (MiB + BOOT_SIZE, ROOT_SIZE, "83")])
    elif layout == "gpt-esp":
        (root / "boot/efi").mkdir(exist_ok=True)
        write_fstab(root, [*fstab, f"UUID={ESP_UUID} /boot/efi vfat umask=0077 0 1"])
        boot.mkfs_ext4(root, raw, MiB + ESP_SIZE, ROOT_SIZE, ROOT_UUID)
        esp = work / "esp.img"
        boot.make_esp(esp, ESP_SIZE)
        run(["dd", f"if={esp}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"])
        run(["truncate", "-s", str(MiB + ESP_SIZE + ROOT_SIZE + MiB), str(raw)])  # room for the backup GPT
        boot.partition(raw, [(MiB, ESP_SIZE, GPT_ESP), (MiB + ESP_SIZE, ROOT_SIZE, GPT_LINUX)], label="gpt")
    elif layout == "btrfs":
        write_fstab(root, fstab)
        boot.make_btrfs(root, raw, ROOT_SIZE)
    else:
        raise ValueError(f"unknown image layout {layout!r}")
    out.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *FORMATS[fmt], str(raw), str(out)])
    shutil.rmtree(work)
    return out


def write_fstab(root: Path, lines: list[str]) -> None:
    head = "# /etc/fstab: made for a lab image (tests/lab/images.py)"
    (root / "etc/fstab").write_text("\n".join([head, *lines]) + "\n")


def loop_devices() -> list[str]:
    """The loop devices the image commands made (backed by an image file or a session's export), with
    what backs them; other loop devices (the lab's, on another test worker) come and go."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"], capture_output=True,
                         text=True).stdout  # fmt: skip
    return sorted(ln for ln in out.splitlines() if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln)


def mounts() -> list[str]:
    """This mount namespace's mounts of image files or sessions (none: sessions mount in their own)."""
    lines = Path("/proc/mounts").read_text().splitlines()
    return sorted(" ".join(ln.split()[:2]) for ln in lines if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln)
