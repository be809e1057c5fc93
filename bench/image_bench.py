"""Benchmark: what ``kvm-drivers image fix`` costs on a 2 GiB image beyond the initrd rebuild itself.

    python -m bench.image_bench [--host deb12-itools] [--format qcow2] [--size-gib 2]

The image is a lab host's tree (a MODULES=list initrd without virtio, as on Xen) written as a
partitioned disk of --size-gib and converted to --format, as a user's exported image would be.
Measured, one after the other on this machine:
- ``image check``: attach, read-only mounts, the gather from outside the image, plan and teardown;
- ``image fix --output``: the overlay, read-write mounts, the deploy (declaration, rebuild under
  bubblewrap, verification), teardown, and the re-check of the output;
- the same deploy on the same tree, as a live lab host over SSH (``pyinfra INV deploys/kvm_drivers.py``);
- the rebuild itself: the same declaration and ``update-initramfs -u`` (dracut: ``dracut -f
  --no-hostonly``, as in an image) on the same tree, run on the lab host over SSH (no image, no sandbox).
Printed: the four times, the fix's overhead over the rebuild (pyinfra, attach, mounts, sandbox, the
deploy's verification, teardown, re-check) and their ratio (issue 21's goal: at most 1.5x), the same
against the live deploy (what the image alone adds), and the sizes of input and output: the output is an
overlay, the disk is not copied. Needs root and the lab's bases (``make setup``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab import boot, hosts
from tests.lab.bases import ROOT_UUID

ROOT = Path(__file__).parent.parent
MiB = 1 << 20
DRIVERS = "virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring virtio"
# The rebuild alone, as image fix runs it in the image (dracut: --no-hostonly there), with its declaration.
REBUILD = {
    "initramfs-tools": f"printf '%s\\n' {DRIVERS} >> /etc/initramfs-tools/modules && "
                       "update-initramfs -u -k {kernel} >/dev/null 2>&1",
    "dracut": f"echo 'add_drivers+=\" {DRIVERS} \"' > /etc/dracut.conf.d/90-kvm-bench.conf && "
              "dracut -f --no-hostonly --no-hostonly-cmdline --kver {kernel} >/dev/null 2>&1",
}  # fmt: skip


def timed(cmd: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess]:
    """Seconds cmd took, and its result."""
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    return time.monotonic() - start, proc


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """``kvm-drivers image ARGS``, timed."""
    return timed([sys.executable, "-m", "kvm_drivers", "image", *args], cwd=ROOT, stdin=subprocess.DEVNULL)


def make_image(h: hosts.HostSpec, work: Path, size: int, fmt: str) -> Path:
    """The host's tree as an MBR disk of size bytes (one ext4 partition at 1 MiB), in format fmt."""
    raw = work / f"{h.name}.raw"
    boot.mkfs_ext4(hosts.root(h.name), raw, MiB, size - MiB, ROOT_UUID)
    boot.partition(raw, [(MiB, size - MiB, "83")])
    if fmt == "raw":
        return raw
    out = work / f"{h.name}.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(out)], check=True)
    raw.unlink()
    return out


def main() -> int:
    """Make the image, time check, fix and the rebuild alone, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="deb12-itools", help="lab host whose tree becomes the image")
    p.add_argument("--format", default="qcow2", choices=["raw", "qcow2", "vmdk", "vpc", "vhdx"])
    p.add_argument("--size-gib", type=float, default=2.0)
    a = p.parse_args()
    h = hosts.spec(a.host)
    size = int(a.size_gib * (1 << 30)) // MiB * MiB
    hosts.start(h)
    try:
        with tempfile.TemporaryDirectory(dir=hosts.STATE) as tmp:
            work = Path(tmp)
            image = make_image(h, work, size, a.format)
            t_check, check = cli("check", str(image))
            output = work / "fixed.qcow2"
            t_fix, fix = cli("fix", str(image), "--output", str(output))
            if fix.returncode != 0:
                print(fix.stdout + fix.stderr, file=sys.stderr)
                return 1
            inventory = hosts.write_inventory([h], "image_bench")  # the same tree, live: the same deploy over SSH
            t_live, live = timed([sys.executable, "-m", "pyinfra", "-y", str(inventory), "deploys/kvm_drivers.py"],
                                 cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
            if live.returncode != 0:
                print(live.stdout + live.stderr, file=sys.stderr)
                return 1
            kernel = hosts.ssh(h, "ls /lib/modules").split()[0]
            rebuild = REBUILD["dracut" if "dracut" in h.base else "initramfs-tools"].format(kernel=kernel)
            t_ssh, _ = timed(hosts.ssh_args(h) + ["true"])
            t_rebuild, proc = timed(hosts.ssh_args(h) + [rebuild])
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            t_rebuild -= t_ssh  # the rebuild, without the SSH round trip
            used = {f: int(subprocess.run(["du", "-B1", str(f)], capture_output=True, text=True).stdout.split()[0])
                    for f in (image, output)}  # fmt: skip
    finally:
        hosts.stop(h)
    gib, on_disk = size / (1 << 30), used[image] / MiB
    print(f"image: {h.name}'s tree, {gib:.1f} GiB disk as {a.format} ({on_disk:.0f} MiB on disk)")
    print(f"image check (attach, read-only mounts, gather, plan, teardown): {t_check:6.1f} s (exit {check.returncode})")
    print(f"image fix --output (overlay, deploy, teardown, re-check):      {t_fix:6.1f} s")
    print(f"the same deploy on the same tree, live over SSH (no re-check): {t_live:6.1f} s")
    print(f"the initrd rebuild itself (same tree, same declaration, SSH):  {t_rebuild:6.1f} s")
    print(f"image fix over the rebuild: +{t_fix - t_rebuild:.1f} s, {t_fix / t_rebuild:.2f}x (goal <= 1.5x); "
          f"over the live deploy: +{t_fix - t_live:.1f} s, {t_fix / t_live:.2f}x")
    print(f"output overlay: {used[output] / MiB:.1f} MiB on disk (the input's data is not copied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
