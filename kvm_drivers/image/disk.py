"""An image file as ``qemu-img info`` describes it, refused unless every byte qemu would read is in
that one file: no backing file, no external data file, no VMDK extent elsewhere (each could name any
file or device of the control machine), and a format from FORMATS.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import struct
import subprocess
from dataclasses import dataclass

FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx")  # vpc: qemu's name for VHD
ONE_FILE_VMDK = ("monolithicSparse", "streamOptimized")


class DiskError(Exception):
    """The image file cannot be used: the message says why."""


@dataclass(frozen=True)
class Disk:
    """An image file qemu can read as one self-contained disk."""

    path: str  # absolute
    format: str
    virtual_size: int
    backing: str = ""  # an overlay's backing file (allowed by the caller), and its format
    backing_format: str = ""
    subformat: str = ""  # a VMDK's create-type

    def in_place_problem(self) -> str:
        """Why this image cannot be rewritten in place ('' when it can)."""
        if self.subformat == "streamOptimized":
            return ("a streamOptimized VMDK can only be written start to end (qemu refuses to rewrite its "
                    "clusters): fix it into --output, then convert that to streamOptimized")
        return ""


def problems(info: dict, path: str, backing: str = "") -> list[str]:
    """Why qemu-img's description of path is refused (pure; empty when it is one self-contained file,
    or a qcow2 overlay whose backing file is backing, the one the caller made it with).
    """
    out = []
    fmt = info.get("format", "")
    if fmt not in FORMATS:
        out.append(f"format {fmt or 'unknown'!r} is not one of {', '.join(FORMATS)}")
    named = info.get("full-backing-filename") or info.get("backing-filename") or ""
    if named and not (backing and fmt == "qcow2" and named == backing):
        out.append(f"it has a backing file ({named!r:.200}): check a flattened copy (qemu-img convert), "
                   "or allow it with --backing")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        out.append(f"it has an external data file ({data['data-file']!r:.200})")
    if fmt == "vmdk":
        if data.get("create-type") not in ONE_FILE_VMDK:
            out.append(f"VMDK type {data.get('create-type')!r} keeps its data in other files: "
                       f"only {' and '.join(ONE_FILE_VMDK)} are read")  # fmt: skip
        for extent in data.get("extents", []):
            if os.path.realpath(extent.get("filename", "")) != os.path.realpath(path):
                out.append(f"a VMDK extent is another file ({extent.get('filename')!r:.200})")
    return out


F_OFD_GETLK = 36  # Linux <fcntl.h>; Python's fcntl does not name it
QEMU_WRITE_LOCK = 101  # QEMU's image locking: byte 100 + the permission's bit (write: bit 1), read-locked by a writer


def writer(path: str) -> bool:
    """Whether a QEMU process (a running VM, qemu-img, a storage daemon) holds path for writing, by
    QEMU's own image locks (open file description locks): asked, never taken.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, QEMU_WRITE_LOCK, 1, 0)
        return struct.unpack("hhqqi4x", fcntl.fcntl(fd, F_OFD_GETLK, query))[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def open_disk(path: str, timeout: float = 60, backing: str = "") -> Disk:
    """The image at path, described and checked; DiskError when it cannot be used as it is. An image
    a QEMU process writes (qemu's lock: a running VM) is refused: what it holds is changing.
    backing: the one backing file allowed (an overlay kvm-drivers wrote over it; it is checked too).
    """
    real = os.path.abspath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise DiskError(f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DiskError("is not a regular file")
    proc = subprocess.run(["qemu-img", "info", "--output=json", "--", real], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        if "lock" in why[0]:
            raise DiskError(f"is in use by another process (qemu's image lock): {why[0][:200]}")
        raise DiskError(f"qemu-img cannot read it: {why[0][:200]}")
    if writer(real):
        raise DiskError("is in use: a QEMU process holds it for writing (a running VM?): stop it, or check a copy")
    info = json.loads(proc.stdout)
    refused = problems(info, real, backing)
    if refused:
        raise DiskError("; ".join(refused))
    base = open_disk(backing, timeout) if backing else None
    subformat = ((info.get("format-specific") or {}).get("data") or {}).get("create-type", "")
    return Disk(real, info["format"], int(info.get("virtual-size", 0)), base.path if base else "",
                base.format if base else "", subformat)  # fmt: skip
