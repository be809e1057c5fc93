"""Issue 21, the check: ``kvm-drivers image check`` on disk images made from lab hosts' trees
(tests/lab/images.py), in every format and layout the issue names, gives the answer that
``kvm-drivers check`` gives over SSH for the same tree running as a lab host: the same status,
kernel, initrd, missing drivers, declarations. And it leaves no trace: every image's bytes are
unchanged, no loop device, mount or qemu-storage-daemon outlives it, even when it is killed.

Hosts: 127.0.60.x, their own inventory.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, check_rows
from tests.lab import hosts, images

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-images")]
# (lab host, layout, format): every format and layout of the issue, from trees of several families
CASES = [
    ("deb12-itools", "whole", "vmdk"),  # Debian 12, initramfs-tools; VMware's streamOptimized export
    ("centos7", "split", "qcow2"),  # CentOS 7 release files, dracut, /boot its own partition
    ("rocky9-bls", "split", "vpc"),  # BLS entries; VHD
    ("deb12-itools-b", "gpt-esp", "raw"),  # UEFI layout: GPT, ESP on /boot/efi
    ("ubuntu2204-btrfs", "btrfs", "vhdx"),  # btrfs, "/" in subvolume @
]
SAME = ("status", "distro", "family", "version", "generator", "default_kernel", "initrd", "default_missing",
        "not_declared", "setting", "blacklisted")  # fmt: skip


def image_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvm_drivers", "image", "check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def qsd_running() -> bool:
    return subprocess.run(["pgrep", "-f", "^qemu-storage-daemon "], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def story():
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    specs = [hosts.variant(base, f"img-{base}", f"127.0.60.{n}") for n, (base, _, _) in enumerate(CASES, 1)]
    work = hosts.STATE / "images"
    work.mkdir(parents=True, exist_ok=True)
    for h in specs:
        hosts.start(h)
    try:
        inv = hosts.write_inventory(specs, "images")
        s: dict = {"live": check_rows(str(inv), hosts.STATE / "reports" / "images-live.json")[1]}
        s["paths"] = {h.name: images.make_image(hosts.root(h.name), work / f"{h.name}.{fmt}", layout, fmt)
                      for h, (_, layout, fmt) in zip(specs, CASES)}  # fmt: skip
    finally:
        for h in specs:
            hosts.stop(h)
    s["sums"] = {p: sha256(p) for p in s["paths"].values()}
    s["loops"], s["mounts"] = images.loop_devices(), images.mounts()
    report = work / "report.json"
    s["run"] = image_cli(*map(str, s["paths"].values()), "--report", str(report))
    s["rows"] = {r["host"]: r for r in json.loads(report.read_text())["hosts"]}
    s["work"] = work
    return s


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{layout}" for _, layout, f in CASES])
def test_image_check_gives_the_live_hosts_answer(story, case):
    name = f"img-{case[0]}"
    live, image = story["live"][name], story["rows"][str(story["paths"][name])]
    assert live["status"] == "drifted", live  # a lab host before the deploy: the image is not ready either
    assert {k: image[k] for k in SAME} == {k: live[k] for k in SAME}
    assert image["running_kernel"] == "none: a disk image"
    assert story["run"].returncode == 2, story["run"].stdout + story["run"].stderr


def test_images_are_read_only_and_nothing_outlives_the_check(story):
    assert {p: sha256(p) for p in story["paths"].values()} == story["sums"]
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"]
    assert not qsd_running()


def test_a_killed_check_leaves_no_loop_mount_or_export(story):
    qcow2 = next(p for p in story["paths"].values() if p.suffix == ".qcow2")
    proc = subprocess.Popen([sys.executable, "-m", "kvm_drivers", "image", "check", str(qcow2)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while images.loop_devices() == story["loops"] and time.monotonic() < deadline:
        time.sleep(0.05)  # killed while its loop devices are in use (it is reading the image)
    assert images.loop_devices() != story["loops"], "the check never set up a loop device"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20  # the kernel tears the namespaces down
    while (images.loop_devices() != story["loops"] or qsd_running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert images.loop_devices() == story["loops"] and images.mounts() == story["mounts"] and not qsd_running()
    assert sha256(qcow2) == story["sums"][qcow2]


def test_images_naming_other_files_or_in_use_are_errors_that_say_so(story, tmp_path):
    raw = next(p for p in story["paths"].values() if p.suffix == ".raw")
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
