"""Issue 20 on real lab hosts: a server whose drivers are right but whose root is named as Xen named
it (root=/dev/xvda2 in its BLS entry, /dev/xvda2 / and /dev/xvdb1 /data in fstab). Real GRUB (2.14,
blscfg) boots it in QEMU before the deploy: it stops at the initrd's "ALERT! /dev/xvda2 does not
exist". After the deploy the boot proof also mounts every fstab entry with the real mount (the
data disk is a second virtio disk, tests/lab/boot.py). The check says drifted, with a
device-name row that blocks boot and names kvm_fix_device_names. Without the opt-in the deploy
changes nothing and fails the host naming the line; with it, the entry's root= and fstab's devices
become UUID= (the UUIDs blkid gives, proven with findfs: both STAND-INS, tests/lab/variants.py, as a lab
host has no block device), and real GRUB then boots it.

More blockers, each booted for real before and after:
- bp-efi-no-fallback: Debian's ESP with EFI/debian/ only (grub-install's default, no --removable).
  OVMF with empty NVRAM, as an imported image has it, finds nothing to boot. The check says
  efi-fallback blocks boot; with kvm_fix_efi_fallback the deploy copies Debian's GRUB to
  EFI/BOOT/BOOTX64.EFI, and the firmware then boots it. (A lab host says it booted by UEFI through a
  /sys/firmware/efi STAND-IN, tests/lab/hosts.py.)
- bp-resume-name: resume=/dev/sda2 on the BLS entry. The real boot shows initramfs-tools waiting 30 s
  for it and booting on, so the row is advice there, not a blocker (systemd's initrd waits for ever).
- bp-xen-data: root by UUID, only /dev/xvdb1 /data in fstab: the real boot reaches its root and the
  real mount fails on /data; kvm_fix_device_names gives it UUID=, and every fstab entry then mounts.
- bp-resume-systemd: the same resume= where the initrd is dracut's with systemd: it waits for /dev/sda2
  for ever ("Job dev-sda2.device/start running (... / no limit)"), so the row blocks boot there;
  kvm_fix_device_names names the swap partition by UUID (blkid and findfs STAND-INS), and it boots.
- bp-nic-rule: a udev rule naming eth0 by the old MAC, predictable names on; the probe runs the real
  udev: the NIC is ens3 before, eth0 (as configured) after kvm_fix_network.
- bp-kernel-no-virtio: SLES 11 menu.lst whose default kernel has no virtio (a STAND-IN for kernel-xen,
  tests/lab/variants.py); kvm_set_default_kernel makes the other kernel the default, which boots.

Hosts: 127.0.50.x, their own inventory.
"""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from tests.conftest import check_rows, pyinfra
from tests.lab import boot, hosts
from tests.lab import variants as v
from tests.lab.bases import ROOT_UUID

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-boot-path")]  # one worker: shared hosts and inventory
DEPLOY = "deploys/kvm_drivers.py"


def make(name: str, n: int, setup, **data: object) -> hosts.HostSpec:
    h = hosts.variant("deb12-compliant", f"bp-{name}", f"127.0.50.{n}", setup, **data)
    return dataclasses.replace(h, loader="bls", disk="split")  # GRUB 2.14 blscfg; /boot its own partition


XEN_ROOT = make("xen-root", 1, v.xen_root_name, kvm_fix_device_names=True)
NO_OPT_IN = make("xen-root-no-opt-in", 2, v.xen_root_name, kvm_drivers_extra=[])
# booted by OVMF with empty NVRAM, as an imported image is: only EFI/BOOT/BOOTX64.EFI can be found
EFI = dataclasses.replace(make("efi-no-fallback", 3, v.efi_without_fallback, kvm_fix_efi_fallback=True),
                          loader="uefi", disk="esp")
RESUME = make("resume-name", 4, v.resume_name)  # no opt-in: the real boot shows what a gone resume= costs
NIC = make("nic-rule", 5, v.nic_rule_by_mac, kvm_fix_network=True)  # its boot probe runs the real udev
# two kernels, the default one without virtio (a stand-in for Xen's kernel-xen): GRUB legacy, SLES 11
KERNEL = dataclasses.replace(
    hosts.variant("deb12-2kernels", "bp-kernel-no-virtio", "127.0.50.6", v.default_kernel_without_virtio,
                  kvm_kernels="default", kvm_set_default_kernel=True), loader="legacy", disk="part")  # fmt: skip
DATA = make("xen-data", 7, v.xen_data_name, kvm_fix_device_names=True)  # root by UUID: only fstab's /data is Xen's
# resume= where the initrd is systemd's (dracut): /dev/sda2 was its swap, partition 3 of the lab's disk
RESUME_SYSTEMD = dataclasses.replace(
    hosts.variant("deb12-dracut", "bp-resume-systemd", "127.0.50.8", v.resume_name_systemd,
                  kvm_fix_device_names=True), loader="bls", disk="split")  # fmt: skip
