"""For the lab's disk images (issue 21, tests/test_lab_images.py): the formats they are converted to,
the ESP's id as fstab writes it, and the loop devices and mounts the image commands leave, if any.
The images themselves are the lab's boot disks (tests/lab/boot.py make_disk), converted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.lab import boot

ESP_UUID = f"{boot.ESP_ID[:4]}-{boot.ESP_ID[4:]}"  # how blkid and fstab write a FAT volume id
FORMATS = {"raw": [], "qcow2": [], "vmdk": ["-o", "subformat=streamOptimized"], "vpc": [], "vhdx": []}


def loop_devices() -> list[str]:
    """The loop devices the image commands made (backed by an image file or a session's export), with
    what backs them; other loop devices (the lab's, on another test worker) come and go."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"], capture_output=True,
                         text=True).stdout  # fmt: skip
    # A loop device whose file's mount namespace is gone shows "/" as its file: a session's, left behind.
    return sorted(ln for ln in out.splitlines()
                  if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln or ln.split()[1:] == ["/"])  # fmt: skip


def mounts() -> list[str]:
    """This mount namespace's mounts of image files or sessions (none: sessions mount in their own)."""
    lines = Path("/proc/mounts").read_text().splitlines()
    return sorted(" ".join(ln.split()[:2]) for ln in lines if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln)


FUSE = Path("/sys/fs/fuse/connections")


def qsd_running() -> bool:
    """Whether a qemu-storage-daemon runs on this machine (an image command's export)."""
    return subprocess.run(["pgrep", "-f", "^qemu-storage-daemon "], capture_output=True).returncode == 0


def stuck_exports() -> list[str]:
    """FUSE connections with requests waiting while no qemu-storage-daemon runs: an export that will never
    answer them (they hang every sync and blkid on this machine). Each found is aborted, so that the rest
    of the suite can go on, and returned."""
    if qsd_running():
        return []  # a live export may have requests waiting
    if FUSE.is_dir() and not any(FUSE.iterdir()):  # fusectl not mounted here yet
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSE)], capture_output=True)
    stuck = []
    for conn in FUSE.glob("*") if FUSE.is_dir() else []:
        try:
            if int((conn / "waiting").read_text()) > 0:
                (conn / "abort").write_text("1")
                stuck.append(conn.name)
        except (OSError, ValueError):
            continue  # gone meanwhile
    return stuck
