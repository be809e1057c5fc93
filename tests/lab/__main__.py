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


def summary(up: list[hosts.HostSpec]) -> str:
    """What is left running, for the end of the demo: the lab stays up until `make down`."""
    if not up:
        return "== the lab is down: no lab host is running"
    return (f"== the lab is up: {len(up)} of {len(hosts.HOSTS)} hosts still running (sshd on 127.0.10.x, in "
            f"inventories/lab.py; `python -m tests.lab status` lists them). Stop them with: make down")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the lab."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or reuse) every base root filesystem")
    up = sub.add_parser("up", help="start hosts fresh (all by default)")
    up.add_argument("hosts", nargs="*")
    down = sub.add_parser("down", help="stop hosts (all by default)")
    down.add_argument("hosts", nargs="*")
    status = sub.add_parser("status", help="list hosts and whether they are up")
    status.add_argument("--summary", action="store_true", help="one line: how many are up, and how to stop them")
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
        # the GRUB rescue CDs too (GRUB 2.14's is made from Debian unstable's package, downloaded once)
        bases.build_all(also={"GRUB 2.06 rescue CD": lambda: boot.rescue_iso("2.06"),
                              "GRUB 2.14 rescue CD": lambda: boot.rescue_iso("2.14")})  # fmt: skip
    elif args.cmd == "up":
        hosts.up(args.hosts or None)
    elif args.cmd == "down":
        hosts.down(args.hosts or None)
    elif args.cmd == "status" and args.summary:
        print(summary([h for h in hosts.HOSTS if hosts.listening(h.address)]), flush=True)
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
