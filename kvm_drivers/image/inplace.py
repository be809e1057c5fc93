"""``kvm-drivers image fix --in-place``: the input itself is changed, and only once the change is proven.

The fix is made as for ``--output``, into a qcow2 overlay over the input beside it. Then:
1. every file of the overlay's tree and of the input's is listed (kind, owner, mode, size, times,
   link target), each in a session of its own, read-only; what differs is what the fix changed;
2. the input's copy of each changed or removed file goes into the overlay's tree, under
   ``BACKUP_DIR/STAMP/`` with a ``MANIFEST`` naming every changed, created and removed path;
3. ``qemu-img commit`` writes the overlay's clusters into the input (QEMU's write lock: a VM that
   started on it meanwhile makes this fail) and the overlay is removed.

The input is refused up front while anything holds it: a process with it open (a VM, a copy under
way) or a loop device on it, besides QEMU's own image locks (``disk.writer``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from kvm_drivers.facts.boot_path import fstab_entries
from kvm_drivers.image.paths import inside

BACKUP_DIR = "/var/lib/kvm-drivers/image-backup"  # in the image; one directory per in-place fix
Entry = list  # [kind, mode, uid, gid, size, mtime_ns, ctime_ns or None, link target]


def holders(path: str) -> list[str]:
    """Who holds the file at path open: "PID (COMMAND)" per process, "/dev/loopN" per loop device on it."""
    st = os.stat(path)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    held = os.stat(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    found.append(f"process {pid} ({comm})")
                    break
        except OSError:  # gone, or not ours to read
            continue
    for loop in Path("/sys/block").glob("loop*"):
        try:
            backing = os.stat((loop / "loop/backing_file").read_text().strip())
            if (backing.st_dev, backing.st_ino) == (st.st_dev, st.st_ino):
                found.append(f"/dev/{loop.name}")
        except OSError:
            continue
    return found


def unchanged_key(path: str) -> tuple:
    """What says the file at path is still the one it was: device, inode, size, mtime, ctime."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def listing(root: str, copies: tuple[str, ...] = ()) -> dict[str, Entry]:
    """Every path of the tree at root, relative, never following a link. Under copies (mount points
    that hold a copy made for this session, whose times of change are the copy's) no ctime is kept.
    """
    out: dict[str, Entry] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                if "/" in e.name or "\0" in e.name:  # no file system of Linux 5.4+ lets one in; said if one did
                    raise OSError(f"a directory entry of the image is named {e.name!r:.80}: refused")
                path = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                kind = stat.S_IFMT(st.st_mode)
                copied = any(path == c or path.startswith(c + "/") for c in copies)
                out[path] = [kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size if kind != stat.S_IFDIR
                             else 0, st.st_mtime_ns if kind != stat.S_IFDIR else 0, None if copied or
                             kind == stat.S_IFDIR else st.st_ctime_ns, os.readlink(e.path) if e.is_symlink() else ""]
                if kind == stat.S_IFDIR:
                    todo.append(path)
    return out


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> dict[str, list[str]]:
    """What turned before into after: "changed" (a path in both, different), "created", "removed";
    directories count only when created or removed.
    """
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p]
                     and not (before[p][0] == after[p][0] == stat.S_IFDIR and before[p][1:4] == after[p][1:4]))
    return {"changed": changed, "created": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys())}


def copy_out(root: str, paths: list[str], dest: str) -> None:
    """Copy each path (regular files and links; relative, no link in them: from ``listing``) of the
    read-only tree at root into dest, keeping modes and times.
    """
    for rel in paths:
        src, dst = os.path.join(root, rel), os.path.join(dest, "files", rel)
        st = os.lstat(src)
        os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f, open(dst, "xb") as g:
                shutil.copyfileobj(f, g, 1 << 20)
        else:
            continue  # a FIFO, socket or device node: named in the MANIFEST, not kept
        keep_attrs(dst, st)


