"""Hostile hosts, bad inventory data and interrupted runs, on real lab hosts (issue #11): one bad
host fails alone with a clear message, nothing is lost, and nothing is ever called compliant
that was not fully checked.

Each scenario runs on its own hosts (127.0.31.x), with its own inventory.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from kvm_drivers import hostside
from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations import kvm_drivers as ops
from kvm_drivers.operations.settings import wanted_drivers
from tests.conftest import check_cli, pyinfra
from tests.lab import hosts
from tests.planning import analyse

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-hostile")]  # one worker: shared hosts and inventory
DEPLOY = "deploys/kvm_drivers.py"
MODULES = "/etc/initramfs-tools/modules"
BROKEN_HOOK = """#!/bin/sh
# lab fault injection: a broken initramfs-tools hook
[ "$1" = prereqs ] && exit 0
echo "broken-hook: simulated failure" >&2
exit 1
"""
# SIGKILL the whole kvm-drivers rebuild (the script and pyinfra's shell around it), as a
# reboot or an OOM kill would: no trap runs.
KILL_RUN_HOOK = """#!/bin/sh
[ "$1" = prereqs ] && exit 0
for p in /proc/[0-9]*; do
    grep -q kvm-rebuild "$p/cmdline" 2>/dev/null && kill -9 "${p#/proc/}"
