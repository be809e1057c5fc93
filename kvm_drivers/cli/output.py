"""What ``kvm-drivers check`` and ``kvm-drivers image check`` share around their rows: the report
arguments read before anything is checked, then the table printed and the reports written.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from kvm_drivers import report


def read_arguments(args: argparse.Namespace, stderr: TextIO) -> tuple[int, dict[str, Any] | None]:
    """(a usage exit code, or 0; the --previous report). Read before anything is checked or written:
    the previous report may be this run's --report.
    """
    for path in args.report:
        if path.suffix.lower() not in report.FORMATS:
            print(f"kvm-drivers: --report {path}: unknown format; use a suffix among {', '.join(report.FORMATS)}",
                  file=stderr)  # fmt: skip
            return report.EXIT_USAGE, None
    if args.timeout <= 0:
        print("kvm-drivers: --timeout must be positive", file=stderr)
        return report.EXIT_USAGE, None
    previous = None
    if args.previous:
        try:
            previous = report.read_previous(args.previous)
        except FileNotFoundError:
            print(f"kvm-drivers: no previous report at {args.previous} (a first run?): no comparison", file=stderr)
        except (OSError, ValueError) as exc:
            print(f"kvm-drivers: --previous {args.previous}: cannot be used: {exc}", file=stderr)
            return report.EXIT_USAGE, None
    return 0, previous


def finish(rows: list[dict], args: argparse.Namespace, started: float, code: int, previous: dict[str, Any] | None,
           stdout: TextIO, stderr: TextIO, noun: str = "host") -> int:  # fmt: skip
    """Print the table, write every --report; the exit code (5 when a report could not be written)."""
    meta = {"generated_at": time.time(), "duration_seconds": time.time() - started, "exit_code": code,
            "previous": previous}  # fmt: skip
    width = shutil.get_terminal_size().columns if stdout.isatty() else None
    text = report.text_table(rows, width=width, quiet=args.quiet, previous=previous, noun=noun) if rows else ""
    if text:
        print(text, file=stdout, flush=True)
    for path in args.report:
        if not rows and previous is not None and path.resolve() == args.previous.resolve():
            print(f"kvm-drivers: {path} kept as it was: it is the --previous report, and nothing was checked",
                  file=stderr)  # fmt: skip
            continue
        try:
            report.write_report(path, rows, meta)
        except (OSError, ValueError) as exc:
            print(f"kvm-drivers: report {path} could not be written: {exc}", file=stderr)
            code = max(code, report.EXIT_REPORT_FAILED)
        else:
            if not args.quiet:
                print(f"report written to {path}", file=stderr)
    return code


def add_common(parser: argparse.ArgumentParser, timeout: float, what: str) -> None:
    """The options both checks take: reports, comparison, quiet, data, time limit (per host or image)."""
    parser.add_argument("--report", action="append", default=[], metavar="PATH", type=Path,
                        help="also write the report to PATH; format from the suffix: "
                             + ", ".join(report.FORMATS) + " (repeatable)")  # fmt: skip
    parser.add_argument("--previous", metavar="PATH.json", type=Path,
                        help=f"a JSON report of an earlier check: say which {what}s changed status since (it may "
                             "be the --report PATH.json this run replaces; a missing file is a first run)")  # fmt: skip
    parser.add_argument("--quiet", "-q", action="store_true",
                        help=f"print only the {what}s with a problem (nothing when all are compliant)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help=f"settings for every {what}, as inventory data / pyinfra's --data (repeatable)")
    parser.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                        help=f"time limit per {what} (default {timeout:g})")


def parse_data(items: Iterable[str]) -> dict[str, Any]:
    """--data KEY=VALUE items as pyinfra parses them (true/false, integers, else strings)."""
    from pyinfra_cli.util import parse_cli_arg

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--data {item!r}: expected KEY=VALUE")
        out[key] = parse_cli_arg(value)
    return out
