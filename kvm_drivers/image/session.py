"""The privileged half of the image commands: run as root in mount and PID namespaces of its own
(``namespace_command``), it reaches an image's file systems and mounts the system it holds.

    python3 -m kvm_drivers.image.session check DISK FORMAT [--backing BACKING BACKING_FORMAT] DRIVER...
    python3 -m kvm_drivers.image.session serve DISK FORMAT [BACKING BACKING_FORMAT]
    python3 -m kvm_drivers.image.session list|copy-out|save ...  (image fix --in-place: inplace.py)

check: read-only; prints gather.sh's answer about the image (gather.sh runs here with KVM_ROOT, with
this machine's programs: nothing inside the image is run). serve: read-write (DISK is the copy or
overlay ``kvm-drivers image fix`` writes; BACKING the original under an overlay, opened read-only);
prints "ready PID ROOT" (PID: this process, for nsenter), then holds the mounts until stdin says
"close" (unmounts, flushes, prints "closed") or ends (the same, exit 1: the caller went away).

- A raw image is read through loop devices, one per file system, at its offset (no nbd module, no
  udev); another format through qemu-storage-daemon's FUSE export of it as raw.
- Mount points are resolved inside the image's root (kvm_drivers.image.paths), never through one
  of its links. check mounts read-only (loop devices too), without journal replay.
- Teardown is the kernel's when nothing else runs: the namespaces die with this process, whatever
  ends it, and with them the mounts, the export and (autoclear) the loop devices.

stderr: "note: ..." lines (said in the row as warnings), and on failure a last line saying why.
Exit 0, or 3 when the image cannot be used (the cause on stderr).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvm_drivers.image import inplace, layout, lvm
from kvm_drivers.image.paths import OutsideRoot, directory_inside, inside

FAILED = 3
# check: read-only, and no journal replay (a dirty journal would otherwise be written back). Every
# mount: the image's device nodes and set-id files mean nothing here (nodev, nosuid), and an ext file
# system's own "panic on error" setting is overridden (errors=remount-ro).
READ_ONLY = {"ext4": "ro,noload", "ext3": "ro,noload", "ext2": "ro", "xfs": "ro,norecovery",
             "btrfs": "ro,rescue=nologreplay", "vfat": "ro"}  # fmt: skip
EXT = ("ext2", "ext3", "ext4")
FAT_COPY_MAX = 1 << 30  # the most RAM a FAT copy may take (an ESP is tens of MiB)
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class ImageError(Exception):
    """The image cannot be used: the message says why."""


def run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess:
    """Run cmd with a clean environment; ImageError with its message when it fails (check)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if check and proc.returncode != 0:
        said = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and "dmesg(1)" not in ln]
        raise ImageError(f"{cmd[0]} failed: {' '.join(said)[-300:]}")
    return proc


def kernel_reads(fstype: str) -> bool:
    """Whether this machine's kernel has the file system built in or loaded (/proc/filesystems)."""
    return any(line.split()[-1:] == [fstype] for line in Path("/proc/filesystems").read_text().splitlines())


