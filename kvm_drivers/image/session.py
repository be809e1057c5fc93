"""The privileged half of ``kvm-drivers image check``: run as root in mount and PID namespaces of its
own (``namespace_command``), it reaches the image's file systems read-only and prints gather.sh's
answer about them. Nothing inside the image is run: gather.sh runs here with KVM_ROOT, with this
machine's programs.

    python3 -m kvm_drivers.image.session DISK FORMAT DRIVER...

- A raw image is read through loop devices, one per file system, at its offset (no nbd module, no
  udev); another format through qemu-storage-daemon's read-only FUSE export of it as raw.
- Every mount is read-only (loop devices too), without journal replay; mount points are resolved
  inside the image's root (kvm_drivers.image.paths), never through one of its links.
- Teardown is the kernel's: the namespaces die with this process, whatever ends it, and with them
  the mounts, the FUSE export and (autoclear) the loop devices.

stdout: the gather's answer. stderr: "note: ..." lines (said in the row as warnings), and on failure
a last line saying why. Exit 0, or 3 when the image cannot be checked (the cause on stderr).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kvm_drivers.facts.kvm_drivers import gather_command
from kvm_drivers.image import layout
from kvm_drivers.image.paths import OutsideRoot, directory_inside, inside

FAILED = 3
# Read-only, and no journal replay (a dirty journal would otherwise be written back through the loop).
MOUNT_OPTIONS = {"ext4": "ro,noload", "ext3": "ro,noload", "ext2": "ro", "xfs": "ro,norecovery", "btrfs": "ro",
                 "vfat": "ro"}  # fmt: skip
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class ImageError(Exception):
    """The image cannot be checked: the message says why."""


def run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess:
    """Run cmd with a clean environment; ImageError with its message when it fails (check)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if check and proc.returncode != 0:
        raise ImageError(f"{cmd[0]} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc


def namespace_command(disk: str, fmt: str, drivers: list[str]) -> list[str]:
    """The command that runs this module for one image in namespaces that die with it."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            sys.executable, "-m", "kvm_drivers.image.session", disk, fmt, *drivers]  # fmt: skip


def export_raw(disk: str, fmt: str, work: Path) -> str:
    """A path whose bytes are the image's disk: the file itself when raw, else a read-only FUSE export."""
    if fmt == "raw":
        return disk
    raw = work / "disk.raw"
    raw.touch(mode=0o600)
    nodes = [{"driver": "file", "node-name": "file", "filename": disk, "read-only": True},
             {"driver": fmt, "node-name": "disk", "file": "file", "read-only": True}]  # fmt: skip
    if fmt == "qcow2":
        nodes[1]["backing"] = None  # never open a backing file the image names
    cmd = ["qemu-storage-daemon"]
    for node in nodes:
        cmd += ["--blockdev", json.dumps(node)]
    cmd += ["--export", f"type=fuse,id=disk,node-name=disk,mountpoint={raw},writable=off",
            "--daemonize", "--pidfile", str(work / "qsd.pid")]  # fmt: skip
    run(cmd)
    return str(raw)


def mount(raw: str, fs: layout.Fs, target: str, subvol: str = "") -> None:
    """Mount fs of the disk raw read-only at target, through an autoclear read-only loop device."""
    options = f"{MOUNT_OPTIONS[fs.type]},loop,offset={fs.part.offset},sizelimit={fs.part.size}"
    if subvol:
        options += f",subvol={subvol}"
    run(["mount", "-t", fs.type, "-o", options, "--", raw, target])


def filesystems(raw: str) -> tuple[list[layout.Fs], list[str]]:
    """The file systems of the disk (and the partitions' problems). An unsupported kind is an error."""
    size = os.stat(raw).st_size
    table = run(["sfdisk", "--json", raw], check=False)
    if table.returncode != 0 and "does not contain a recognized partition table" not in table.stderr:
        raise ImageError(f"sfdisk cannot read the partition table: {table.stderr.strip()[-200:]}")
    parts, problems = layout.partitions(table.stdout if table.returncode == 0 else "", size)
    found = []
    for part in parts:
        probe = run(["blkid", "-p", "-o", "export", "-O", str(part.offset), "-S", str(part.size), raw], check=False)
        fields = layout.blkid_fields(probe.stdout)
        kind = fields.get("TYPE", "")
        if kind in layout.UNSUPPORTED:
            raise ImageError(f"partition {part.number} is {layout.UNSUPPORTED[kind]}")
        if kind:
            found.append(layout.Fs(part, kind, fields.get("UUID", ""), fields.get("LABEL", "")))
    return found, problems


def is_root(root: str) -> bool:
    """Whether a mounted file system is an operating system's "/" (an fstab and a release file)."""
    try:
        fstab = inside(root, "/etc/fstab")
        release = [inside(root, p) for p in ("/etc/os-release", "/usr/lib/os-release", "/etc/SuSE-release",
                                              "/etc/redhat-release", "/etc/debian_version")]  # fmt: skip
    except OutsideRoot:
        return False
    return os.path.isfile(fstab) and any(os.path.isfile(p) for p in release)


def mount_root(raw: str, found: list[layout.Fs], root: str) -> tuple[layout.Fs, str]:
    """Mount the image's "/" at root: the one file system (or btrfs subvolume) that is an OS root."""
    hits: list[tuple[layout.Fs, str]] = []
    for fs in found:
        if fs.type not in layout.ROOT_TYPES:
            continue
        mount(raw, fs, root)
        try:
            if is_root(root):
                hits.append((fs, ""))
            elif fs.type == "btrfs":  # "/" in a subvolume (@, @rootfs...): top-level directories that are roots
                for name in sorted(os.listdir(root)):
                    if os.path.isdir(os.path.join(root, name)) and not os.path.islink(os.path.join(root, name)) \
                            and is_root(os.path.join(root, name)):  # fmt: skip
                        hits.append((fs, name))
        finally:
            run(["umount", root])
    if not hits:
        raise ImageError("no file system of this image is an operating system's root (/etc/fstab and a release file)")
    if len(hits) > 1:
        where = ", ".join(f"partition {fs.part.number}" + (f" subvolume {sub}" if sub else "") for fs, sub in hits)
        raise ImageError(f"several operating system roots in this image ({where}): not supported")
    fs, sub = hits[0]
    mount(raw, fs, root, sub)
    if fs.type == "btrfs":  # fstab's own word on the subvolume, if it says another one
        wanted = layout.root_subvol(Path(inside(root, "/etc/fstab")).read_text(errors="replace"))
        if wanted and wanted != sub:
            run(["umount", root])
            mount(raw, fs, root, wanted)
            sub = wanted
    return fs, sub


def check(disk: str, fmt: str, drivers: list[str]) -> int:
    """Mount the image's system read-only and print the gather's answer about it."""
    work = Path(tempfile.mkdtemp(prefix="kvm-image.", dir="/run"))  # root's own (0700), in this namespace
    root = work / "root"
    root.mkdir()
    raw = export_raw(disk, fmt, work)
    found, problems = filesystems(raw)
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    fs, sub = mount_root(raw, found, str(root))
    print(f"note: root file system: partition {fs.part.number} ({fs.type}"
          + (f", subvolume {sub}" if sub else "") + ")", file=sys.stderr)  # fmt: skip
    fstab = Path(inside(str(root), "/etc/fstab")).read_text(errors="replace")
    mounts, notes, errors = layout.extra_mounts(fstab, found, fs)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if errors:
        raise ImageError("; ".join(errors))
    for m in mounts:
        try:
            target = directory_inside(str(root), m.target)
        except OutsideRoot as exc:
            raise ImageError(f"fstab's {m.target} cannot be mounted: {exc}") from None
        mount(raw, m.fs, target, m.subvol)
    answer = subprocess.run(["sh", "-c", gather_command(drivers, root=str(root)).get_raw_value()], env=ENV,
                            capture_output=True)  # fmt: skip
    sys.stdout.buffer.write(answer.stdout)
    if answer.returncode != 0:
        said = answer.stderr.decode(errors="replace")[-300:]
        raise ImageError(f"the gather failed (exit {answer.returncode}): {said}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (in the namespaces): 0, 2 usage, 3 the image cannot be checked (why on stderr)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print("usage: python3 -m kvm_drivers.image.session DISK FORMAT DRIVER...", file=sys.stderr)
        return 2
    try:
        return check(args[0], args[1], args[2:])
    except (ImageError, OutsideRoot, OSError, ValueError, KeyError) as exc:
        print(f"{exc}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