done
sleep 5
"""


def make(name: str, n: int, setup=None, base_host: str = "deb12-itools", **data) -> hosts.HostSpec:
    return hosts.variant(base_host, f"hostile-{name}", f"127.0.31.{n}", setup, **data)


ssh = hosts.ssh


def hook(text: str):
    def inject(root: Path) -> None:
        p = root / "etc/initramfs-tools/hooks/zz-fault"
        p.write_text(text)
        p.chmod(0o755)

    return inject


def grub_initrd_is_etc_shadow(root: Path) -> None:
    cfg = root / "boot/grub/grub.cfg"
    cfg.write_text(cfg.read_text().replace("initrd\t/boot/initrd.img-", "initrd\t/etc/shadow #"))


def odd_names(root: Path) -> None:
    (root / "etc/modprobe.d").mkdir(exist_ok=True)
    (root / "etc/modprobe.d" / "caf\xe9.conf".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(
        b"# caf\xe9\nblacklist virtio_blk\n"
    )


def latin1_blacklist(root: Path) -> None:
    (root / "etc/modprobe.d").mkdir(exist_ok=True)
    (root / "etc/modprobe.d/latin.conf").write_bytes(b"blacklist virtio_net # d\xe9sactiv\xe9\n")


def test_bad_hosts_and_bad_data_fail_alone_with_clear_messages(started):
    shadow = make("shadow", 1, grub_initrd_is_etc_shadow)
    baddata = make("baddata", 2, kvm_drivers="virtio_blk")  # a string, not a list
    typo = make("typo", 3, kvm_kernels=["6.1.0-51-amd64"])
    odd = make("oddname", 4, odd_names)
    ok = make("ok", 5)
    # Low: non-UTF-8 bytes made pyinfra's decoder fail (and such a line could then never be removed)
    latin = make("latin", 11, latin1_blacklist, kvm_remove_blacklists=True)
    badflag = make("badflag", 12, kvm_remove_blacklists="false", kvm_gather_timeout="300")
    inv = started(shadow, baddata, typo, odd, ok, latin, badflag)
    before = ssh(shadow, "sha256sum /etc/shadow; stat -c '%U:%G %a' /etc/shadow")
    run = pyinfra("-y", str(inv), DEPLOY)
    assert run.returncode != 0
    out = run.output
    assert "Traceback" not in out
    assert f"[{shadow.name}]" in out and "'/etc/shadow' as an initrd: not a file in /boot" in out
    assert ssh(shadow, "sha256sum /etc/shadow; stat -c '%U:%G %a' /etc/shadow") == before
    assert f"[{baddata.name}]" in out and "kvm_drivers must be a list of module names" in out
    assert f"[{typo.name}]" in out and "kvm_kernels names kernels that are not installed: 6.1.0-51-amd64" in out
    assert f"[{odd.name}]" in out and "a file name that is not plain ASCII" in out
    for bad in (shadow, baddata, typo, odd):  # refused: nothing changed
        assert "virtio" not in ssh(bad, f"cat {MODULES}"), bad.name
    assert ssh(ok, f"grep -c '^virtio_blk$' {MODULES}").strip() == "1"  # the good host was fixed
    assert f"[{latin.name}]" in out and "/etc/modprobe.d/latin.conf line 1 stops virtio_net loading" in out
    assert ssh(latin, f"grep -c '^virtio_blk$' {MODULES}").strip() == "1"
    assert ssh(latin, "grep -c '^# disabled by kvm-drivers.*blacklist virtio_net' /etc/modprobe.d/latin.conf") == "1\n"
    assert f"[{badflag.name}]" in out and "kvm_remove_blacklists must be True or False" in out
    assert "kvm_gather_timeout must be a number of seconds" in out
    # the drift check never calls them compliant
    report = hosts.STATE / "hostile-report.json"
    drift = check_cli(str(inv), "--report", str(report))
    rows = {r["host"]: r for r in json.loads(report.read_text())["hosts"]}
    assert drift.returncode == 4, drift.stdout + drift.stderr
    assert {n: r["status"] for n, r in rows.items()} == {
        shadow.name: "error", baddata.name: "error", typo.name: "error", odd.name: "error", ok.name: "compliant",
        latin.name: "compliant", badflag.name: "error",
    }  # fmt: skip


def vendor_blacklist(root: Path) -> None:
    (root / "usr/lib/modprobe.d").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/modprobe.d/kvm-vendor.conf").write_text(
        "# vendor defaults\nblacklist virtio_blk\noptions loop max_loop=8\ninstall virtio_net /bin/false\n"
    )
    (root / "usr/local/lib/modprobe.d").mkdir(parents=True, exist_ok=True)  # kmod reads it too
    (root / "usr/local/lib/modprobe.d/site.conf").write_text("blacklist virtio_scsi\n")
    # a backup kept for a kernel removed since, and a post-update hook as flash-kernel installs one
    (root / "boot/initrd.img-5.10.0-9-amd64.kvm-drivers.bak").write_bytes(b"\x1f\x8b old")
    hooks = root / "etc/initramfs/post-update.d"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "zz-lab").write_text('#!/bin/sh\necho "$@" >> /root/post-update.log\n')
    (hooks / "zz-lab").chmod(0o755)


def test_vendor_file_with_several_blacklist_lines_has_all_of_them_disabled(started, tmp_path):
    # High: each line's sed rewrote the same /etc override from the vendor file: only the last
    # line ended up disabled, and the run reported success.
    h = make("vendor", 6, vendor_blacklist, kvm_remove_blacklists=True)
    inv = started(h)
    run = pyinfra("-y", str(inv), DEPLOY)
    assert run.returncode == 0, run.output
    override = ssh(h, "cat /etc/modprobe.d/kvm-vendor.conf")
    assert "# disabled by kvm-drivers (needed to boot on KVM): blacklist virtio_blk" in override
    assert "# disabled by kvm-drivers (needed to boot on KVM): install virtio_net /bin/false" in override
    assert "\noptions loop max_loop=8\n" in override
    assert ssh(h, "cat /etc/modprobe.d/site.conf").startswith("# disabled by kvm-drivers")
    # Low (by reading): stale backups outlived their kernels; update-initramfs's hooks were skipped
    assert "5.10.0-9" not in ssh(h, "ls /boot")
    assert ssh(h, "cat /root/post-update.log") == "6.1.0-50-amd64 /boot/initrd.img-6.1.0-50-amd64\n"
    drift = check_cli(str(inv), "--report", f"{tmp_path}/r.json")
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_killed_run_then_admin_edit_then_failing_run_keeps_the_admin_line(started):
    # High: the rollback copy of a SIGKILLed run was later "restored" over the admin's edit.
    h = make("killed", 7, hook(KILL_RUN_HOOK))
    inv = started(h)
    first = pyinfra("-y", str(inv), DEPLOY)
    assert first.returncode != 0  # killed between the declaration and the rebuild's end
    assert ssh(h, f"grep -c '^virtio_blk$' {MODULES}").strip() == "1"
    ssh(h, f"echo admin_line >> {MODULES}")  # the admin edits the declaration file
    ssh(h, "cat > /etc/initramfs-tools/hooks/zz-fault", inp=BROKEN_HOOK)
    second = pyinfra("-y", str(inv), DEPLOY)
    assert second.returncode != 0 and "broken-hook: simulated failure" in second.output
    text = ssh(h, f"cat {MODULES}")
    assert "admin_line" in text and "virtio_blk" in text
    assert ssh(h, "ls /etc/initramfs-tools/ /boot | grep -c kvm-drivers || true").strip() == "0"
    ssh(h, "rm /etc/initramfs-tools/hooks/zz-fault")
    third = pyinfra("-y", str(inv), DEPLOY)
    assert third.returncode == 0, third.output
    assert "admin_line" in ssh(h, f"cat {MODULES}")


def test_dropped_channel_during_a_failing_rebuild_still_cleans_up_and_rolls_back(started):
    # High: SIGPIPE on a dropped channel killed the script before its cleanup.
    h = make("sigpipe", 8, hook(BROKEN_HOOK))
    started(h)
    out = ssh(h, hosts.in_sh(kd.gather_command(wanted_drivers("debian", None, None)).get_raw_value()))
    info = analyse(parse_snapshot(out.splitlines()))
    before = ssh(h, f"cat {MODULES}")
    path, content = ops.declaration(info.state, info.declare)
    run_id = ops.new_run_id()
    write = ["sh", "-c", hostside.WRITE, "kvm-write", path, content, "1", info.declared.current, run_id]
    ssh(h, " ".join(shlex.quote(a) for a in write))
    assert "virtio_blk" in ssh(h, f"cat {MODULES}")
    kernel = info.state.kernels[0]
    rebuild = ops.rebuild_command(info.generator, kernel, info.kernels[0].needed, run_id=run_id).get_raw_value()
    # every byte the script writes goes to a pipe nobody reads any more (the channel is gone)
    ssh(h, f"( {rebuild} ) 2>&1 | true", check=False)
    assert ssh(h, f"cat {MODULES}") == before  # rolled back
    assert ssh(h, "ls /boot /run/kvm-drivers | grep -c -e kvm-drivers.new -e rollback || true").strip() == "0"
    # review finding: a link among the image's directories led outside /boot
    ssh(h, "ln -s /etc /boot/sub")
    kernel = dataclasses.replace(kernel, initrd="/boot/sub/shadow")
    out = ssh(h, ops.rebuild_command(info.generator, kernel, info.kernels[0].needed).get_raw_value() + " 2>&1 || true")
    assert "a directory of it is a link" in out and ssh(h, "stat -c %s /etc/shadow").strip() != "0"


def fifo_release(root: Path) -> None:
    (root / "etc/os-release").unlink()
    subprocess.run(["mkfifo", str(root / "etc/kvm-fifo")], check=True)
    (root / "etc/os-release").symlink_to("kvm-fifo")  # reading it never ends


def test_host_that_never_answers_is_an_error_after_its_time_limit(started, tmp_path):
    # Medium: a host that never answered stalled the whole run.
    hung = make("hung", 9, fifo_release, kvm_gather_timeout=5)
    ok = make("answers", 10)
    inv = started(hung, ok)
    start = time.monotonic()
    run = check_cli(str(inv), "--report", f"{tmp_path}/r.json", timeout=300)
    assert time.monotonic() - start < 120, run.stdout + run.stderr
    rows = {r["host"]: r for r in json.loads((tmp_path / "r.json").read_text())["hosts"]}
    assert run.returncode == 4
    assert rows[hung.name]["status"] == "error" and rows[ok.name]["status"] == "drifted"
