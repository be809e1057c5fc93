"""Disk images (raw, qcow2, vmdk, vhd/vpc, vhdx), before they are imported. Both need root (loop
devices and mounts, in namespaces of their own that nothing outlives).

``kvm-drivers image check DISK...``: whether each image would boot on KVM, read-only, with the same
statuses, exit codes and report formats as ``kvm-drivers check``: one row per image, named by its
path. Nothing inside an image is run, and no image is written.

``kvm-drivers image fix DISK [--output NEW | --flatten | --in-place]``: the deploy, through pyinfra and
the ``@kvmimage`` connector (kvm_drivers.image.connector), writing a qcow2 overlay backed by DISK (or a
converted copy), never DISK itself; then the output is checked as above. With ``--in-place`` that
overlay is then written into DISK, each file it changed kept inside the image (kvm_drivers.image.inplace).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from kvm_drivers import report
from kvm_drivers.cli import output
from kvm_drivers.image import inplace
from kvm_drivers.image.check import DEFAULT_TIMEOUT, check_images
from kvm_drivers.image.connector import default_output
from kvm_drivers.image.disk import DiskError, open_disk, writer
from kvm_drivers.image.session import namespace_command, session_env
from kvm_drivers.report import printable

FIX_TIMEOUT = 3600.0
SESSION_TIMEOUT = 3600.0  # one session of --in-place (a listing, the copies, the backups)
ENTRY = Path(__file__).resolve().parent.parent / "deploy_entry.py"  # the deploy, as pyinfra runs a file


def add_parser(sub: Any) -> None:
    """The image subcommand and its check."""
    image = sub.add_parser("image", help="check disk images before they are imported",
                           description=__doc__.split("\n\n", 1)[0].replace("\n", " "))  # fmt: skip
    actions = image.add_subparsers(dest="action", required=True, parser_class=type(image))
    check = actions.add_parser(
        "check", help="check images (read-only) and report drift",
        epilog="exit codes: 0 all checked and compliant, 2 drifted, 3 unsupported, 4 an image could not be "
               "checked, 5 a report could not be written, 1 usage error",
    )  # fmt: skip
    check.add_argument("disks", nargs="+", metavar="DISK", help="image files")
    output.add_common(check, DEFAULT_TIMEOUT, "image")
    check.add_argument("--parallel", type=int, default=2, metavar="N", help="images read at once (default 2)")
    check.add_argument("--backing", metavar="FILE", default="",
                       help="the one backing file the images may have (an overlay image fix wrote over FILE)")
    fix = actions.add_parser(
        "fix", help="write a fixed image beside the input (never the input), then check it",
        epilog="exit codes: those of image check, on the output; 4 also when the fix failed (no output written)",
    )  # fmt: skip
    fix.add_argument("disk", metavar="DISK", help="the image to fix (read only)")
    fix.add_argument("--output", metavar="NEW", help="the image to write (default: NAME.kvm.qcow2 beside DISK)")
    fix.add_argument("--flatten", action="store_true",
                     help="write a converted qcow2 copy instead of an overlay backed by DISK")  # fmt: skip
    fix.add_argument("--in-place", action="store_true",
                     help="change DISK itself once the fix is proven on an overlay (refused while anything holds "
                          f"DISK); each file it changes is kept inside the image, in {inplace.BACKUP_DIR}")
    output.add_common(fix, FIX_TIMEOUT, "image")


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The image check; returns the exit code."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr  # the streams of now, not of import time
    started = time.time()
    usage, previous = output.read_arguments(args, stderr)
    if usage:
        return usage
    if os.geteuid() != 0:
        print("kvm-drivers image: run as root (images are read through loop devices and mounts)", file=stderr)
        return report.EXIT_USAGE
    try:
        data = output.parse_data(args.data)
    except ValueError as exc:
        print(f"kvm-drivers: {exc}", file=stderr)
        return report.EXIT_USAGE
    if args.action == "fix":
        return fix(args, data, started, previous, stdout, stderr)
    rows = check_images(list(args.disks), data, args.timeout, args.parallel,
                        os.path.abspath(args.backing) if args.backing else "")  # fmt: skip
    return output.finish(rows, args, started, report.exit_code(rows), previous, stdout, stderr, "image")


def fix(args: argparse.Namespace, data: dict[str, Any], started: float, previous: dict[str, Any] | None,
        stdout: TextIO, stderr: TextIO) -> int:  # fmt: skip
    """Run the deploy on the image through pyinfra (its output on stderr), then check what it wrote."""
    if own := [x for x in args.data if x.split("=", 1)[0].startswith("kvm_image_")]:
        print(f"kvm-drivers image fix: {', '.join(own)}: set by the command's own options", file=stderr)
        return report.EXIT_USAGE
    disk = os.path.abspath(args.disk)
    new = os.path.abspath(args.output or default_output(disk))
    if args.in_place:
        if args.output or args.flatten:
            print("kvm-drivers image fix: --in-place writes DISK itself: no --output nor --flatten", file=stderr)
            return report.EXIT_USAGE
        try:
            opened = open_disk(disk)
            fmt = opened.format
            if why := opened.in_place_problem():
                raise DiskError(why)
            if held := inplace.holders(disk):
                raise DiskError(f"is in use: held by {', '.join(held)[:300]}: stop it, or fix a copy")
            if os.path.lexists(over := default_output(disk)):
                raise DiskError(f"{over} may be an overlay over it (image fix's default output): changing it "
                                "in place would corrupt that overlay; remove it first")  # fmt: skip
            seen = inplace.unchanged_key(disk)
        except (DiskError, OSError) as exc:
            row = report.host_row(disk, None, f"image {disk}: {exc}: unchanged")
            return output.finish([row], args, started, report.EXIT_CODES["error"], previous, stdout, stderr, "image")
        new = os.path.join(os.path.dirname(disk), f".{os.path.basename(disk)}.in-place-{secrets.token_hex(4)}.qcow2")
    if os.path.lexists(new):
        print(f"kvm-drivers image fix: {new} exists: remove it or give another --output", file=stderr)
        return report.EXIT_USAGE
    settings = [f"kvm_image_output={new}"] + (["kvm_image_flatten=true"] if args.flatten else []) + list(args.data)
    cmd = [sys.executable, "-m", "pyinfra", "-y", f"@kvmimage{disk}", str(ENTRY)]
    for item in settings:
        cmd += ["--data", item]
    try:
        proc = subprocess.run(cmd, stdout=2, stderr=2, stdin=subprocess.DEVNULL, timeout=args.timeout)  # pyinfra's log
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = -1
    if code == 0 and not os.path.exists(new):  # nothing was run in the image: it needs no change
        print(f"kvm-drivers image fix: {disk} needs no change: no output written; checking it", file=stderr)
        rows = check_images([disk], data, DEFAULT_TIMEOUT, 1)
        return output.finish(rows, args, started, report.exit_code(rows), previous, stdout, stderr, "image")
    if code != 0:
        why = f"timed out after {args.timeout:g} s" if code == -1 else f"pyinfra exit {code}"
        row = report.host_row(new, None, f"the fix of {disk} failed ({why}): {disk} is unchanged, {new} not written")
        return output.finish([row], args, started, report.EXIT_CODES["error"], previous, stdout, stderr, "image")
    if args.in_place:
        try:
            saved = write_in_place(disk, fmt, new, seen, stderr)
        except (OSError, ValueError) as exc:
            row = report.host_row(disk, None, f"image {disk}: --in-place: {printable(str(exc))}")
            return output.finish([row], args, started, report.EXIT_CODES["error"], previous, stdout, stderr, "image")
        print(f"kvm-drivers image fix: wrote {disk} in place (what it changed is kept in it, {saved}); checking it",
              file=stderr)  # fmt: skip
        rows = check_images([disk], data, DEFAULT_TIMEOUT, 1)
        return output.finish(rows, args, started, report.exit_code(rows), previous, stdout, stderr, "image")
    print(f"kvm-drivers image fix: wrote {new}; checking it", file=stderr)
    rows = check_images([new], data, DEFAULT_TIMEOUT, 1, backing="" if args.flatten else disk)
    return output.finish(rows, args, started, report.exit_code(rows), previous, stdout, stderr, "image")


def session(action: str, *args: str, feed: object = None) -> str:
    """One image session (kvm_drivers.image.session) to its end: its stdout; OSError with its cause."""
    try:
        proc = subprocess.run(namespace_command(action, *args), input=None if feed is None else inplace.dumps(feed),
                              capture_output=True, text=True, env=session_env(), timeout=SESSION_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise OSError(f"{action}: not done within {SESSION_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        said = [x for x in proc.stderr.splitlines() if not x.startswith("note: ")][-1:] or [f"exit {proc.returncode}"]
        raise OSError(f"{action}: {said[0][:300]}")
    return proc.stdout


def write_in_place(disk: str, fmt: str, overlay: str, seen: tuple, stderr: TextIO) -> str:
    """The proven overlay written into disk (kvm_drivers.image.inplace), each file it changed kept in the
    image first: the backup directory, as the image names it. On failure before the commit, disk is as
    it was and the overlay is removed; a failed commit keeps the overlay and says how to finish it.
    """
    keep = tempfile.mkdtemp(prefix=f".{os.path.basename(disk)}.in-place-", dir=os.path.dirname(disk))
    try:
        after = json.loads(session("list", overlay, "qcow2", disk, fmt))
        before = json.loads(session("list", disk, fmt))
        what = inplace.changes(before, after)
        copies = [p for p in what["changed"] + what["removed"] if before[p][0] != stat.S_IFDIR]
        free = shutil.disk_usage(keep).free
        if (need := inplace.copy_size(before, copies)) > free - (64 << 20):
            raise OSError(f"the input's copies of what the fix changed need {need} bytes, and {free} are free "
                          f"beside {disk}: not done")  # fmt: skip
        session("copy-out", disk, fmt, keep, feed=copies)
        stamp = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        saved = session("save", overlay, "qcow2", disk, fmt, keep, stamp, feed=what).strip()
        for key in ("changed", "created", "removed"):
            named = ", ".join(printable("/" + p) for p in what[key][:50]) + (" ..." if len(what[key]) > 50 else "")
            print(f"kvm-drivers image fix: {key}: {named or 'none'}", file=stderr)
        deadline = time.monotonic() + 20  # (the loop devices of the sessions that read it go as their namespaces do)
        while inplace.holders(disk) and time.monotonic() < deadline:
            time.sleep(0.2)
        if inplace.holders(disk) or writer(disk) or inplace.unchanged_key(disk) != seen:
            raise OSError(f"{disk} changed or was taken by another process while it was being fixed: not written")
    except BaseException:
        Path(overlay).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    try:
        inplace.commit(overlay)
    except OSError as exc:
        raise OSError(f"{exc}; {disk} may be half-written: {overlay} is kept, `qemu-img commit {overlay}` "
                      "finishes it") from None
    Path(overlay).unlink()
    return saved