def keep_attrs(path: str, st: os.stat_result) -> None:
    """Give path (a copy, never followed) the owner, mode (set-id bits too) and times of st."""
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_size(before: dict[str, Entry], paths: list[str]) -> int:
    """The bytes copy_out will write for paths (their sizes as listed: a sparse file counts whole)."""
    return sum(before[p][4] for p in paths if before[p][0] == stat.S_IFREG)


def line(key: str, path: str) -> str:
    """A MANIFEST line: the path as it is when printable, else quoted with escapes (a name holding a
    newline must not write a line of its own).
    """
    name = "/" + path
    return f"{key} {name if name.isprintable() and name.strip() == name else json.dumps(name)}\n"


def hidden_by(fstab: str) -> str:
    """The fstab mount point that would hide BACKUP_DIR at boot ('' when none): sessions mount only
    what the check needs, so a /var of its own is not where the backups would be written.
    """
    for _, target, _, _ in fstab_entries(fstab):
        if target != "/" and (BACKUP_DIR + "/").startswith(target.rstrip("/") + "/"):
            return target
    return ""


def save(root: str, src: str, stamp: str, what: dict[str, list[str]]) -> str:
    """Put the copies in src (copy_out's) and a MANIFEST into the image at root under BACKUP_DIR/stamp,
    every path resolved inside the image. Returns that directory, as the image names it.
    """
    path = inside(root, "/etc/fstab")  # (no link left in it; a FIFO there is not read)
    fstab = Path(path).read_text(errors="replace") if os.path.isfile(path) else ""
    if hiding := hidden_by(fstab):
        raise OSError(f"fstab mounts {hiding} from a file system of its own: the backups under {BACKUP_DIR} "
                      "would be hidden at boot: not done")  # fmt: skip
    target = f"{BACKUP_DIR}/{stamp}"
    made = ""
    for part in target.strip("/").split("/"):
        made += "/" + part
        real = inside(root, made)
        if made == target:
            os.mkdir(real, 0o700)  # its own: one that exists already (planted) is an error
        elif not os.path.lexists(real):
            os.mkdir(real, 0o700)
        elif not stat.S_ISDIR(os.lstat(real).st_mode):
            raise OSError(f"{made} in the image is not a directory")
    base = inside(root, target)
    _put(os.path.join(src, "files"), base)
    with open(os.path.join(base, "MANIFEST"), "x", encoding="utf-8", errors="surrogateescape") as f:
        f.write("# kvm-drivers image fix --in-place: what it changed in this image; the files it changed or\n"
                "# removed are kept here as they were, under their own paths (not FIFOs, sockets, devices)\n")
        for key in ("changed", "created", "removed"):
            f.writelines(line(key, p) for p in what[key])
    return target


def _put(src: str, dest: str) -> None:
    """Copy the tree at src (copy_out's, on this machine) into dest, a new directory of the image (links
    copied as links, never followed; every name created afresh).
    """
    if not os.path.isdir(src):
        return
    with os.scandir(src) as it:
        for e in it:
            s, d = e.path, os.path.join(dest, e.name)
            st = e.stat(follow_symlinks=False)
            if e.is_symlink():
                os.symlink(os.readlink(s), d)
            elif e.is_dir(follow_symlinks=False):
                os.mkdir(d, 0o700)
                _put(s, d)
            else:
                fd = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with open(s, "rb") as f, os.fdopen(fd, "wb") as g:
                    shutil.copyfileobj(f, g, 1 << 20)
            keep_attrs(d, st)


def commit(overlay: str) -> None:
    """Write the overlay's clusters into its backing file (the input), under QEMU's write lock."""
    proc = subprocess.run(["qemu-img", "commit", "-q", "-d", "--", overlay], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"qemu-img commit failed: {proc.stderr.strip()[-300:]}")


def dumps(what: dict) -> str:
    """JSON for the sessions' pipes."""
    return json.dumps(what, separators=(",", ":"))