ALL = [XEN_ROOT, NO_OPT_IN, EFI, RESUME, NIC, KERNEL, DATA, RESUME_SYSTEMD]
BEFORE = [h for h in ALL if h is not NO_OPT_IN]  # booted before the deploy
XEN = [XEN_ROOT, NO_OPT_IN]


def entry_text(h: hosts.HostSpec) -> str:
    """What the opt-in fixes may change: BLS entries, fstab, udev's rules, and the ESP's files (with checksums)."""
    return hosts.ssh(h, "for f in /boot/loader/entries/*.conf /etc/fstab /etc/udev/rules.d/70-persistent-net.rules"
                        " /boot/grub/menu.lst;"
                        " do [ ! -f $f ] || cat $f; done;"
                        " [ ! -d /boot/efi ] || (cd /boot/efi && find . -type f -exec cksum {} + | sort -k3)")


@pytest.fixture(scope="module")
def story():
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, debootstrap)")
    for h in ALL:
        hosts.start(h)
    boots: list[boot.AllAtOnce | boot.TwoAtATime] = []
    try:
        inv = hosts.write_inventory(ALL, "boot_path")
        s = {"entries_before": {h.name: entry_text(h) for h in ALL}}
        boots.append(before := boot.AllAtOnce(BEFORE, log_name="boot-before.log"))
        s["check"], s["rows"] = check_rows(str(inv), hosts.STATE / "reports" / "boot-path-before.json")
        before.written()
        s["deploy"] = pyinfra("-y", "--diff", str(inv), DEPLOY)
        s["entries_after"] = {h.name: entry_text(h) for h in ALL}
        boots.append(after := boot.TwoAtATime())
        after.start([h for h in BEFORE if h is not RESUME])  # RESUME booted already: nothing to fix
        s["check_after"], s["rows_after"] = check_rows(str(inv), hosts.STATE / "reports" / "boot-path-after.json")
        s["before"], s["after"] = before.results(), after.results()
        yield s
    finally:
        for running in boots:
            running.stop()
        for h in ALL:
            hosts.stop(h)


def rows_of(row: dict, kind: str) -> list[dict]:
    return [f for f in row["boot_path"] if f["kind"] == kind]


def test_the_xen_root_name_fails_the_real_boot_for_that_reason(story):
    result = story["before"][XEN_ROOT.name]
    assert not result.ok and result.entry, result.summary()
    assert f"ALERT!  {v.XEN_ROOT} does not exist" in result.log, result.log[-2000:]


def test_the_check_reports_a_device_name_row_that_blocks_boot(story):
    for h in XEN:
        row = story["rows"][h.name]
        assert row["status"] == "drifted", row
        assert not row["kernels"][0]["missing"]  # the drivers are fine: the name is the only problem
        (found,) = [f for f in rows_of(row, "device-name") if f["where"].startswith("/boot/loader/entries/")]
        assert found["severity"] == "blocks boot" and found["opt_in"] == "kvm_fix_device_names", found
        assert v.XEN_ROOT in found["message"] and found["line"] > 0
        assert found["fixing"] is (h is XEN_ROOT)
        fstab = {f["line"]: f for f in rows_of(row, "device-name") if f["where"] == "/etc/fstab"}
        assert set(fstab) == {2, 3} and all(f["severity"] == "blocks boot" for f in fstab.values()), fstab
        assert v.XEN_DATA in fstab[3]["text"] and "/data" in fstab[3]["message"]


def test_without_the_opt_in_nothing_is_rewritten_and_the_host_fails_naming_the_line(story):
    assert story["entries_after"][NO_OPT_IN.name] == story["entries_before"][NO_OPT_IN.name]
    out = story["deploy"].output
    assert "set kvm_fix_device_names" in out and "/boot/loader/entries/" in out, out[-3000:]
    assert story["rows_after"][NO_OPT_IN.name]["status"] == "drifted"


