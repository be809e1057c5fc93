"""python -m tests.lab build|up|down|status|boot HOST [--before]"""

from __future__ import annotations

import argparse
import sys

from tests.lab import bases, boot, hosts


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
        result = boot.boot(hosts.spec(args.host))
        print(result.summary())
        return 0 if result.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
