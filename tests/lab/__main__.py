"""python -m tests.lab build|up|down|status|boot HOST|expect CODE WHY COMMAND..."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from tests.lab import bases, boot, hosts


def expect(code: int, why: str, command: list[str]) -> int:
    """Run command (echoed as make echoes a recipe line); 0 if it exits code, saying it was expected, else 1."""
    print(shlex.join(command), flush=True)
    rc = subprocess.run(command).returncode
    if rc == code:
        print(f"(exit {rc}: {why}, as expected)", flush=True)
        return 0
    print(f"demo: expected exit {code} ({why}), got exit {rc}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the lab."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) every base root filesystem")
    up = sub.add_parser("up", help="start hosts fresh (all by default)")
    up.add_argument("hosts", nargs="*")
    down = sub.add_parser("down", help="stop hosts (all by default)")
    down.add_argument("hosts", nargs="*")
    sub.add_parser("status", help="list hosts and whether they are up")
    b = sub.add_parser("boot", help="boot a host's default kernel+initrd in QEMU (virtio-blk root)")
    b.add_argument("host")
    ex = sub.add_parser(
        "expect", help="run COMMAND, which must exit CODE (a demo step whose failure is the point): say so, or fail"
    )
    ex.add_argument("code", type=int)
    ex.add_argument("why", help="what exit CODE means here")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        for name in bases.RECIPES:
            bases.ensure(name)
    elif args.cmd == "up":
        hosts.up(args.hosts or None)
    elif args.cmd == "down":
        hosts.down(args.hosts or None)
    elif args.cmd == "status":
        for h in hosts.HOSTS:
            state = "up" if hosts.listening(h.address) else "down"
            print(f"{h.name:24} {h.address:14} {state:5} {h.note}")
    elif args.cmd == "boot":
        return 0 if boot.boot(hosts.spec(args.host)).ok else 1  # boot() logs the result's summary
    elif args.cmd == "expect":
        if not args.command:
            parser.error("expect: no COMMAND given")
        return expect(args.code, args.why, args.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