def test_with_the_opt_in_the_entry_names_the_root_by_uuid_shown_by_diff(story):
    before, after = story["entries_before"][XEN_ROOT.name], story["entries_after"][XEN_ROOT.name]
    assert after == before.replace(f"root={v.XEN_ROOT}", f"root=UUID={ROOT_UUID}").replace(
        f"{v.XEN_ROOT} / ", f"UUID={ROOT_UUID} / ").replace(f"{v.XEN_DATA} /data", f"UUID={v.DATA_UUID} /data"), after
    out = re.sub(r"\x1b\[[0-9;]*m", "", story["deploy"].output)  # pyinfra's colours, where it gives them
    assert "\\x1b" not in out  # the diff is of the host's text: nothing of it escaped, nothing to escape
    for old, uuid in ((f"options root={v.XEN_ROOT}", f"options root=UUID={ROOT_UUID}"),
                      (f"{v.XEN_ROOT} / ext4", f"UUID={ROOT_UUID} / ext4"),
                      (f"{v.XEN_DATA} /data ext4", f"UUID={v.DATA_UUID} /data ext4")):  # fmt: skip
        assert f"- {old}" in out and f"+ {uuid}" in out, out[-3000:]
    assert "Prove each UUID written names the same device" in out


def test_after_the_deploy_real_grub_boots_it_mounts_fstab_and_the_check_says_compliant(story):
    result = story["after"][XEN_ROOT.name]
    assert result.ok, result.summary() + "\n" + result.log[-3000:]
    assert result.fstab == "mounted" and f"root=UUID={ROOT_UUID}" in result.cmdline  # /data by UUID, on vdb
    assert story["rows_after"][XEN_ROOT.name]["status"] == "compliant", story["rows_after"][XEN_ROOT.name]


def esp_sums(text: str) -> dict[str, str]:
    """The ESP's files (as entry_text lists them) -> checksum and size."""
    lines = (ln.split() for ln in text.splitlines())
    return {f[2]: f"{f[0]} {f[1]}" for f in lines if len(f) == 3 and f[2].startswith("./")}


def test_an_esp_without_the_fallback_finds_nothing_to_boot_under_empty_nvram(story):
    result = story["before"][EFI.name]
    assert not result.ok and not result.entry, result.summary()  # GRUB never ran
    assert re.search(r'BdsDxe: failed to load Boot\d+ "UEFI Misc Device"', result.cause), result.log[-3000:]


def test_the_check_reports_the_missing_fallback_as_blocking_boot(story):
    row = story["rows"][EFI.name]
    assert row["status"] == "drifted" and not row["kernels"][0]["missing"], row
    (found,) = row["boot_path"]
    assert (found["kind"], found["severity"], found["where"], found["text"]) == (
        "efi-fallback", "blocks boot", "/boot/efi", "EFI/BOOT/BOOTX64.EFI"), found
    assert found["opt_in"] == "kvm_fix_efi_fallback" and found["fixing"] is True


def test_with_the_opt_in_debian_s_grub_is_copied_to_the_removable_path_and_nothing_else_changes(story):
    before, after = esp_sums(story["entries_before"][EFI.name]), esp_sums(story["entries_after"][EFI.name])
    assert set(before) == {"./EFI/debian/grubx64.efi", "./EFI/debian/grub.cfg"}, before
    assert after == {**before, "./EFI/BOOT/BOOTX64.EFI": before["./EFI/debian/grubx64.efi"],
                     "./EFI/BOOT/grub.cfg": before["./EFI/debian/grub.cfg"]}, after  # fmt: skip


def test_after_the_copy_the_firmware_boots_it_with_empty_nvram_and_the_check_says_compliant(story):
    result = story["after"][EFI.name]
    assert result.ok and result.loader == "GRUB UEFI", result.summary() + "\n" + result.log[-3000:]
    assert story["rows_after"][EFI.name]["status"] == "compliant", story["rows_after"][EFI.name]


def test_a_gone_resume_device_costs_initramfs_tools_30_s_and_is_advice(story):
    result = story["before"][RESUME.name]
    assert result.ok and f"resume={v.RESUME_GONE}" in result.cmdline, result.summary()  # the real boot goes on
    assert "Gave up waiting for suspend/resume device" in result.log, result.log[-3000:]
    row = story["rows"][RESUME.name]
    (found,) = rows_of(row, "resume-device")
    assert found["severity"] == "advice" and "initramfs-tools waits 30 s" in found["message"], found
    assert found["where"].startswith("/boot/loader/entries/") and found["line"] > 0
    assert row["status"] == "compliant", row  # advice only: no false alarm, and the row says it
    assert story["entries_after"][RESUME.name] == story["entries_before"][RESUME.name]


def test_a_nic_named_by_its_old_mac_gets_a_predictable_name_from_the_real_udev(story):
    result = story["before"][NIC.name]
    assert result.ok, result.summary()
    ((name, mac),) = result.nics.items()  # one NIC, QEMU's default MAC: not the rule's
    assert name.startswith("en") and mac == "52:54:00:12:34:56", result.nics  # eth0's configuration is unused
    (found,) = rows_of(story["rows"][NIC.name], "nic-rule")
    assert found["severity"] == "blocks network" and "predictable names are on" in found["message"], found
    assert found["opt_in"] == "kvm_fix_network" and found["fixing"] is True
    assert story["rows"][NIC.name]["status"] == "drifted"


