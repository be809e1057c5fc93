"""Issue 21, the fix: images made from lab hosts' trees as the lab's boot disks are (tests/lab/boot.py
make_disk: the probe as init), converted to qcow2, VMDK and VHD. Real GRUB boots each in QEMU before
the fix and it fails (no virtio driver in its initrd); ``kvm-drivers image fix`` writes an overlay
(the input's checksum unchanged, nothing left behind); real GRUB boots the overlay and the probe reads
back root on virtio-blk. A hostile image's links, absolute and relative, at the paths the fix writes,
change nothing on this machine.

Hosts: 127.0.61.x (their trees only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.lab import boot, hosts, images
from tests.lab.bases import BOOT_UUID

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-images")]
CASES = [("centos7", "qcow2"), ("deb12-itools", "vmdk"), ("rocky9-bls", "vpc")]  # split+dracut, whole, split+BLS
VICTIM = Path("/root/kvm-drivers-victim")  # on this machine: what a hostile image's links point at


def boot_in_fstab(root: Path) -> None:
    """/boot on its own partition (the lab's split disk) in fstab, as an installed system has it."""
    if (root / "etc/fstab").read_text().find("/boot") < 0:
        with open(root / "etc/fstab", "a") as f:
            f.write(f"UUID={BOOT_UUID} /boot ext4 defaults 0 2\n")


def spec(base: str, n: int) -> hosts.HostSpec:
    h = hosts.variant(base, f"fix-{base}", f"127.0.61.{n}")
    return dataclasses.replace(h, setup=_both(h.setup, boot_in_fstab)) if h.disk == "split" else h


def _both(first, second):
    def run(root: Path) -> None:
        if first:
            first(root)
        second(root)

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def fix(disk: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = disk.with_suffix(".fix.json")
    proc = subprocess.run([sys.executable, "-m", "kvm_drivers", "image", "fix", str(disk), "--report", str(report),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)  # fmt: skip
    rows = json.loads(report.read_text())["hosts"] if report.exists() else []
    return proc, (rows[0] if rows else {})


def booted_copy(src: Path, raw: Path, made: boot.Disk, tree: Path) -> boot.Disk:
    """A raw copy of an image with the probe as its init, to boot (the boot writes its result there)."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(src), str(raw)], check=True)
    disk = boot.Disk(raw, made.probe_fs.replace(str(made.image), str(raw), 1))
    boot.put_probe(disk.probe_fs, tree)
    return disk


def start_boots(jobs: list[tuple[hosts.HostSpec, boot.Disk, Path]], scratch: Path, log_name: str) -> list:
    """Boots started at once (the failing ones wait, idle, for dracut's own time limit)."""
    launched = [boot.on_disk(h, disk, {}, tree, scratch, log_name=log_name) for h, disk, tree in jobs]
    for one in launched:
        one._start()
    return launched


@pytest.fixture(scope="module")
def story():
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    work = hosts.STATE / "image-fix"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    specs = [spec(base, n) for n, (base, _) in enumerate(CASES, 1)]
    s: dict = {"inputs": {}, "made": {}, "trees": {h.name: hosts.root(h.name) for h in specs}}
    running: list = []
    try:
        for h, (_, fmt) in zip(specs, CASES):
            hosts.start(h)  # its tree; the image is made of it as it is, with the tree's own init
            made = boot.make_disk(h, s["trees"][h.name], work / f"{h.name}.raw", probe=False)
            disk = work / f"{h.name}.{fmt}"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *images.FORMATS[fmt], str(made.image),
                            str(disk)], check=True)  # fmt: skip
            made.image.unlink()
            s["inputs"][h.name], s["made"][h.name] = disk, made
        s["sums"] = {n: sha256(p) for n, p in s["inputs"].items()}
        s["loops"], s["mounts"] = images.loop_devices(), images.mounts()
        running = start_boots([(h, booted_copy(s["inputs"][h.name], work / f"{h.name}.before.raw", s["made"][h.name],
                                               s["trees"][h.name]), s["trees"][h.name]) for h in specs],
                              work, "boot-image-before.log")  # fmt: skip
        s["fixes"], s["fix_seconds"] = {}, {}
        for h in specs:  # while the boots run
            started = time.monotonic()
            s["fixes"][h.name] = fix(s["inputs"][h.name])
            s["fix_seconds"][h.name] = time.monotonic() - started
        s["before"] = {one.host.name: one.wait() for one in running}
        running = start_boots([(h, booted_copy(work / f"{h.name}.kvm.qcow2", work / f"{h.name}.after.raw",
                                               s["made"][h.name], s["trees"][h.name]), s["trees"][h.name])
                               for h in specs], work, "boot-image-after.log")  # fmt: skip
        s["after"] = {one.host.name: one.wait() for one in running}
        running = []
    finally:
        for one in running:
            one.proc.kill()
        for h in specs:
            hosts.stop(h)
    s["work"], s["specs"] = work, specs
    return s


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{b}" for b, f in CASES])
def test_image_fails_before_and_boots_through_real_grub_after_the_fix(story, case):
    name = f"fix-{case[0]}"
    before, (proc, row), after = story["before"][name], story["fixes"][name], story["after"][name]
    assert not before.ok, before.summary()
    assert proc.returncode == 0 and row["status"] == "compliant", proc.stdout + proc.stderr
    assert after.ok, after.summary()  # root on /dev/vda*, virtio_blk bound to it, every fstab entry mounted


def test_fix_never_writes_the_input_and_leaves_nothing_behind(story):
    assert {n: sha256(p) for n, p in story["inputs"].items()} == story["sums"]
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"]
    assert not [p.name for p in story["work"].iterdir() if ".partial-" in p.name]


def test_output_that_exists_is_refused_and_kept(story):
    name = story["specs"][0].name
    out = story["work"] / f"{name}.kvm.qcow2"
    before = sha256(out)
    proc, _ = fix(story["inputs"][name])
    assert proc.returncode == 1 and "exists" in proc.stderr and sha256(out) == before


def test_hostile_links_at_every_path_the_fix_writes_change_nothing_here(story, tmp_path):
    # The Debian image's declaration, state and initrd paths as links out of it: absolute ones, and
    # relative ones that climb past its root. This machine's files they name are checksummed.
    name = "fix-deb12-itools"
    tree = tmp_path / "tree"
    h = next(h for h in story["specs"] if h.name == name)
    hosts.start(h)
    try:
        subprocess.run(["cp", "-a", f"{hosts.root(name)}/.", f"{tree}/"], check=True)
    finally:
        hosts.stop(h)
    VICTIM.mkdir(exist_ok=True)
    victims = {"modules": "ext4\n", "initrd": "not an initrd\n", "run": None, "lib": None}
    for v, text in victims.items():
        (VICTIM / v).mkdir(exist_ok=True) if text is None else (VICTIM / v).write_text(text)
    links = {"etc/initramfs-tools/modules": VICTIM / "modules",
             "run": f"../../../../../../..{VICTIM}/run", "var/lib/kvm-drivers": VICTIM / "lib"}  # fmt: skip
    for path, target in links.items():
        p = tree / path
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        p.symlink_to(target)
    kernel = next(p.name.removeprefix("initrd.img-") for p in (tree / "boot").glob("initrd.img-*"))
    (tree / f"boot/initrd.img-{kernel}").unlink()
    (tree / f"boot/initrd.img-{kernel}").symlink_to(VICTIM / "initrd")
    made = boot.make_disk(h, tree, tmp_path / "hostile.raw", probe=False)
    disk = tmp_path / "hostile.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(made.image), str(disk)], check=True)
    made.image.unlink()
    sums = {p: sha256(p) for p in [*VICTIM.rglob("*"), Path("/etc/passwd"), Path("/etc/shadow")]}
    listing = sorted(str(p) for p in VICTIM.rglob("*"))
    fix(disk)
    assert {p: sha256(p) for p in sums} == sums
    assert sorted(str(p) for p in VICTIM.rglob("*")) == listing


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.8])
def test_a_killed_fix_leaves_the_input_and_no_output_under_its_name(story, tmp_path, fraction):
    name = "fix-deb12-itools"
    disk, out = story["inputs"][name], tmp_path / "killed.qcow2"
    proc = subprocess.Popen([sys.executable, "-m", "kvm_drivers", "image", "fix", str(disk), "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    time.sleep(story["fix_seconds"][name] * fraction)
    os.killpg(proc.pid, signal.SIGKILL)  # the fix, pyinfra, the session and what runs in the image
    proc.wait()
    deadline = time.monotonic() + 20  # the kernel tears the session's namespaces down
    while time.monotonic() < deadline and (images.loop_devices(), images.mounts()) != (story["loops"], story["mounts"]):
        time.sleep(0.1)
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"]
    assert sha256(disk) == story["sums"][name]
    if out.exists():  # killed after it was renamed into place: then it is whole (a partial one has another name)
        assert subprocess.run(["qemu-img", "check", "-q", str(out)]).returncode == 0
