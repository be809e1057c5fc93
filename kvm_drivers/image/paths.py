"""Paths of an image resolved inside its root, as the image's own kernel would resolve them after a
chroot: ".." stops at the root and every symlink, absolute or relative, is followed inside it. An
image is untrusted input: its links point wherever its author chose, never onto the control machine.
"""

from __future__ import annotations

import os
import stat

MAX_LINKS = 40  # as Linux's path walk (ELOOP)


class OutsideRoot(Exception):
    """A path of the image that cannot be resolved inside its root."""


def inside(root: str, path: str, *, follow_last: bool = True) -> str:
    """The control machine's path of the image's path: every component a real directory or file
    under root (no symlink left in it). A missing last component is allowed (a file to create);
    a missing directory, a loop or too many links is OutsideRoot.
    """
    root = root.rstrip("/") or "/"  # taken as it is: it may be reached through /proc/PID/root
    todo = [c for c in path.split("/") if c]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if todo:
                raise OutsideRoot(f"{path}: {'/' + '/'.join([*done, part])} does not exist in the image") from None
            done.append(part)
            break
        if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise OutsideRoot(f"{path}: too many symbolic links in the image")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = [c for c in target.split("/") if c] + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise OutsideRoot(f"{path}: {'/' + '/'.join([*done, part])} is not a directory in the image")
        done.append(part)
    return os.path.join(root, *done)


def directory_inside(root: str, path: str) -> str:
    """inside() for a mount point: it must exist and be a directory (no symlink is mounted over)."""
    real = inside(root, path)
    st = os.lstat(real) if os.path.lexists(real) else None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise OutsideRoot(f"{path}: not a directory in the image")
    return real