def namespace_command(action: str, *args: str) -> list[str]:
    """The command that runs this module in namespaces that die with it."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            sys.executable, "-m", "kvm_drivers.image.session", action, *args]  # fmt: skip


def session_env() -> dict[str, str]:
    """The environment namespace_command runs in: ENV, and kvm_drivers importable from where it is now."""
    import kvm_drivers

    home = str(Path(kvm_drivers.__file__).resolve().parent.parent)
    return {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))}


def note(text: str) -> None:
    """Say something the row shows as a warning."""
    print(f"note: {text}", file=sys.stderr, flush=True)


class Opened:
    """The image's system mounted at ``root`` in this namespace (read-only unless writable)."""

    def __init__(self, disk: str, fmt: str, writable: bool = False, backing: str = "", backing_fmt: str = "") -> None:
        self.disk, self.fmt, self.writable = disk, fmt, writable
        self.backing, self.backing_fmt = backing, backing_fmt
        # A tmpfs of this namespace's own over /run: the work directory is seen nowhere else and
        # vanishes with the namespace, whatever ends it.
        run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m,nodev,nosuid", "kvm-image", "/run"])
        self.work = Path(tempfile.mkdtemp(prefix="kvm-image.", dir="/run"))  # root's own (0700)
        self.root = str(self.work / "root")
        os.mkdir(self.root)
        self.mounted: list[str] = []
        self.copies: list[str] = []  # mount points (relative to root) holding a copy (_fat_copy)
        self.qsd = 0
        self.raw = self._export()
        found, problems = self._filesystems()
        for p in problems:
            note(p)
        fs, sub = self._mount_root(found)
        note(f"root file system: {fs.part.name} ({fs.type}" + (f", subvolume {sub}" if sub else "") + ")")
        fstab = Path(inside(self.root, "/etc/fstab")).read_text(errors="replace")
        mounts, notes, errors = layout.extra_mounts(fstab, found, fs)
        for n in notes:
            note(n)
        if errors:
            raise ImageError("; ".join(errors))
        for m in mounts:
            try:
                target = directory_inside(self.root, m.target)
            except OutsideRoot as exc:
                raise ImageError(f"fstab's {m.target} cannot be mounted: {exc}") from None
            self._mount(m.fs, target, m.subvol)

    def _export(self) -> str:
        """A path whose bytes are the disk: the file itself when raw (and no overlay), else a FUSE export."""
        if self.fmt == "raw" and not self.backing:
            return self.disk
        # The export runs in a mount namespace of its own, which shares only this directory with ours.
        # Were it in ours, a SIGKILL could leave it the last process there: its exit would then unmount
        # the image's file systems, whose flush waits on the export it is, for ever (a hung machine:
        # every sync, every blkid). Apart, it holds none of them: its death aborts the FUSE connection,
        # and our file systems' teardown fails fast instead.
        shared = self.work / "export"
        shared.mkdir(mode=0o700)
        run(["mount", "--bind", str(shared), str(shared)])
        run(["mount", "--make-shared", str(shared)])
        raw = shared / "disk.raw"
        raw.touch(mode=0o600)
        rw = self.writable
        node: dict = {"driver": self.fmt, "node-name": "disk", "read-only": not rw,
                      "file": {"driver": "file", "filename": self.disk, "read-only": not rw}}  # fmt: skip
        if self.fmt == "qcow2":  # never a backing file the image names: ours (read-only) or none
            node["backing"] = None
            if self.backing:
                node["backing"] = {"driver": self.backing_fmt, "read-only": True,
                                   "file": {"driver": "file", "filename": self.backing, "read-only": True}}  # fmt: skip
        pidfile = self.work / "qsd.pid"
        run(["unshare", "--mount", "--propagation", "unchanged", "--", "qemu-storage-daemon",
             "--blockdev", json.dumps(node), "--export",
             f"type=fuse,id=disk,node-name=disk,mountpoint={raw},writable={'on' if rw else 'off'}",
             "--daemonize", "--pidfile", str(pidfile)])  # fmt: skip
        self.qsd = int(pidfile.read_text())
        return str(raw)

    def _mount(self, fs: layout.Fs, target: str, subvol: str = "") -> None:
        """Mount fs at target through an autoclear loop device (read-only unless writable)."""
        if fs.type == "vfat" and not kernel_reads("vfat") and run(["modprobe", "vfat"], check=False).returncode:
            self._fat_copy(fs, target)
            return
        if subvol and not layout.plain_subvol(subvol):
            raise ImageError(f"btrfs subvolume name {subvol!r:.80} is not a plain name: refused")
        options = ("rw" if self.writable else READ_ONLY[fs.type]) + ",nodev,nosuid"
        options += ",errors=remount-ro" if fs.type in EXT else ""
        options += f",loop,offset={fs.part.offset},sizelimit={fs.part.size}" + (f",subvol={subvol}" if subvol else "")
        run(["mount", "-t", fs.type, "-o", options, "--", self.raw, target])
        self.mounted.append(target)

    def _fat_copy(self, fs: layout.Fs, target: str) -> None:
        """A FAT file system (an ESP) this kernel cannot mount: a read-only copy of its files, read with
        mtools, at target. Said as a note; a change the deploy tries there fails (never lost silently).
        """
        size = min(fs.part.size, FAT_COPY_MAX)
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755,nodev,nosuid,noexec", "kvm-esp", target])
        self.mounted.append(target)
        copy = run(["mcopy", "-s", "-p", "-n", "-i", f"{self.raw}@@{fs.part.offset}", "::*", target + "/"], check=False)
        if copy.returncode != 0 and "not found" not in copy.stderr:  # (an empty FAT: nothing matches "*")
            raise ImageError(f"{fs.part.name} (vfat) cannot be read: {copy.stderr.strip()[-300:]}")
        run(["mount", "-o", "remount,ro", target])
        self.copies.append(os.path.relpath(target, self.root))
        note(f"{fs.part.name} (vfat): this kernel cannot mount FAT; its files are a read-only copy "
             "(read with mtools): changes to it are refused")  # fmt: skip

    def _umount(self, target: str) -> None:
        run(["umount", target])
        self.mounted.remove(target)

    def _filesystems(self) -> tuple[list[layout.Fs], list[str]]:
        """The disk's file systems (and its partitions' problems). An unsupported kind is an error."""
        size = os.stat(self.raw).st_size
        table = run(["sfdisk", "--json", self.raw], check=False)
        if table.returncode != 0 and "does not contain a recognized partition table" not in table.stderr:
            raise ImageError(f"sfdisk cannot read the partition table: {table.stderr.strip()[-200:]}")
        parts, problems = layout.partitions(table.stdout if table.returncode == 0 else "", size)
        if crossed := layout.overlaps(parts):  # one file system's blocks would be another's, both mounted
            raise ImageError(f"{crossed}: refused")
        found = []
        todo = list(parts)
        while todo:
            part = todo.pop(0)
            probe = run(["blkid", "-p", "-o", "export", "-O", str(part.offset), "-S", str(part.size), self.raw],
                        check=False)  # fmt: skip
            fields = layout.blkid_fields(probe.stdout)
            kind = fields.get("TYPE", "")
            if kind == "LVM2_member" and not part.lv:
                volumes, skipped = self._lvm(part)
                problems += skipped
                todo += volumes
            elif kind in layout.UNSUPPORTED or kind == "LVM2_member":
                raise ImageError(f"{part.name} is {layout.UNSUPPORTED.get(kind, 'an LVM physical volume')}")
            elif kind:
                found.append(layout.Fs(part, kind, fields.get("UUID", ""), fields.get("LABEL", "")))
        return found, problems

    def _lvm(self, part: layout.Part) -> tuple[list[layout.Part], list[str]]:
        """The LVM volumes of the physical volume on part that are plain runs of its bytes, and what is
        not read (kvm_drivers.image.lvm: no device-mapper is needed, or used).
        """
        why = "no metadata area"
        volumes: list[lvm.Volume] = []
        skipped: list[str] = []
        with open(self.raw, "rb") as disk:
            try:
                uuid, areas = lvm.label(os.pread(disk.fileno(), lvm.LABEL_BYTES, part.offset))
            except (lvm.LvmError, ValueError, struct.error) as exc:
                raise ImageError(f"{part.name} is an LVM physical volume that cannot be read: {exc}") from None
            for start, size in areas:
                if start + size > part.size:
                    why = "its metadata area is not inside it"
                    continue
                try:
                    area = os.pread(disk.fileno(), min(size, lvm.AREA_MAX), part.offset + start)
                    volumes, skipped = lvm.volumes(uuid, lvm.parse(lvm.metadata_text(area)), part.size)
                    break
                except lvm.LvmError as exc:
                    why = str(exc)
                except Exception as exc:  # noqa: BLE001 - crafted metadata is an error that says so, never a crash
                    why = f"its metadata is malformed ({type(exc).__name__})"
            else:
                raise ImageError(f"{part.name} is an LVM physical volume that cannot be read: {why}")
        parts = [layout.Part(part.number, part.offset + v.offset, v.size, lv=f"{v.vg}/{v.lv}") for v in volumes]
        if crossed := layout.overlaps(parts):
            raise ImageError(f"{crossed}: refused")
        return parts, skipped

    def _mount_root(self, found: list[layout.Fs]) -> tuple[layout.Fs, str]:
        """Mount the image's "/" at root: the one file system (or btrfs subvolume) that is an OS root."""
        hits: list[tuple[layout.Fs, str]] = []
        for fs in found:
            if fs.type not in layout.ROOT_TYPES:
                continue
            self._mount(fs, self.root)
            try:
                if is_root(self.root):
                    hits.append((fs, ""))
                elif fs.type == "btrfs":  # "/" in a subvolume (@, @rootfs...): top-level directories that are roots
                    for name in sorted(os.listdir(self.root)):
                        path = os.path.join(self.root, name)
                        if layout.plain_subvol(name) and os.path.isdir(path) and not os.path.islink(path) \
                                and is_root(path):  # fmt: skip
                            hits.append((fs, name))
            finally:
                self._umount(self.root)
        if not hits:
            raise ImageError("no file system of this image is an operating system's root "
                             "(/etc/fstab and a release file)")
        if len(hits) > 1:
            where = ", ".join(fs.part.name + (f" subvolume {sub}" if sub else "") for fs, sub in hits)
            raise ImageError(f"several operating system roots in this image ({where}): not supported")
        fs, sub = hits[0]
        self._mount(fs, self.root, sub)
        if fs.type == "btrfs":  # fstab's own word on the subvolume, if it says another one
            wanted = layout.root_subvol(Path(inside(self.root, "/etc/fstab")).read_text(errors="replace"))
            if wanted and wanted != sub:
                self._umount(self.root)
                self._mount(fs, self.root, wanted)
                sub = wanted
                if not is_root(self.root):
                    raise ImageError(f"fstab's / names btrfs subvolume {wanted}, which holds no system")
        spec = layout.root_spec(Path(inside(self.root, "/etc/fstab")).read_text(errors="replace"))
        named, why = layout.find(spec, found) if spec else (None, "fstab has no / entry")
        if named is not None and named.part != fs.part:
            raise ImageError(f"fstab's / ({spec}) is {named.part.name}, not {fs.part.name} that holds this fstab: "
                             "refused")  # fmt: skip
        if named is None:
            note(f"fstab's / is not tied to a file system of this image ({why}): the one holding it is taken")
        return fs, sub

    def close(self) -> None:
        """Unmount everything, each file system flushed first (a write error is an ImageError, never a
        half-written output taken as done), then stop the export: it flushes the image as it exits.
        """
        for target in reversed(list(self.mounted)):
            if self.writable:
                run(["sync", "-f", target])  # syncfs: its status says whether the data reached the image
            self._umount(target)
        if self.qsd:
            os.kill(self.qsd, signal.SIGTERM)
            for _ in range(600):  # detached, it is this process's child (PID 1 of the namespace)
                try:
                    pid, status = os.waitpid(self.qsd, os.WNOHANG)
                except ChildProcessError:
                    raise ImageError("qemu-storage-daemon's exit status is unknown") from None
                if pid:
                    break
                time.sleep(0.05)
            else:
                raise ImageError("qemu-storage-daemon did not stop within 30 s")
            self.qsd = 0
            if os.waitstatus_to_exitcode(status) != 0:
                raise ImageError(f"qemu-storage-daemon failed as it flushed the image ({status})")
            run(["umount", "--recursive", str(self.work / "export")])
        shutil.rmtree(self.work, ignore_errors=True)


