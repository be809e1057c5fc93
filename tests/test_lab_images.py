"""Issue 21 on the lab: disk images made from lab hosts' trees as the lab's boot disks are
(tests/lab/boot.py make_disk, with the tree's own init), in every format and layout the issue names:
VMDK (whole disk), qcow2 (MBR, /boot its own partition, dracut), VHDX (the same, BLS entries), VHD
(btrfs, "/" in subvolume @), raw (GPT with an ESP, booted by OVMF with empty NVRAM), the SLES 11 layout
(GRUB legacy menu.lst booting /boot/linux.vmx and initrd.vmx; mkinitrd, a lab STAND-IN) in qcow2,
and VMDK with "/" on LVM (EulerOS's layout: /boot a partition, the rest an LVM physical volume made by
real lvm2, its volume vgkvm/root read here without device-mapper and assembled at boot by the guest's
own dracut and LVM).

- ``kvm-drivers image check`` gives the answer ``kvm-drivers check`` gives over SSH for the same tree
  running as a lab host: status, kernel, initrd, missing drivers, declarations.
- Real GRUB boots each image in QEMU before the fix and it fails (no virtio driver in its initrd);
  ``kvm-drivers image fix`` writes an overlay and says it is compliant; real GRUB boots the overlay
  and the probe (put into the booted copies only) reads back root on virtio-blk.
- No trace: every input's bytes unchanged; no loop device, mount or qemu-storage-daemon outlives a
  check or a fix, even killed; images naming other files, in use or missing are errors that say so;
  a hostile image's links, absolute and relative, at the paths the fix writes change nothing here.

Hosts: 127.0.61.x, their own inventory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvm_drivers.image.inplace import BACKUP_DIR
from tests.conftest import ROOT, check_rows
from tests.lab import boot, hosts, images
from tests.lab.bases import BOOT_UUID, ROOT_UUID

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-images")]
# (lab host, disk layout, format)
CASES = [("deb12-itools", "whole", "vmdk"), ("centos7", "split", "qcow2"), ("rocky9-bls", "split", "vhdx"),
         ("ubuntu2204-btrfs", "btrfs", "vpc"), ("deb12-itools-b", "gpt-esp", "raw"),
         ("sles11-vmx", "part", "qcow2"), ("euleros2", "lvm", "vmdk")]  # fmt: skip
IDS = [f"{f}-{layout}" for _, layout, f in CASES]
SAME = ("status", "distro", "family", "version", "generator", "default_kernel", "initrd", "default_missing",
        "not_declared", "setting", "blacklisted")  # fmt: skip
VICTIM = Path("/root/kvm-drivers-victim")  # on this machine: what a hostile image's links point at


def boot_in_fstab(root: Path) -> None:
    """/boot on its own partition (the lab's split disk) in fstab, as an installed system has it."""
    if "/boot" not in (root / "etc/fstab").read_text():
        with open(root / "etc/fstab", "a") as f:
            f.write(f"UUID={BOOT_UUID} /boot ext4 defaults 0 2\n")


def esp_in_fstab(root: Path) -> None:
    """The ESP on /boot/efi in fstab, by its FAT volume id, as Debian's installer writes it."""
    (root / "boot/efi").mkdir(exist_ok=True)
    if "/boot/efi" not in (root / "etc/fstab").read_text():
        with open(root / "etc/fstab", "a") as f:
            f.write(f"UUID={images.ESP_UUID} /boot/efi vfat umask=0077 0 1\n")


def selinux_enforcing(root: Path) -> None:
    """/etc/selinux/config as a RHEL installer writes it: the fix must have the image relabelled."""
    (root / "etc/selinux").mkdir(exist_ok=True)
    (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")


SELINUX = "rocky9-bls"  # the image whose tree has SELinux on


def lvm_root(root: Path) -> None:
    """"/" in LVM volume vgkvm/root (tests/lab/boot.py make_disk, layout lvm), named by its mapper name in
    fstab and on the kernel line, as RHEL's installer writes them; /boot its own partition."""
    mapper = f"/dev/mapper/{boot.LVM_VG}-root"
    (root / "etc/fstab").write_text(f"{mapper} / ext4 defaults 0 0\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\n")
    cfg = root / "boot/grub2/grub.cfg"
    cfg.write_text(cfg.read_text().replace(f"root=UUID={ROOT_UUID}", f"root={mapper} rd.lvm.lv={boot.LVM_VG}/root"))


def spec(base: str, layout: str, n: int) -> hosts.HostSpec:
    h = dataclasses.replace(hosts.variant(base, f"img-{base}", f"127.0.61.{n}"), disk=layout)
    if layout == "lvm":  # lvm2 in the tree, and an initrd that assembles LVM (without virtio)
        h = dataclasses.replace(h, base="bookworm-dracut-lvm")
    extra = {"split": boot_in_fstab, "gpt-esp": esp_in_fstab, "lvm": lvm_root}.get(layout)
    h = dataclasses.replace(h, setup=_both(h.setup, extra)) if extra else h
    return dataclasses.replace(h, setup=_both(h.setup, selinux_enforcing)) if base == SELINUX else h


def _both(first, second):
    def run(root: Path) -> None:
        if first:
            first(root)
        second(root)

    return run


def sha256(path: Path) -> str:
    if not path.is_file():
        return "absent"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvm_drivers", "image", "check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def fix(disk: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = disk.with_suffix(".fix.json")
    proc = subprocess.run([sys.executable, "-m", "kvm_drivers", "image", "fix", str(disk), "--report", str(report),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)  # fmt: skip
    rows = json.loads(report.read_text())["hosts"] if report.exists() else []
    return proc, (rows[0] if rows else {})


def booted_copy(src: Path, raw: Path, made: boot.Disk, tree: Path) -> boot.Disk:
    """A raw copy of an image with the probe as its init, to boot (the boot writes its result there).
    A btrfs disk carries the probe already (make_btrfs), and is read back through a loop mount."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(src), str(raw)], check=True)
    if not made.probe_fs:
        return boot.Disk(raw, "")
    disk = boot.Disk(raw, made.probe_fs.replace(str(made.image), str(raw), 1))
    boot.put_probe(disk.probe_fs, tree)
    return disk


def start_boots(jobs: list[tuple[hosts.HostSpec, boot.Disk, Path]], scratch: Path, log_name: str) -> list:
    """Boots started in the background, each once it holds a busy slot (the failing ones then wait, mostly
    idle, for their initrd's own time limit)."""
    launched = [boot.on_disk(h, disk, {}, tree, scratch, log_name=log_name) for h, disk, tree in jobs]
    for one in launched:
        one.start_soon()
    return launched


@pytest.fixture(scope="module")
def story():
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    work = hosts.STATE / "images"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    specs = [spec(base, layout, n) for n, (base, layout, _) in enumerate(CASES, 1)]
    s: dict = {"inputs": {}, "made": {}, "trees": {h.name: hosts.root(h.name) for h in specs}, "specs": specs}
    running: list = []
    try:
        for h, (_, _, fmt) in zip(specs, CASES):
            hosts.start(h)  # its tree; the image is made of it as it is, with the tree's own init
            made = boot.make_disk(h, s["trees"][h.name], work / f"{h.name}.raw", probe=False)
            disk = work / f"{h.name}.{fmt}"
            if fmt == "raw":
                made.image.rename(disk)
                made = dataclasses.replace(made, image=disk)
            else:
                subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *images.FORMATS[fmt], str(made.image),
                                str(disk)], check=True)  # fmt: skip
                made.image.unlink()
            s["inputs"][h.name], s["made"][h.name] = disk, made
        inv = hosts.write_inventory(specs, "images")
        s["live"] = check_rows(str(inv), hosts.STATE / "reports" / "images-live.json")[1]
        s["sums"] = {n: sha256(p) for n, p in s["inputs"].items()}
        s["loops"], s["mounts"] = images.loop_devices(), images.mounts()
        report = work / "check.json"
        with boot.btrfs_lock():  # the btrfs image is mounted (its UUID is the lab's; another worker may mkfs it)
            s["check"] = image_cli(*map(str, s["inputs"].values()), "--report", str(report))
        s["rows"] = {r["host"]: r for r in json.loads(report.read_text())["hosts"]}
        running = start_boots([(h, booted_copy(s["inputs"][h.name], work / f"{h.name}.before.raw", s["made"][h.name],
                                               s["trees"][h.name]), s["trees"][h.name]) for h in specs],
                              work, "boot-image-before.log")  # fmt: skip
        s["fixes"], s["fix_seconds"] = {}, {}
        for h in specs:  # while the boots run
            started = time.monotonic()
            with boot.btrfs_lock():
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
            one.kill()
        for h in specs:
            hosts.stop(h)
    s["work"] = work
    return s


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_image_check_gives_the_live_hosts_answer(story, case):
    name = f"img-{case[0]}"
    live, image = story["live"][name], story["rows"][str(story["inputs"][name])]
    assert live["status"] == "drifted", live  # a lab host before the deploy: the image is not ready either
    assert {k: image[k] for k in SAME} == {k: live[k] for k in SAME}
    assert image["running_kernel"] == "none: a disk image"
    assert story["check"].returncode == 2, story["check"].stdout + story["check"].stderr


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_image_fails_before_and_boots_through_real_grub_after_the_fix(story, case):
    name = f"img-{case[0]}"
    before, (proc, row), after = story["before"][name], story["fixes"][name], story["after"][name]
    assert not before.ok and boot.NO_ROOT.search(before.cause), before.summary()  # the root disk never came
    assert proc.returncode == 0 and row["status"] == "compliant", proc.stdout + proc.stderr
    assert after.ok, after.summary()  # root on /dev/vda*, virtio_blk bound to it, every fstab entry mounted


def root_listing(story, name: str, image: Path, tmp: Path) -> str:
    """ls -l of / in the root file system of a (converted) output image, read with debugfs."""
    raw = tmp / f"{name}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    made = story["made"][name]
    spec = made.probe_fs.replace(str(made.image), str(raw), 1)
    try:
        return subprocess.run(["debugfs", "-R", "ls -l /", spec], capture_output=True, text=True, check=True).stdout
    finally:
        raw.unlink()


def debugfs(story, name: str, raw: Path, *requests: str) -> list[str]:
    """debugfs's answers to requests on the root file system of a raw copy of lab host name's image."""
    made = story["made"][name]
    spec = made.probe_fs.replace(str(made.image), str(raw), 1)
    return [subprocess.run(["debugfs", "-R", r, spec], capture_output=True, check=True).stdout.decode(
        errors="surrogateescape") for r in requests]  # fmt: skip


def as_raw(image: Path, raw: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    return raw


def test_in_place_changes_the_input_only_once_proven_and_keeps_what_it_changed_inside(story, tmp_path):
    name = "img-deb12-itools"
    proc, row = fix(story["inputs"][name], "--in-place")  # a streamOptimized VMDK: qemu cannot rewrite it
    assert proc.returncode == 4 and "streamOptimized" in row["errors"][0], proc.stderr
    assert sha256(story["inputs"][name]) == story["sums"][name]
    work = tmp_path / "work"
    work.mkdir()
    disk = work / "in-place.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(story["inputs"][name]), str(disk)], check=True)
    first = sha256(disk)
    holder = subprocess.Popen(["sh", "-c", 'exec sleep 60 3<"$0"', str(disk)])  # a copy under way, say
    try:
        time.sleep(0.5)
        proc, row = fix(disk, "--in-place")
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 4 and f"held by process {holder.pid} (sleep)" in row["errors"][0], proc.stderr
    assert sha256(disk) == first
    proc, row = fix(disk, "--in-place")
    assert proc.returncode == 0 and row["status"] == "compliant" and row["host"] == str(disk), proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["in-place.fix.json", "in-place.qcow2"]  # nothing left
    raw, original = as_raw(disk, tmp_path / "fixed.raw"), as_raw(story["inputs"][name], tmp_path / "input.raw")
    (listed,) = debugfs(story, name, raw, f"ls {BACKUP_DIR}")
    assert len(stamps := [x for x in listed.split() if re.fullmatch(r"20\d{6}T\d{6}Z-[0-9a-f]{6}", x)]) == 1, listed
    base = f"{BACKUP_DIR}/{stamps[0]}"
    (manifest,) = debugfs(story, name, raw, f"cat {base}/MANIFEST")
    changed = [m.split(" ", 1)[1] for m in manifest.splitlines() if m.startswith("changed ")]
    assert "/etc/initramfs-tools/modules" in changed, manifest
    assert any(c.startswith("/boot/initrd.img-") for c in changed), manifest
    kept = debugfs(story, name, raw, *(f"cat {base}{c}" for c in changed))
    assert kept == debugfs(story, name, original, *(f"cat {c}" for c in changed))  # the input's own, byte for byte
    assert "virtio_blk" not in kept[changed.index("/etc/initramfs-tools/modules")]
    assert "virtio_blk" in debugfs(story, name, raw, "cat /etc/initramfs-tools/modules")[0]


def test_an_selinux_image_is_relabelled_at_its_first_boot_and_no_other(story, tmp_path):
    for base, wanted in ((SELINUX, True), ("deb12-itools", False)):
        name = f"img-{base}"
        proc, _ = story["fixes"][name]
        assert ("/.autorelabel made" in proc.stdout + proc.stderr) is wanted
        assert (" .autorelabel" in root_listing(story, name, story["work"] / f"{name}.kvm.qcow2", tmp_path)) is wanted
        assert " .autorelabel" not in root_listing(story, name, story["inputs"][name], tmp_path)  # the input as it was


def test_images_are_never_written_and_nothing_outlives_a_check_or_fix(story):
    assert {n: sha256(p) for n, p in story["inputs"].items()} == story["sums"]
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"]
    assert not images.qsd_running()
    assert not [p.name for p in story["work"].iterdir() if ".partial-" in p.name]


def test_a_killed_check_leaves_no_loop_mount_or_export(story):
    name, qcow2 = next((n, p) for n, p in story["inputs"].items() if p.suffix == ".qcow2")
    out = story["work"] / "killed-check.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "kvm_drivers", "image", "check", str(qcow2)], cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    seen = images.loop_devices()  # (asked once per turn: the check may end between two askings)
    while seen == story["loops"] and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # killed while its loop devices are in use (it is reading the image)
        seen = images.loop_devices()
    assert seen != story["loops"], f"the check never set up a loop device: {out.read_text()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20  # the kernel tears the namespaces down
    while (images.loop_devices() != story["loops"] or images.qsd_running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    stuck = images.stuck_exports()
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"] and not images.qsd_running()
    assert not stuck
    assert sha256(qcow2) == story["sums"][name]


def test_images_naming_other_files_or_in_use_are_errors_that_say_so(story, tmp_path):
    raw = next(p for p in story["inputs"].values() if p.suffix == ".raw")
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(raw), "-F", "raw", str(backed)], check=True)
    flat = tmp_path / "flat.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(flat), "1M"],
                   check=True)  # fmt: skip
    held = subprocess.Popen(["qemu-system-x86_64", "-machine", "accel=tcg", "-S", "-display", "none", "-nodefaults",
                             "-drive", f"file={raw},format=raw,if=virtio"])  # a VM, paused: its disk locked
    try:
        time.sleep(2)
        run = image_cli(str(backed), str(flat), str(raw), str(tmp_path / "missing.qcow2"), "--report",
                        str(tmp_path / "r.json"))  # fmt: skip
    finally:
        held.terminate()
        held.wait()
    rows = {r["host"]: r for r in json.loads((tmp_path / "r.json").read_text())["hosts"]}
    assert run.returncode == 4 and {r["status"] for r in rows.values()} == {"error"}
    assert "backing file" in rows[str(backed)]["errors"][0]
    assert "other files" in rows[str(flat)]["errors"][0]
    assert "in use" in rows[str(raw)]["errors"][0]
    assert "cannot be read" in rows[str(tmp_path / "missing.qcow2")]["errors"][0]


def test_output_that_exists_is_refused_and_kept(story):
    name = story["specs"][0].name
    out = story["work"] / f"{name}.kvm.qcow2"
    before = sha256(out)
    proc, _ = fix(story["inputs"][name])
    assert proc.returncode == 1 and "exists" in proc.stderr and sha256(out) == before


def test_hostile_links_at_every_path_the_fix_writes_change_nothing_here(story, tmp_path):
    # The Debian image's declaration, state and initrd paths as links out of it: absolute ones, and
    # relative ones that climb past its root. This machine's files they name are checksummed.
    name = "img-deb12-itools"
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
    name = "img-deb12-itools"
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
    stuck = images.stuck_exports()  # (a killed session's export once hung the machine: session.py _export)
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"]
    assert not stuck
    assert sha256(disk) == story["sums"][name]
    if out.exists():  # killed after it was renamed into place: then it is whole (a partial one has another name)
        assert subprocess.run(["qemu-img", "check", "-q", str(out)]).returncode == 0
