"""Issue 18 on real lab hosts: hosts whose files look compliant but whose real boot lacks virtio.

Each host is a copy of deb12-compliant (or deb12-dracut) with one link of the boot path broken.
The truth comes from the real programs, not from our model: real GRUB boots each host in QEMU
before the deploy (and after it, where the deploy can fix the link), the host's own modprobe and
dracut answer for modules.dep and omit_drivers. kvm-drivers must call none of them compliant:
``drifted`` where the deploy can fix the link (and then the host boots), ``error`` naming the link
where it cannot (and then nothing is changed).

Hosts: 127.0.40.x, their own inventory.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import check_rows, pyinfra
from tests.lab import boot, hosts
from tests.lab import variants as v

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-evidence")]  # one worker: shared hosts and inventory
DEPLOY = "deploys/kvm_drivers.py"
K = "6.1.0-50-amd64"


def make(name: str, n: int, setup, base_host: str = "deb12-compliant") -> hosts.HostSpec:
    return hosts.variant(base_host, f"ev-{name}", f"127.0.40.{n}", setup)


NOINITRD = make("noinitrd", 1, v.default_entry_without_initrd)
CUSTOM = make("custom-cfg", 2, v.custom_cfg_default)
INITRD_BL = make("initrd-blacklist", 3, v.blacklist_left_in_initrd)
CMDLINE = make("cmdline-blacklist", 4, v.cmdline_blacklist)
EMPTY_DEP = make("empty-dep", 5, v.empty_modules_dep)
OMIT = make("dracut-omit", 6, v.dracut_omit_regex, base_host="deb12-dracut")
ALL = [NOINITRD, CUSTOM, INITRD_BL, CMDLINE, EMPTY_DEP, OMIT]
BOOTED = [NOINITRD, CUSTOM, INITRD_BL, CMDLINE]
FIXABLE = [CUSTOM, INITRD_BL]


def sums(h: hosts.HostSpec) -> str:
    return hosts.ssh(h, "cd /boot && find . -type f | sort | xargs sha256sum; sha256sum /etc/initramfs-tools/modules"
                        " /etc/dracut.conf.d/* 2>/dev/null", check=False)  # fmt: skip


@pytest.fixture(scope="module")
def story():
    # its own hosts only: the session's 'lab' fixture (up and down of every lab host) belongs to the
    # deploy story, which runs in the other worker meanwhile
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    for h in ALL:
        hosts.start(h)
    boots: list[boot.AllAtOnce | boot.TwoAtATime] = []
    try:
        inv = hosts.write_inventory(ALL, "evidence")
        s = {"sums_before": {h.name: sums(h) for h in ALL}}
        # the boots before the deploy (each fails: it waits for a root disk) all at once, beside the check
        boots.append(before := boot.AllAtOnce(BOOTED, log_name="boot-before.log"))
        s["check"], s["rows"] = check_rows(str(inv), hosts.STATE / "reports" / "evidence-before.json")
        before.written()  # they have their copies of the hosts: the deploy may start
        s["deploy"] = pyinfra("-y", str(inv), DEPLOY)
        s["sums_after"] = {h.name: sums(h) for h in ALL}
        boots.append(after := boot.TwoAtATime())
        after.start(FIXABLE)  # beside the check after the deploy, which changes nothing
        s["check_after"], s["rows_after"] = check_rows(str(inv), hosts.STATE / "reports" / "evidence-after.json")
        s["modprobe"] = hosts.ssh(EMPTY_DEP, "modprobe -n -v virtio_blk 2>&1; echo rc=$?", check=False)
        s["dracut"] = hosts.ssh(OMIT, f"dracut -q -f --add-drivers 'virtio_blk virtio_pci' /root/t.img {K} 2>&1;"
                                      " lsinitrd /root/t.img | grep -c 'virtio_blk.ko' ; rm -f /root/t.img",
                                check=False, )  # fmt: skip
        s["after"] = after.results()
        s["before"] = before.results()
        yield s
    finally:
        for running in boots:
            running.stop()  # nothing left running (a story that failed half-way)
        for h in ALL:
            hosts.stop(h)


def said(s, h: hosts.HostSpec, rows: str = "rows") -> str:
    row = s[rows][h.name]
    return " | ".join(row.get("errors", []) + row.get("warnings", []))


def test_every_broken_link_fails_the_real_boot_before_the_deploy(story):
    for h in BOOTED:
        result = story["before"][h.name]
        assert not result.ok and result.entry, (h.name, result.summary())


def test_default_entry_without_initrd_is_an_error_and_untouched(story):
    result = story["before"][NOINITRD.name]
    # real GRUB boots the default entry's own lines: no initrd is loaded, the kernel cannot find root
    assert result.entry == f"Debian GNU/Linux, with Linux {K}" and result.initrd == "", result.summary()
    assert "Kernel panic" in result.log or "VFS" in result.log
    assert story["rows"][NOINITRD.name]["status"] == "error"
    assert "without an initrd" in said(story, NOINITRD)
    assert story["sums_before"][NOINITRD.name] == story["sums_after"][NOINITRD.name]


def test_custom_cfg_entry_is_what_boots_and_the_deploy_fixes_its_initrd(story):
    before, after = story["before"][CUSTOM.name], story["after"][CUSTOM.name]
    # real GRUB sources custom.cfg (41_custom) and its 'set default' wins
    assert before.entry == v.CUSTOM_TITLE and "/boot/initrd-custom.img" in before.initrd.split(), before.summary()
    assert story["rows"][CUSTOM.name]["status"] == "drifted"
    assert "initrd-custom.img" in json.dumps(story["rows"][CUSTOM.name])
    assert after.ok and after.entry == v.CUSTOM_TITLE, after.summary()
    assert story["rows_after"][CUSTOM.name]["status"] == "compliant"


def test_blacklist_left_inside_the_initrd_is_drift_and_the_rebuild_drops_it(story):
    before, after = story["before"][INITRD_BL.name], story["after"][INITRD_BL.name]
    assert "ALERT!" in before.cause, before.summary()  # the initrd's own modprobe.d stops virtio_blk
    assert story["rows"][INITRD_BL.name]["status"] == "drifted"
    assert "install virtio_blk /bin/false" in said(story, INITRD_BL)
    assert after.ok, after.summary()
    assert story["rows_after"][INITRD_BL.name]["status"] == "compliant"


def test_blacklist_on_the_kernel_line_is_an_error_and_untouched(story):
    before = story["before"][CMDLINE.name]
    # the same initrd boots on deb12-compliant; here the kernel refuses virtio_blk: no /dev/vda
    assert not before.ok and "ALERT!" in before.cause, before.summary()
    assert story["rows"][CMDLINE.name]["status"] == "error"
    assert "module_blacklist=virtio_blk" in said(story, CMDLINE)
    assert story["sums_before"][CMDLINE.name] == story["sums_after"][CMDLINE.name]


def test_empty_modules_dep_is_an_error(story):
    assert "rc=0" not in story["modprobe"], story["modprobe"]  # the host's own modprobe finds no virtio_blk
    assert story["rows"][EMPTY_DEP.name]["status"] == "error"
    assert "modules.dep does not list it" in said(story, EMPTY_DEP)
    assert story["sums_before"][EMPTY_DEP.name] == story["sums_after"][EMPTY_DEP.name]


def test_dracut_omit_pattern_is_an_error_and_real_dracut_agrees(story):
    assert story["dracut"].strip().splitlines()[-1] == "0", story["dracut"]  # real dracut leaves virtio_blk out
    assert story["rows"][OMIT.name]["status"] == "error"
    assert "omit_drivers pattern 'virtio.*'" in said(story, OMIT)


def test_the_check_exit_code_says_not_checked(story):
    assert story["check"].returncode == 4, story["check"].stdout + story["check"].stderr
    assert story["deploy"].returncode != 0
    for h in (NOINITRD, CMDLINE, EMPTY_DEP, OMIT):
        assert f"[{h.name}]" in story["deploy"].output and "nothing was changed" in story["deploy"].output