def is_root(root: str) -> bool:
    """Whether a mounted file system is an operating system's "/" (an fstab and a release file)."""
    try:
        fstab = inside(root, "/etc/fstab")
        release = [inside(root, p) for p in ("/etc/os-release", "/usr/lib/os-release", "/etc/SuSE-release",
                                              "/etc/redhat-release", "/etc/debian_version")]  # fmt: skip
    except OutsideRoot:
        return False
    return os.path.isfile(fstab) and any(os.path.isfile(p) for p in release)


def gather(root: str, drivers: list[str]) -> bytes:
    """gather.sh's answer about the system at root (this machine's sh and tools, KVM_ROOT=root)."""
    from kvm_drivers.facts.kvm_drivers import gather_command

    answer = subprocess.run(["sh", "-c", gather_command(drivers, root=root).get_raw_value()], env=ENV,
                            capture_output=True)  # fmt: skip
    if answer.returncode != 0:
        said = answer.stderr.decode(errors="replace")[-300:]
        raise ImageError(f"the gather failed (exit {answer.returncode}): {said}")
    return answer.stdout


def outer_pid() -> int:
    """The PID of this process as the control machine sees it (NSpid's first field)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[1])
    return os.getpid()


def serve(image: Opened) -> int:
    """Hold the mounts for the caller until it says "close" (0) or goes away (1)."""
    print(f"ready {outer_pid()} {image.root}", flush=True)
    said = sys.stdin.readline().strip()
    image.close()
    print("closed", flush=True)
    return 0 if said == "close" else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point (in the namespaces): 0, 1 serve's caller went away, 2 usage, 3 the image cannot be used."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) >= 4 and args[0] == "check":
            backing = args[4:6] if args[3] == "--backing" and len(args) >= 7 else ["", ""]
            image = Opened(args[1], args[2], backing=backing[0], backing_fmt=backing[1])
            sys.stdout.buffer.write(gather(image.root, args[6:] if backing[0] else args[3:]))
            image.close()
            return 0
        if args[:1] == ["list"] and len(args) in (3, 5):  # every path of the tree (inplace.listing), JSON
            image = Opened(args[1], args[2], backing=(args[3:4] or [""])[0], backing_fmt=(args[4:5] or [""])[0])
            print(inplace.dumps(inplace.listing(image.root, tuple(image.copies))))
            image.close()
            return 0
        if args[:1] == ["copy-out"] and len(args) == 4:  # stdin: the paths (JSON) to copy to DEST
            image = Opened(args[1], args[2])
            inplace.copy_out(image.root, json.loads(sys.stdin.read()), args[3])
            image.close()
            return 0
        if args[:1] == ["save"] and len(args) == 7:  # OVERLAY FMT BACKING FMT SRC STAMP; stdin: the changes
            image = Opened(args[1], args[2], writable=True, backing=args[3], backing_fmt=args[4])
            print(inplace.save(image.root, args[5], args[6], json.loads(sys.stdin.read())))
            image.close()
            return 0
        if len(args) in (3, 5) and args[0] == "serve":
            return serve(Opened(args[1], args[2], writable=True, backing=(args[3:4] or [""])[0],
                                backing_fmt=(args[4:5] or [""])[0]))  # fmt: skip
    except (ImageError, OutsideRoot, OSError, ValueError, KeyError) as exc:
        print(f"{exc}", file=sys.stderr)
        return FAILED
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
