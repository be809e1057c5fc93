"""``kvm-drivers image check DISK...``: whether each disk image (raw, qcow2, vmdk, vhd/vpc, vhdx)
would boot on KVM, read-only, with the same statuses, exit codes and report formats as ``kvm-drivers
check``: one row per image, named by its path. Needs root (loop devices and mounts, in namespaces of
its own that nothing outlives). Nothing inside an image is run, and no image is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

from kvm_drivers import report
from kvm_drivers.cli import output
from kvm_drivers.image.check import DEFAULT_TIMEOUT, check_images


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


def run(args: argparse.Namespace, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """The image check; returns the exit code."""
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
    rows = check_images(list(args.disks), data, args.timeout, args.parallel)
    return output.finish(rows, args, started, report.exit_code(rows), previous, stdout, stderr, "image")
