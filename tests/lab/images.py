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
    return sorted(ln for ln in out.splitlines() if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln)


def mounts() -> list[str]:
    """This mount namespace's mounts of image files or sessions (none: sessions mount in their own)."""
    lines = Path("/proc/mounts").read_text().splitlines()
    return sorted(" ".join(ln.split()[:2]) for ln in lines if "/kvm-image." in ln or "/kvm-drivers-lab/images/" in ln)
