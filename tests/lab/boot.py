"""Boot a lab host in QEMU (software emulation) as a KVM cloud would: root disk on
virtio-blk, a virtio NIC, the default kernel and the initrd its bootloader names.

The NIC is attached to an empty hub: the guest has a virtio-net device but no network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from facts import parsers
from tests.lab.bases import log, run
from tests.lab.hosts import STATE, HostSpec, root

TIMEOUT = int(os.environ.get("KVM_LAB_BOOT_TIMEOUT", "300"))
BOOT_FILES = [
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/grub/grubenv",
    "/boot/grub2/grubenv",
    "/boot/grub/menu.lst",
    "/boot/grub/grub.conf",
    "/boot/grub/default",
]


@dataclass
class BootResult:
    """What a QEMU boot showed."""

    host: str
    kernel: str
    initrd: str
    seconds: float
    root: str = ""  # root device and fs type as the probe saw them ('' if never reached)
    bound: dict[str, str] = field(default_factory=dict)  # virtio device -> driver
    log: str = ""

    @property
    def ok(self) -> bool:
        """Root mounted from the virtio disk and virtio_blk bound to it. Without an initrd the
        kernel itself mounts root=/dev/vda, and calls it /dev/root."""
        return self.root.startswith(("/dev/vda", "/dev/root ")) and "virtio_blk" in self.bound.values()

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            return (
                f"{self.host}: BOOTED {self.kernel} with {self.initrd or 'no initrd'} in {self.seconds:.0f}s;"
                f" root {self.root}; bound: {' '.join(sorted(set(self.bound.values())))}"
            )
        lines = self.log.splitlines()
        why = next((ln for ln in lines if "ALERT!" in ln), "")
        cause = re.compile(r"Timed out|not exist|Gave up|panic")
        why = why or next((ln for ln in lines if cause.search(ln)), "no probe output")
        why = re.sub(r"\x1b\[[0-9;]*m", "", why).strip()
        initrd = self.initrd or "no initrd"
        return f"{self.host}: FAILED to boot {self.kernel} with {initrd} in {self.seconds:.0f}s: {why}"


def default_boot(tree: Path) -> tuple[str, str]:
    """(kernel image, initrd) paths inside tree that the bootloader's default entry boots."""
    files = {}
    for f in BOOT_FILES + [str(p)[len(str(tree)) :] for p in (tree / "boot/loader/entries").glob("*.conf")]:
        path = tree / f.lstrip("/")
        if path.exists():
            files[f] = path.read_text(errors="replace")
    cfg = parsers.parse_boot(files)
    if cfg is None or cfg.default is None:
        raise RuntimeError(f"{tree}: no bootloader configuration with entries")
    entry = cfg.entries[cfg.default]
    initrd = entry.initrd if entry.initrd.startswith("/boot/") or not entry.initrd else "/boot" + entry.initrd
    return f"/boot/vmlinuz-{entry.kernel}", initrd  # initrd '': the entry boots without one


def fingerprint(h: HostSpec) -> str:
    """sha256 of the default kernel and initrd: two hosts with the same fingerprint boot alike
    up to the point where the initrd looks for the root disk."""
    tree = root(h.name)
    digest = hashlib.sha256()
    for path in filter(None, default_boot(tree)):
        digest.update(hashlib.sha256((tree / path.lstrip("/")).read_bytes()).digest())
    return digest.hexdigest()


@dataclass
class Launched:
    """A QEMU boot under way. It runs on private copies of the disk, kernel and initrd, so
    the host may change (e.g. be deployed to) while it runs."""

    host: str
    kernel: str
    initrd: str
    proc: subprocess.Popen
    files: list[Path]
    start: float
    timeout: int

    def wait(self) -> BootResult:
        """Wait for the boot to end (power-off, panic or timeout) and read the probe's lines."""
        try:
            out, err = self.proc.communicate(timeout=max(1.0, self.start + self.timeout - time.monotonic()))
            out += err
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            out += err + "\n[timed out]"
        seconds = time.monotonic() - self.start
        for f in self.files:
            f.unlink(missing_ok=True)
        (STATE / "hosts" / self.host / "boot.log").write_text(out)
        result = BootResult(self.host, self.kernel.rsplit("vmlinuz-", 1)[-1], self.initrd, seconds, log=out)
        for line in out.splitlines():
            if m := re.search(r"KVM-PROBE root: (.*)", line):
                result.root = m.group(1).strip()
            elif m := re.search(r"KVM-PROBE bound: (\S+) (\S+)", line):
                result.bound[m.group(1)] = m.group(2)
        log(result.summary())
        return result


def launch(h: HostSpec, timeout: int = TIMEOUT) -> Launched:
    """Start booting host h's current root file system (its overlay must be mounted)."""
    tree = root(h.name)
    kernel, initrd = default_boot(tree)
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else STATE / "hosts" / h.name  # RAM is faster
    disk, kcopy, icopy = (scratch / f"kvm-drivers-lab-{h.name}.{ext}" for ext in ("img", "kernel", "initrd"))
    log(f"{h.name}: boot {kernel} + {initrd} in QEMU (tcg), root on virtio-blk")
    disk.unlink(missing_ok=True)
    run(["truncate", "-s", "3G", str(disk)])
    run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(disk)])
    shutil.copyfile(tree / kernel.lstrip("/"), kcopy)
    if initrd:
        shutil.copyfile(tree / initrd.lstrip("/"), icopy)
    # no_timer_check: under load, software emulation can fail the kernel's IO-APIC timer check
    # ("IO-APIC + timer doesn't work!", a panic before any driver); cloud images set it too.
    append = (
        "root=/dev/vda rw console=ttyS0 init=/sbin/kvm-probe panic=-1 quiet no_timer_check"
        " rd.shell=0 rd.emergency=reboot rd.timeout=15 rd.retry=5"
    )
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "accel=tcg",
        "-m",
        "1024",
        "-smp",
        "1",
        "-kernel",
        str(kcopy),
        *(["-initrd", str(icopy)] if initrd else []),
        "-append",
        append,
        "-drive",
        f"file={disk},format=raw,if=virtio",
        "-netdev",
        "hubport,id=n0,hubid=0",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    return Launched(h.name, kernel, initrd, proc, [disk, kcopy, icopy], time.monotonic(), timeout)


def boot(h: HostSpec, timeout: int = TIMEOUT) -> BootResult:
    """Boot host h's current root file system in QEMU and probe it."""
    return launch(h, timeout).wait()
