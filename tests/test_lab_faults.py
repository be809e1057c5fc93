"""Fault injection on real lab hosts: whatever fails, the host keeps the initrd it had (or a
verified new one), its configuration is rolled back, and a rerun completes the job.

Each scenario runs on its own hosts (127.0.30.x), with its own inventory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kvm_drivers.facts import cache
from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.settings import wanted_drivers
from tests.conftest import check_cli, pyinfra
from tests.lab import boot, hosts

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-faults")]  # one worker: shared hosts and inventory
DEPLOY = "deploys/kvm_drivers.py"
IMG = "/boot/initrd.img-6.1.0-50-amd64"
MODULES = "/etc/initramfs-tools/modules"


def make(name: str, base_host: str, n: int, setup=None) -> hosts.HostSpec:
    """A copy of a lab host (its own setup, then setup's fault) on 127.0.30.n."""
    return hosts.variant(base_host, f"fault-{name}", f"127.0.30.{n}", setup)


def ssh(h: hosts.HostSpec, cmd: str, check: bool = True) -> str:
    return hosts.ssh(h, cmd, check, timeout=120)


def state(h: hosts.HostSpec) -> dict[str, str]:
    """Checksums of /boot files and the declaration files: what must not change on failure."""
    out = ssh(h, f"sha256sum /boot/* {MODULES} /etc/dracut.conf.d/* 2>/dev/null; ls /boot", check=False)
    return {"sums": out}


def small_boot(root: Path) -> None:
    """/boot on a size-limited file system holding just what it has now plus 1 MiB."""
    used = sum(p.stat().st_size for p in (root / "boot").rglob("*") if p.is_file())
    tmp = root.parent / "bootcopy"
    subprocess.run(["cp", "-a", str(root / "boot"), str(tmp)], check=True)
    size_kib = used // 1024 + 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(root / "boot")], check=True)
    subprocess.run(["cp", "-a", f"{tmp}/.", str(root / "boot")], check=True)
    subprocess.run(["rm", "-rf", str(tmp)], check=True)


def test_full_boot_fails_cleanly_and_still_boots_as_before(started):
    h = make("fullboot", "deb12-itools", 1, setup=small_boot)
    inv = started(h)
    before = state(h)
    run = pyinfra("-y", str(inv), DEPLOY)
    assert run.returncode != 0
    assert f"[{h.name}]" in run.output and "not enough free space in /boot" in run.output
    assert "nothing was changed" in run.output
    assert state(h) == before
    result = boot.boot(h)
    assert not result.ok and "ALERT!  /dev/vda does not exist" in result.log  # exactly as before


BROKEN_HOOK = """#!/bin/sh
# lab fault injection: a broken initramfs-tools hook
[ "$1" = prereqs ] && exit 0
echo "broken-hook: simulated failure" >&2
exit 1
"""
KILL_HOOK = """#!/bin/sh
# lab fault injection: SIGKILL the initrd builder half-way through
[ "$1" = prereqs ] && exit 0
kill -9 $PPID
sleep 5
"""


@pytest.mark.parametrize("kind,hook", [("toolfails", BROKEN_HOOK), ("killed", KILL_HOOK)])
def test_rebuild_failure_keeps_old_initrd_rolls_back_config_and_rerun_completes(started, kind, hook):
    def inject(root: Path) -> None:
        p = root / "etc/initramfs-tools/hooks/zz-fault"
        p.write_text(hook)
        p.chmod(0o755)

    h = make(kind, "deb12-itools", 2 if kind == "toolfails" else 3, setup=inject)
    inv = started(h)
    before = state(h)
    run = pyinfra("-y", str(inv), DEPLOY)
    assert run.returncode != 0
    assert f"[{h.name}]" in run.output and "initramfs-tools failed for kernel 6.1.0-50-amd64" in run.output
    if kind == "toolfails":
        assert "broken-hook: simulated failure" in run.output  # the tool's own error output
    assert f"restored {MODULES}" in run.output
    assert state(h) == before  # old initrd in place, config rolled back, no temp file left
    ssh(h, "rm /etc/initramfs-tools/hooks/zz-fault")
    rerun = pyinfra("-y", str(inv), DEPLOY)
    assert rerun.returncode == 0, rerun.output
    assert ssh(h, f"grep -c '^virtio_blk$' {MODULES}").strip() == "1"
    assert boot.boot(h).ok


def test_unreachable_host_mid_run_others_finish_and_rerun_completes(started):
    victim = make("unreach", "deb12-dracut", 4)
    others = [make(f"peer{i}", "deb12-itools", 4 + i) for i in (1, 2)]
    inv = started(victim, *others)
    proc = subprocess.Popen(["python3", "-m", "pyinfra", "-y", str(inv), DEPLOY], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    # wait until the victim's rebuild is under way, then cut it off (its namespace dies with sshd)
    deadline = time.monotonic() + 300
    while not (hosts.root(victim.name) / f"{IMG[1:]}.kvm-drivers.new").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    hosts.stop(victim)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0
    assert f"[{victim.name}]" in out
    for peer in others:
        assert ssh(peer, f"grep -c '^virtio_blk$' {MODULES}").strip() == "1"
    hosts.start(victim, fresh=False)  # back again, with whatever the cut left behind
    assert "initrd.img-6.1.0-50-amd64" in ssh(victim, "ls /boot")
    rerun = pyinfra("-y", str(inv), DEPLOY)
    assert rerun.returncode == 0, rerun.output
    assert boot.boot(victim).ok


def test_two_runs_at_once_rebuild_once(started):
    h = make("twice", "deb12-dracut", 8)
    inv = started(h)
    cmd = ["python3", "-m", "pyinfra", "-y", str(inv), DEPLOY]
    root = Path(__file__).parent.parent
    a = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    b = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_a, _ = a.communicate(timeout=900)
    out_b, _ = b.communicate(timeout=900)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    log = ssh(h, "cat /run/kvm-drivers/log")  # the root-only state directory
    assert len(log.strip().splitlines()) == 1, log  # rebuilt exactly once
    assert "rebuilt /boot/initrd.img-6.1.0-50-amd64" in log
    assert boot.boot(h).ok


def test_check_cli_unreachable_and_stuck_hosts_are_errors(started, tmp_path):
    up = make("check-up", "deb12-itools", 12)
    gone = make("check-gone", "deb12-itools", 13)
    stuck = make("check-stuck", "deb12-itools", 14)
    inv = started(up, gone, stuck)
    hosts.stop(gone)
    pid = hosts.sshd_pid(stuck.address)
    os.kill(pid, signal.SIGSTOP)  # accepts TCP connections, never answers
    try:
        run = check_cli(str(inv), "--timeout", "8", "--report", f"{tmp_path}/r.json", "--report", f"{tmp_path}/r.xml")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert run.returncode == 4, run.stdout + run.stderr
    rows = {r["host"]: r for r in json.loads((tmp_path / "r.json").read_text())["hosts"]}
    assert rows[up.name]["status"] == "drifted"
    assert rows[gone.name]["status"] == "error" and rows[gone.name]["errors"][0].startswith("unreachable")
    assert rows[stuck.name]["status"] == "error", rows[stuck.name]
    assert re.search(r"timed out|unreachable", rows[stuck.name]["errors"][0])
    assert f'name="{stuck.name}"' in (tmp_path / "r.xml").read_text()


def test_unchanged_answer_until_anything_the_facts_read_changes(started):
    """The host answers "unchanged" (our cached copy is used) only while nothing it would
    report has changed: every kind of change below must bring a full answer."""
    h = make("fingerprint", "deb12-itools", 11)
    started(h)

    def gather(seen: str) -> str:
        return ssh(h, hosts.in_sh(kd.gather_command(wanted_drivers("debian", None, None), [], seen).get_raw_value()))

    def fingerprint(out: str) -> str:
        return re.search(r"^@@KVM (?:fingerprint|unchanged) (\S*)$", out, re.M).group(1)

    cold = gather("")
    fp = fingerprint(cold)
    assert fp, "an ext4/overlay host has nanosecond ctimes: it must get a fingerprint"
    assert f"@@KVM unchanged {fp}" in gather(fp)
    # The first warm run tells the host which initrd listings it holds and the paths its grub.cfg
    # named, as gather_state sends them: still the same fingerprint.
    known = sorted(re.findall(r"^key (\S+)$", cold, re.M)) + cache.watched(parse_snapshot(cold.splitlines()))
    assert len(known) >= 3, known
    warm = ssh(h, hosts.in_sh(kd.gather_command(wanted_drivers("debian", None, None), known, fp).get_raw_value()))
    assert f"@@KVM unchanged {fp}" in warm
    changes = [
        f"touch {IMG}",  # the initrd rewritten (here: only its times)
        f"cat {IMG} > /tmp/copy && cat /tmp/copy > {IMG}",  # rewritten in place, same bytes
        f"echo virtio_blk >> {MODULES}",  # a declaration
        "echo 'blacklist virtio_blk' > /etc/modprobe.d/zz-test.conf",  # a new modprobe.d file
        "rm /etc/modprobe.d/zz-test.conf",
        "sed -i 's/set default=\"0\"/set default=\"1\"/' /boot/grub/grub.cfg",  # the bootloader default
        "mkdir -p /etc/dracut.conf.d && echo 'hostonly=yes' > /etc/dracut.conf.d/50-test.conf",
        "mv /usr/bin/lsinitramfs /usr/bin/lsinitramfs.off",  # a tool gone
        "cp -a /lib/modules/6.1.0-50-amd64 /lib/modules/6.1.0-99-amd64",  # another kernel
    ]
    for change in changes:
        ssh(h, change)
        out = gather(fp)
        assert "@@KVM unchanged" not in out, change
        assert "@@KVM end" in out
        fp = fingerprint(out)
        assert fp and f"@@KVM unchanged {fp}" in gather(fp), change
    # GRUB rewrites grubenv at boot itself (save_env), past the kernel: no stat shows it, so its
    # text is in the fingerprint (escaped), not its stat.
    ssh(h, "{ printf '# GRUB Environment Block\\nsaved_entry=Debian GNU/Linux, 50%%\\n'; "
           "head -c 990 /dev/zero | tr '\\0' '#'; } > /boot/grub/grubenv")  # fmt: skip
    fp = fingerprint(gather(fp))
    assert "/boot/grub/grubenv:saved_entry=Debian%20GNU/Linux%2C%2050%25" in fp.split(","), fp


def test_a_bootloader_path_through_a_link_pointed_elsewhere_brings_a_full_answer(started):
    """grub.cfg boots /initrd.img, a link: the paths the bootloader names travel back with the known
    keys and are stat'ed through the link, so pointing it at another image shows."""
    h = make("fp-link", "deb12-itools", 12)
    started(h)
    ssh(h, f"cp {IMG} /boot/initrd.img-other && ln -sfn {IMG[1:]} /initrd.img && "
           f"sed -i 's|initrd\t{IMG}|initrd\t/initrd.img|' /boot/grub/grub.cfg")  # fmt: skip
    drivers = wanted_drivers("debian", None, None)

    def gather(known: list[str], seen: str) -> str:
        return ssh(h, hosts.in_sh(kd.gather_command(drivers, known, seen).get_raw_value()))

    cold = gather([], "")
    snap = parse_snapshot(cold.splitlines())
    assert snap.refs.get("/initrd.img") == IMG, snap.refs
    known = sorted(re.findall(r"^key (\S+)$", cold, re.M)) + cache.watched(snap)
    assert "/initrd.img" in known
    first = gather(known, snap.fingerprint)  # the link is fingerprinted from now on: one full answer
    fp = re.search(r"^@@KVM fingerprint (\S+)$", first, re.M).group(1)
    assert f"@@KVM unchanged {fp}" in gather(known, fp)
    ssh(h, "ln -sfn boot/initrd.img-other /initrd.img")
    again = gather(known, fp)
    assert "@@KVM unchanged" not in again and "@@KVM ref /initrd.img /boot/initrd.img-other" in again
