"""Benchmark: the fleet check (``kvm-drivers check``) and the converged deploy against the floor of one
trivial fact (``pyinfra INV fact server.KernelVersion``), over a fleet of lab hosts on loopback.

    python -m bench.fleet_bench [--hosts 50] [--rounds 3] [--check-only]

For each measured command: wall time and control-process CPU (user + system of the child process,
from getrusage) in ms per host, medians of --rounds runs that alternate with the floor, their ratios
to the floor (goals: check <= 1.2x wall and <= 1.3x CPU), and the remote commands per host counted
from each host's sshd log. --check-only skips the deploy (needed for 1,000 hosts in reasonable time):
the warm check then runs on the drifted fleet, which costs the same one command per host.
Addresses: 127.0.20.1 upwards, 250 per /24 (127.0.20.x to 127.0.23.x for 1,000 hosts): loopback only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.lab import hosts

ROOT = Path(__file__).parent.parent
# Variants the benchmark fleet cycles through: both generators, several families and boot
# layouts; few dracut hosts, whose first rebuild (not measured) costs 40 s of CPU each here.
MIX = ["deb12-itools", "deb12-compliant", "sles11", "deb12-dracut", "ubuntu2204", "deb12-custom-initrd",
       "deb12-2kernels"]
PER_NET = 250


def address(i: int) -> str:
    """Loopback address of bench host i (0-based): 127.0.20.1 .. 127.0.20.250, then 127.0.21.1 ..."""
    return f"127.0.{20 + i // PER_NET}.{i % PER_NET + 1}"


def fleet(count: int) -> list[hosts.HostSpec]:
    """A fleet of count hosts on 127.0.20.x upwards, cycling through MIX."""
    return [
        dataclasses.replace(hosts.spec(MIX[i % len(MIX)]), name=f"bench{i + 1:04d}-{MIX[i % len(MIX)]}",
                            address=address(i))
        for i in range(count)
    ]  # fmt: skip


def exec_counts(specs: list[hosts.HostSpec]) -> dict[str, int]:
    """Exec requests each host's sshd has logged so far."""
    out = {}
    for s in specs:
        log = hosts.STATE / "hosts" / s.name / "sshd.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        out[s.name] = len(re.findall(r"req exec", text))
    return out


@dataclasses.dataclass
class Sample:
    """One run: wall seconds, control-process CPU seconds, remote commands per host."""

    wall: float
    cpu: float
    cmds: list[int]


def timed(label: str, cmd: list[str], specs: list[hosts.HostSpec], ok: tuple[int, ...] = (0,)) -> Sample:
    """Run one command from the repository root; its wall time, CPU time and remote commands per host."""
    before = exec_counts(specs)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_usage.ru_utime - usage.ru_utime) + (after_usage.ru_stime - usage.ru_stime)
    after = exec_counts(specs)
    if proc.returncode not in ok:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"{label}: exited {proc.returncode}")
    cmds = sorted(set(after[n] - before[n] for n in after))
    print(f"  {label:44} {wall:8.2f} s  {1000 * cpu / len(specs):7.2f} ms CPU/host  remote commands/host: {cmds}",
          flush=True)  # fmt: skip
    return Sample(wall, cpu, cmds)


def median(samples: list[Sample]) -> Sample:
    """Median wall and CPU of several runs (commands: all values seen)."""
    return Sample(statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples),
                  sorted({c for s in samples for c in s.cmds}))  # fmt: skip


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each command (median)")
    parser.add_argument("--check-only", action="store_true", help="no deploy: floor and check only")
    args = parser.parse_args()
    if not 0 < args.hosts <= 4 * PER_NET:
        parser.error(f"--hosts must be between 1 and {4 * PER_NET}")
    specs = fleet(args.hosts)
    print(f"== {len(specs)} lab hosts from 127.0.20.1 ({', '.join(MIX)}), {os.cpu_count()} cores", flush=True)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda s: hosts.start(s, sshd_options=["-o", "LogLevel=DEBUG1"]), specs))
    print(f"hosts up in {time.monotonic() - start:.1f} s", flush=True)
    inv = str(hosts.write_inventory(specs, "bench"))
    env_cache = hosts.STATE / "bench-cache"
    subprocess.run(["rm", "-rf", str(env_cache)], check=False)
    os.environ["KVM_DRIVERS_CACHE"] = str(env_cache)
    floor_cmd = ["-m", "pyinfra", inv, "fact", "server.KernelVersion"]
    check_cmd = ["-m", "kvm_drivers", "check", inv, "--quiet"]
    deploy_cmd = ["-m", "pyinfra", "-y", inv, "deploys/kvm_drivers.py"]
    drift_ok = (0, 2, 3, 4) if args.check_only else (0,)
    results: dict[str, Sample] = {}
    try:
        print("cold (fills the control-side cache):", flush=True)
        timed("kvm-drivers check, cold cache", check_cmd, specs, ok=(2, 4))
        if not args.check_only:
            timed("deploy, fixing the fleet", deploy_cmd, specs)
        print(f"warm, {args.rounds} alternating rounds:", flush=True)
        runs: dict[str, list[Sample]] = {"floor": [], "check": [], "deploy": []}
        for _ in range(args.rounds):
            runs["floor"].append(timed("floor: fact server.KernelVersion", floor_cmd, specs))
            runs["check"].append(timed("kvm-drivers check, warm cache", check_cmd, specs, ok=drift_ok))
            if not args.check_only:
                runs["deploy"].append(timed("deploy, converged fleet", deploy_cmd, specs))
        results = {k: median(v) for k, v in runs.items() if v}
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(hosts.stop, specs))
    floor = results["floor"]
    print()
    print(f"| {len(specs)} hosts, {os.cpu_count()} cores, median of {args.rounds} | wall s | CPU ms/host "
          "| wall / floor | CPU / floor | remote commands/host |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    names = {"floor": "floor: `fact server.KernelVersion`", "check": "`kvm-drivers check`, warm cache",
             "deploy": "deploy, converged fleet"}  # fmt: skip
    for key, s in results.items():
        print(f"| {names[key]} | {s.wall:.2f} | {1000 * s.cpu / len(specs):.2f} | {s.wall / floor.wall:.2f}x "
              f"| {s.cpu / floor.cpu:.2f}x | {', '.join(map(str, s.cmds))} |")  # fmt: skip
    check = results["check"]
    ok = check.wall / floor.wall <= 1.2 and check.cpu / floor.cpu <= 1.3
    print(f"\ncheck within goals (<= 1.2x wall, <= 1.3x CPU): {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
