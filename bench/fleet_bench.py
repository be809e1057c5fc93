"""Benchmark: drift check and converged deploy against the floor of one trivial fact, over a
fleet of lab hosts; remote commands counted from each host's sshd log.

    python -m bench.fleet_bench [--hosts 50]

Prints wall times, the ratios to the floor (goals: drift check <= 1.5x, converged deploy
<= 2x) and the remote commands per host (goals: drift <= 2, converged deploy <= 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.lab import hosts

ROOT = Path(__file__).parent.parent
# Variants the benchmark fleet cycles through: both generators, several families and boot
# layouts; few dracut hosts, whose first rebuild (not measured) costs 40 s of CPU each here.
MIX = ["deb12-itools", "deb12-compliant", "sles11", "deb12-dracut", "ubuntu2204", "deb12-custom-initrd",
       "deb12-2kernels"]


def fleet(count: int) -> list[hosts.HostSpec]:
    """A fleet of count hosts on 127.0.20.x, cycling through MIX."""
    return [
        dataclasses.replace(hosts.spec(MIX[i % len(MIX)]), name=f"bench{i + 1:02d}-{MIX[i % len(MIX)]}",
                            address=f"127.0.20.{i + 1}")
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


def timed(label: str, args: list[str], specs: list[hosts.HostSpec], ok: tuple[int, ...] = (0,)) -> tuple[float, dict]:
    """Run pyinfra once; return wall seconds and remote commands per host."""
    before = exec_counts(specs)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pyinfra", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    after = exec_counts(specs)
    if proc.returncode not in ok:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"{label}: pyinfra exited {proc.returncode}")
    per_host = {name: after[name] - before[name] for name in after}
    cmds = sorted(set(per_host.values()))
    print(f"{label:42} {seconds:7.2f} s   remote commands per host: {cmds}", flush=True)
    return seconds, per_host


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="floor/drift/converged measured best of N")
    args = parser.parse_args()
    specs = fleet(args.hosts)
    print(f"== {len(specs)} lab hosts on 127.0.20.x ({', '.join(MIX)}), {os.cpu_count()} cores", flush=True)
    start = time.monotonic()
    for s in specs:
        hosts.start(s, sshd_options=["-o", "LogLevel=DEBUG1"])
    print(f"hosts up in {time.monotonic() - start:.1f} s", flush=True)
    inv = str(hosts.write_inventory(specs, "bench"))
    env_cache = hosts.STATE / "bench-cache"
    subprocess.run(["rm", "-rf", str(env_cache)], check=False)
    os.environ["KVM_DRIVERS_CACHE"] = str(env_cache)
    try:
        best = lambda label, cmd, ok=(0,): min(  # noqa: E731
            (timed(label, cmd, specs, ok) for _ in range(args.rounds)), key=lambda r: r[0])
        floor, _ = best("floor: fact server.KernelVersion", [inv, "fact", "server.KernelVersion"])
        timed("drift check, drifted fleet, cold cache", [inv, "deploys/drift_check.py"], specs, ok=(2, 4))
        timed("deploy, fixing the fleet", ["-y", inv, "deploys/kvm_drivers.py"], specs)
        drift, drift_cmds = best("drift check, converged fleet", [inv, "deploys/drift_check.py"])
        conv, conv_cmds = best("deploy, converged fleet", ["-y", inv, "deploys/kvm_drivers.py"])
    finally:
        for s in specs:
            hosts.stop(s)
    print()
    print(f"drift check / floor      = {drift / floor:.2f}x  (goal <= 1.5x); "
          f"max remote commands per host: {max(drift_cmds.values())} (goal <= 2)")
    print(f"converged deploy / floor = {conv / floor:.2f}x  (goal <= 2x);   "
          f"max remote commands per host: {max(conv_cmds.values())} (goal <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