def test_with_the_opt_in_the_rule_matches_the_virtio_nic_and_udev_names_it_as_configured(story):
    before, after = story["entries_before"][NIC.name], story["entries_after"][NIC.name]
    assert after == before.replace('DRIVERS=="?*", ATTR{address}=="0a:17:a5:8c:7a:76"', 'DRIVERS=="virtio_net"'), after
    configured = hosts.ssh(NIC, "cat /etc/network/interfaces")
    assert "iface eth0 inet dhcp" in configured
    result = story["after"][NIC.name]
    assert result.ok and result.nics == {"eth0": "52:54:00:12:34:56"}, result.summary() + f" {result.nics}"
    assert story["rows_after"][NIC.name]["status"] == "compliant", story["rows_after"][NIC.name]


def test_a_default_kernel_without_virtio_fails_the_real_boot_for_that_reason(story):
    result = story["before"][KERNEL.name]
    assert not result.ok and "6.1.0-50" in result.entry, result.summary()
    assert "ALERT!  /dev/vda1 does not exist" in result.log and not result.bound, result.log[-2000:]
    row = story["rows"][KERNEL.name]
    (found,) = rows_of(row, "no-virtio-kernel")
    assert found["severity"] == "blocks boot" and found["where"] == "/boot/config-6.1.0-50-amd64", found
    assert "best: 6.1.0-47-amd64" in found["message"]
    assert found["opt_in"] == "kvm_set_default_kernel" and found["fixing"] is True
    assert row["status"] == "drifted", row
    assert row["default_kernel"] == "6.1.0-47-amd64"  # the plan's: what boots once the opt-in's fix is made


def test_with_the_opt_in_menu_lst_boots_the_kernel_that_runs_on_kvm(story):
    before, after = story["entries_before"][KERNEL.name], story["entries_after"][KERNEL.name]
    assert after == before.replace("default=0\n", "default=1\n", 1) != before, after
    out = re.sub(r"\x1b\[[0-9;]*m", "", story["deploy"].output)
    assert "- default=0" in out and "+ default=1" in out, out[-3000:]
    result = story["after"][KERNEL.name]
    assert result.ok and result.kernel == "6.1.0-47-amd64", result.summary() + "\n" + result.log[-3000:]
    row = story["rows_after"][KERNEL.name]
    assert row["status"] == "compliant" and row["default_kernel"] == "6.1.0-47-amd64", row


def test_a_xen_named_data_disk_alone_fails_the_boot_s_mounts_and_is_fixed(story):
    result = story["before"][DATA.name]
    assert result.root.startswith("/dev/vda2") and result.fstab.startswith("FAILED"), result.summary()
    assert v.XEN_DATA in result.fstab and not result.ok, result.fstab  # root came up; /data did not
    (found,) = rows_of(story["rows"][DATA.name], "device-name")
    assert (found["where"], found["line"], found["severity"]) == ("/etc/fstab", 3, "blocks boot"), found
    after = story["entries_after"][DATA.name]
    assert after == story["entries_before"][DATA.name].replace(f"{v.XEN_DATA} /data", f"UUID={v.DATA_UUID} /data")
    assert story["after"][DATA.name].ok and story["after"][DATA.name].fstab == "mounted", story["after"][DATA.name]
    assert story["rows_after"][DATA.name]["status"] == "compliant"


def test_a_gone_resume_device_stops_a_systemd_initrd_for_ever_and_its_uuid_boots(story):
    result = story["before"][RESUME_SYSTEMD.name]
    assert not result.ok and re.search(r"Job dev-sda2\.device/start running \(\d+min.*/ no limit\)", result.cause), \
        result.summary()  # fmt: skip
    (found,) = rows_of(story["rows"][RESUME_SYSTEMD.name], "resume-device")
    assert found["severity"] == "blocks boot" and "systemd: for ever" in found["message"], found
    assert found["opt_in"] == "kvm_fix_device_names" and found["fixing"] is True
    before, after = story["entries_before"][RESUME_SYSTEMD.name], story["entries_after"][RESUME_SYSTEMD.name]
    assert after == before.replace(f"resume={v.RESUME_GONE}", f"resume=UUID={v.SWAP_UUID}") != before, after
    result = story["after"][RESUME_SYSTEMD.name]
    assert result.ok and f"resume=UUID={v.SWAP_UUID}" in result.cmdline, result.summary() + result.log[-3000:]
    assert story["rows_after"][RESUME_SYSTEMD.name]["status"] == "compliant", story["rows_after"][RESUME_SYSTEMD.name]
