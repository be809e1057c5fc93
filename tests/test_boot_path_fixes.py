"""The opt-in fixes of issue 20 (operations/boot_path.py, operations/boot_edits.py and the host scripts
aside.sh, efi_copy.sh, verify_uuid.sh, rollback.sh).

1. Rendering, on the real files of tests/fixtures/boot_path and tests/fixtures/real (see their
   SOURCES.md): the exact new text, and every other line byte for byte; what is refused, and why.
2. The operations: the commands they yield, what they refuse, --diff.
3. The host scripts, run for real as root by sh (dash) and BusyBox sh against temporary trees, each
   in a private mount namespace whose /run/kvm-drivers is this test's own directory (so no other
   run's state is touched) and, where a test says so, whose /usr/local/sbin (first in the scripts'
   PATH) holds STAND-INS for findfs or cp. No real block device is used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import OperationError, QuoteString
from pyinfra.context import ctx_host, ctx_state

from kvm_drivers import hostside
from kvm_drivers.facts import boot_path as bp
from kvm_drivers.facts import network as net
from kvm_drivers.facts.boot_path import Finding, Fix
from kvm_drivers.operations import boot_path as fx
from tests.test_operations import FakeHost

FIXTURES = Path(__file__).parent / "fixtures" / "boot_path"
REAL = Path(__file__).parent / "fixtures" / "real"
U1, U2, U3 = "949779ce-46aa-434e-8eb0-852514a5d69e", "6d3376e4-fc93-4509-95ec-a21d68011da2", "7A1B-33C0"


def text(path: Path) -> str:
    return path.read_bytes().decode()  # as sent: line endings untouched


def changed_lines(old: str, new: str) -> dict[int, tuple[str, str]]:
    """Line number -> (old, new) of the lines that differ; asserts the rest is byte for byte the same."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(a) == len(b)
    return {n: (x, y) for n, (x, y) in enumerate(zip(a, b), 1) if x != y}


def finding(fix: Fix) -> Finding:
    return Finding("device-name", bp.BLOCKS_BOOT, fix.path or "kernel line", fix.line, fix.old, "test", fix)


# --- 1. rendering ---------------------------------------------------------------------------------


def test_fstab_device_names_become_uuids_and_nothing_else_changes():
    old = text(FIXTURES / "fstab/gentoo-ec2-xvda.fstab")
    found = bp.fstab_findings(old)
    plan = fx.plan_fixes({"/etc/fstab": old}, found, {"/dev/xvda1": U1, "/dev/xvda3": U3})
    new = plan.texts["/etc/fstab"]
    assert changed_lines(old, new) == {
        1: ("/dev/xvda1 / ext4 defaults 1 1\n", f"UUID={U1} / ext4 defaults 1 1\n"),
        2: ("/dev/xvda3 none swap sw 0 0\n", f"UUID={U3} none swap sw 0 0\n"),
    }
    assert plan.refused == [] and plan.verify == {U1: "/dev/xvda1", U3: "/dev/xvda3"}
    assert plan.changes() == {"/etc/fstab": (old, new)}
    assert bp.fstab_findings(new) == []  # the reader is satisfied


def test_fstab_tabs_and_spaces_around_the_field_are_kept():
    old = text(FIXTURES / "fstab/slackware-extra-sda.fstab")
    new, refused = fx.render_fixes({"/etc/fstab": old}, bp.fstab_findings(old), {"/dev/sda2": U1})
    assert refused == []
    assert changed_lines(old, new["/etc/fstab"]) == {
        2: ("/dev/sda2 \t \t\t /media/hd1\t\tauto\tro,auto\t       0   0\n",
            f"UUID={U1} \t \t\t /media/hd1\t\tauto\tro,auto\t       0   0\n")}  # fmt: skip


def test_crlf_fstab_keeps_its_line_endings():
    old = "/dev/xvdb1 /data ext4 defaults 0 2\r\n# keep\r\nproc /proc proc defaults 0 0\r\n"
    new, _ = fx.render_fixes({"/etc/fstab": old}, bp.fstab_findings(old), {"/dev/xvdb1": U2})
    assert new["/etc/fstab"] == f"UUID={U2} /data ext4 defaults 0 2\r\n# keep\r\nproc /proc proc defaults 0 0\r\n"


def test_quoted_fstab_device():
    old = '"/dev/xvdb1" /data ext4 defaults 0 2\n'
    new, refused = fx.render_fixes({"/etc/fstab": old}, bp.fstab_findings(old), {"/dev/xvdb1": U2})
    assert refused == [] and new["/etc/fstab"] == f"UUID={U2} /data ext4 defaults 0 2\n"


def test_crypttab_source_field():
    old = text(FIXTURES / "crypttab/slackware-sda.crypttab")
    new, refused = fx.render_fixes({"/etc/crypttab": old}, bp.crypttab_findings(old), {"/dev/sda1": U1})
    assert changed_lines(old, new["/etc/crypttab"]) == {
        1: ("sda1_crypt\t\t/dev/sda1\t/root/keyfile-DELL-5480.key     luks\n",
            f"sda1_crypt\t\tUUID={U1}\t/root/keyfile-DELL-5480.key     luks\n")}  # fmt: skip
    assert refused == ["/etc/crypttab line 2: device-to-uuid: no UUID is known for /dev/sda3 (not mounted there, "
                       "or blkid gave none)"]  # fmt: skip


def test_menu_lst_kernel_line():
    old = text(FIXTURES / "grub/gentoo-ec2-menu.lst")
    line = old.splitlines()[4]
    found = bp.kernel_line_findings(line.split(None, 2)[2], "/boot/grub/menu.lst", 5)
    new, refused = fx.render_fixes({"/boot/grub/menu.lst": old}, found, {"/dev/xvda1": U1})
    assert refused == []
    assert changed_lines(old, new["/boot/grub/menu.lst"]) == {
        5: ("kernel /boot/bzImage root=/dev/xvda1 rootfstype=ext4\n",
            f"kernel /boot/bzImage root=UUID={U1} rootfstype=ext4\n")}  # fmt: skip


def test_quoted_and_dracut_block_values_on_a_kernel_line():
    old = 'title x\n\tkernel /vmlinuz ro "root=/dev/xvda1" resume=block:/dev/xvda3 root=/dev/xvda1\n'
    found = bp.kernel_line_findings(old.splitlines()[1].split(None, 2)[2], "/boot/grub/menu.lst", 2)
    assert [f.fix.old for f in found] == ["root=/dev/xvda1", "resume=block:/dev/xvda3"]
    new, refused = fx.render_fixes({"/boot/grub/menu.lst": old}, found, {"/dev/xvda1": U1, "/dev/xvda3": U3})
    assert refused == [] and new["/boot/grub/menu.lst"] == (
        f'title x\n\tkernel /vmlinuz ro "root=UUID={U1}" resume=UUID={U3} root=UUID={U1}\n')


def test_every_kernel_line_of_a_real_grub_conf():
    old = text(REAL / "legacy/grubby-fedora23-grub.conf")
    path = "/boot/grub/grub.conf"
    found = [f for n, ln in enumerate(old.splitlines(), 1) if ln.strip().startswith("kernel ")
             for f in bp.kernel_line_findings(" ".join(ln.split()[2:]), path, n)]  # fmt: skip
    new, refused = fx.render_fixes({path: old}, found, {"/dev/sda1": U1})
    diff = changed_lines(old, new[path])
    assert refused == [] and len(diff) == 18
    for a, b in diff.values():
        assert a.startswith("\tkernel /vmlinuz-") and b == a.replace("root=/dev/sda1", f"root=UUID={U1}")
    assert "#          kernel /vmlinuz-version ro root=/dev/d2/root\n" in new[path]  # the comment is not a line


def test_default_grub_root_resume_and_no_uuid():
    # the real RHEL 8 file, its GRUB_CMDLINE_LINUX given a root= and resume= and GRUB_DISABLE_LINUX_UUID
    real = text(FIXTURES / "grub/aws-rhel8-default-grub")
    old = real.replace('crashkernel=auto"', 'crashkernel=auto root=/dev/xvda1 resume=/dev/xvda3"') \
        + 'GRUB_DISABLE_LINUX_UUID="true"\n'  # fmt: skip
    found = bp.default_grub_findings(old)
    assert [f.fix.action for f in found] == ["device-to-uuid", "device-to-uuid", "delete-line"]
    new, refused = fx.render_fixes({"/etc/default/grub": old}, found, {"/dev/xvda1": U1, "/dev/xvda3": U3})
    assert refused == []
    diff = changed_lines(old, new["/etc/default/grub"])
    assert diff[6][1] == ('GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 console=tty0 net.ifnames=0 rd.blacklist=nouveau '
                          f'nvme_core.io_timeout=4294967295 crashkernel=auto root=UUID={U1} resume=UUID={U3}"\n')
    assert diff[9][1] == '# disabled by kvm-drivers (KVM): GRUB_DISABLE_LINUX_UUID="true"\n'
    assert sorted(diff) == [6, 9]


def test_bls_options_line_of_a_crlf_entry():
    # the real Fedora 19 entry (CRLF), its root given as /dev/sda2
    real = text(REAL / "bls/6a9857a393724b7a981ebb5b8495b9ea-3.8.0-2.fc19.x86_64.conf")
    old = real.replace(f"root=UUID={U2}", "root=/dev/sda2")
    path = "/boot/loader/entries/6a9857a393724b7a981ebb5b8495b9ea-3.8.0-2.fc19.x86_64.conf"
    found = bp.kernel_line_findings("root=/dev/sda2", path, 7)
    new, refused = fx.render_fixes({path: old}, found, {"/dev/sda2": U2})
    assert refused == [] and new[path] == real


def grubenv(*lines: str) -> str:
    body = "# GRUB Environment Block\n" + "".join(x + "\n" for x in lines)
    return body + "#" * (1024 - len(body))


def test_grubenv_kernelopts_keep_the_block_1024_bytes():
    real = text(REAL / "grubenv/grubby-grubenv.1")
    saved = real.splitlines()[1]
    old = grubenv(saved, "kernelopts=root=/dev/xvda2 ro resume=/dev/xvda3 rhgb quiet")
    assert len(real.encode()) == len(old.encode()) == 1024
    found = bp.kernel_line_findings("root=/dev/xvda2 ro resume=/dev/xvda3 rhgb quiet", "/boot/grub2/grubenv", 3)
    new, refused = fx.render_fixes({"/boot/grub2/grubenv": old}, found, {"/dev/xvda2": U1, "/dev/xvda3": U3})
    assert refused == []
    assert new["/boot/grub2/grubenv"] == grubenv(saved, f"kernelopts=root=UUID={U1} ro resume=UUID={U3} rhgb quiet")
    assert len(new["/boot/grub2/grubenv"].encode()) == 1024
    full = "# GRUB Environment Block\nkernelopts=root=/dev/xvda2 ro\n" + "x" * 990 + "\n"  # no padding left
    found = bp.kernel_line_findings("root=/dev/xvda2 ro", "/boot/grub2/grubenv", 2)
    new, refused = fx.render_fixes({"/boot/grub2/grubenv": full}, found, {"/dev/xvda2": U1})
    assert new == {} and refused == ["/boot/grub2/grubenv: no room left in the environment block: nothing changed"]


def test_pv_leftovers():
    modprobe = "# Xen guest\nalias scsi_hostadapter xenblk\nalias scsi_hostadapter1 xen-vbd\nalias eth0 xennet\r\n"
    found = bp.modprobe_findings(modprobe, "/etc/modprobe.conf")
    new, refused = fx.render_fixes({"/etc/modprobe.conf": modprobe}, found, {})
    assert refused == [] and new["/etc/modprobe.conf"] == (
        "# Xen guest\nalias scsi_hostadapter virtio_blk\n"
        "# disabled by kvm-drivers (KVM): alias scsi_hostadapter1 xen-vbd\nalias eth0 virtio_net\r\n")
    old = text(FIXTURES / "sysconfig/opensuse-kernel")
    new, refused = fx.render_fixes({"/etc/sysconfig/kernel": old}, bp.sysconfig_kernel_findings(old), {})
    assert changed_lines(old, new["/etc/sysconfig/kernel"]) == {
        32: ('DOMU_INITRD_MODULES="xennet xenblk"\n', 'DOMU_INITRD_MODULES=""\n')}


IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"
RULES = "/etc/udev/rules.d/70-persistent-net.rules"
NETPLAN = "/etc/netplan/50-cloud-init.yaml"
NETWORKD = "/etc/systemd/network/"
NM = "/etc/NetworkManager/system-connections/"


def test_network_files():
    files = {
        IFCFG: text(FIXTURES / "ifcfg/aws-rhel8-ifcfg-eth0"),
        RULES: text(FIXTURES / "udev/aws-rhel8-70-persistent-net.rules"),
        NETPLAN: text(FIXTURES / "netplan/aws-isucon11q-50-cloud-init.yaml"),
        NETWORKD + "12-dummy.network": text(FIXTURES / "networkd/12-dummy-match-mac-01.network"),
        NETWORKD + "10-eth0.link": text(FIXTURES / "networkd/10-eth0.link"),
        NM + "Test_Wired_Connection": text(FIXTURES / "nm/Test_Wired_Connection"),
    }
    plan = fx.plan_fixes(files, net.network_findings(files), {})
    assert plan.refused == []
    assert plan.moves == [NETWORKD + "10-eth0.link", RULES]
    assert plan.olds[RULES] == files[RULES]
    diffs = {p: changed_lines(files[p], t) for p, t in plan.texts.items()}
    assert diffs == {
        IFCFG: {5: ("HWADDR=0a:17:a5:8c:7a:76\n", "# disabled by kvm-drivers (KVM): HWADDR=0a:17:a5:8c:7a:76\n")},
        NETPLAN: {12: ("                macaddress: 0a:ba:2e:a0:d9:b7\n", "                driver: virtio_net\n")},
        NETWORKD + "12-dummy.network": {5: ("MACAddress=12:34:56:78:9a:01\n", "Driver=virtio_net\n")},
        NM + "Test_Wired_Connection": {10: ("mac-address=00:11:22:33:44:55\n",
                                            "# disabled by kvm-drivers (KVM): mac-address=00:11:22:33:44:55\n")},
    }  # fmt: skip
    after = net.network_findings({**files, **plan.texts, RULES: "", NETWORKD + "10-eth0.link": ""})
    assert [f.kind for f in after if f.kind.startswith("nic-")] == []  # no MAC binding is left


def test_a_udev_rule_naming_eth0_by_mac_where_names_are_predictable_matches_the_virtio_nic_instead():
    """The old NIC was eth0 only through this rule (predictable names on): the new one would be ens3.
    The fix makes the rule match the virtio NIC; udev's rules then name the KVM NIC eth0 (the lab
    boots it with real udev: tests/test_lab_boot_path.py)."""
    files = {RULES: text(FIXTURES / "udev/aws-rhel8-70-persistent-net.rules")}
    (found,) = net.network_findings(files, persistent_net_generator=False, predictable_names=True)
    assert (found.kind, found.severity, found.fix.action) == ("nic-rule", bp.BLOCKS_NETWORK, "drop-mac-match")
    assert "predictable names are on" in found.message
    plan = fx.plan_fixes(files, [found], {})
    assert plan.refused == [] and plan.moves == [] and fx.needs_rebuild(plan)  # initramfs-tools copies the rules
    assert changed_lines(files[RULES], plan.texts[RULES]) == {1: (
        'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="0a:17:a5:8c:7a:76", NAME="eth0"\n',
        'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="virtio_net", NAME="eth0"\n')}  # fmt: skip
    assert net.udev_name_for(plan.texts[RULES], net.KVM_MACS[0], kernel="eth0") == "eth0"
    assert net.network_findings({RULES: plan.texts[RULES]}, False, True) == []
    (kept,) = net.network_findings(files, persistent_net_generator=False, predictable_names=False)  # net.ifnames=0
    assert (kept.severity, kept.fix.action) == (bp.ADVICE, "move-aside")
    several = {RULES: text(FIXTURES / "udev/opensuse-70-persistent-net.rules")}
    found = net.network_findings(several, persistent_net_generator=False, predictable_names=True)
    assert found and all(f.severity == bp.BLOCKS_NETWORK and f.fix is None and "by hand" in f.message for f in found)


def test_efi_fallback_copies_are_planned():
    found = bp.efi_fallback_findings(["EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi", "EFI/debian/grub.cfg"])
    plan = fx.plan_fixes({}, found, {})
    assert plan.copies == {"/boot/efi": (("EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI"),
                                         ("EFI/debian/grubx64.efi", "EFI/BOOT/grubx64.efi"),
                                         ("EFI/debian/grub.cfg", "EFI/BOOT/grub.cfg"))}  # fmt: skip
    assert plan.texts == {} and plan.refused == []


FSTAB = "/dev/xvdb1 /data ext4 defaults 0 2\n"


@pytest.mark.parametrize("fix, files, uuids, reason", [
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdc1"), {"/etc/fstab": FSTAB}, {"/dev/xvdc1": U1},
     "/etc/fstab line 1: device-to-uuid: field 1 no longer reads '/dev/xvdc1'"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {"/etc/fstab": FSTAB}, {"/dev/xvdb1": "$(reboot)"},
     "/etc/fstab line 1: device-to-uuid: the UUID the host gave for /dev/xvdb1 is not one: '$(reboot)'"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {"/etc/fstab": FSTAB}, {"/dev/xvdb1": "abc"},
     "the UUID the host gave for /dev/xvdb1 is not one: 'abc'"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {"/etc/fstab": FSTAB}, {"/dev/xvdb1": U1 + "0"},
     "is not one"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/x\x1bb1"), {"/etc/fstab": "/dev/x\x1bb1 /data ext4\n"},
     {"/dev/x\x1bb1": U1}, "'/dev/x\\\\x1bb1' is not a plain device name"),
    (Fix("device-to-uuid", "/etc/fstab", 2, "/dev/xvdb1"), {"/etc/fstab": FSTAB}, {}, "there is no line 2"),
    (Fix("device-to-uuid", "/mnt/root/etc/fstab", 1, "/dev/xvdb1"), {"/mnt/root/etc/fstab": FSTAB},
     {"/dev/xvdb1": U1}, "/mnt/root/etc/fstab line 1: not a file the opt-in fixes may change"),
    (Fix("device-to-uuid", "/etc/../etc/fstab", 1, "/dev/xvdb1"), {"/etc/../etc/fstab": FSTAB}, {"/dev/xvdb1": U1},
     "not a file the opt-in fixes may change"),
    (Fix("delete-line", "/usr/lib/udev/rules.d/70-net.rules", 1, "x"), {"/usr/lib/udev/rules.d/70-net.rules": "x\n"},
     {}, "not a file the opt-in fixes may change"),
    (Fix("device-to-uuid", "/boot/grub/grub.cfg", 9, "root=/dev/xvda1"), {}, {"/dev/xvda1": U1},
     "/boot/grub/grub.cfg is generated by grub-mkconfig: not edited (fix /etc/default/grub, and set "
     "kvm_regenerate_grub to regenerate)"),
    (Fix("device-to-uuid", "/boot/efi/EFI/centos/grub.cfg", 9, "root=/dev/xvda1"), {}, {}, "is generated"),
    (Fix("device-to-uuid", "", 0, "root=/dev/xvda1"), {}, {"/dev/xvda1": U1},
     "kernel line: the file that holds this value is not known: nothing changed"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {"/etc/fstab": None}, {"/dev/xvdb1": U1},
     "its text was not read from the host"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {}, {"/dev/xvdb1": U1}, "its text was not read"),
    (Fix("device-to-uuid", "/boot/grub/menu.lst", 1, "root=0801"), {"/boot/grub/menu.lst": "kernel /vmlinuz root=0801"},
     {"0801": U1}, "'0801' is not a plain device name"),
    (Fix("device-to-uuid", "/boot/grub/menu.lst", 1, "root=/dev/sda1"), {"/boot/grub/menu.lst": "title root=/dev/sda1"},
     {"/dev/sda1": U1}, "not a kernel command line (any more)"),
    (Fix("device-to-uuid", "/boot/grub/menu.lst", 1, "root=/dev/sda1"),
     {"/boot/grub/menu.lst": "kernel /vmlinuz xroot=/dev/sda1"}, {"/dev/sda1": U1}, "the line no longer has"),
    (Fix("device-to-uuid", "/etc/modprobe.conf", 1, "/dev/sda1"), {"/etc/modprobe.conf": "x\n"}, {},
     "no device names are rewritten in this kind of file"),
    (Fix("delete-line", IFCFG, 2, "HWADDR=00:16:3e:00:00:01"), {IFCFG: "DEVICE=eth0\nHWADDR=00:16:3e:00:00:02\n"}, {},
     "the line no longer reads 'HWADDR=00:16:3e:00:00:01' (it changed since it was read)"),
    (Fix("delete-line", IFCFG, 2, "HWADDR=00:16:3e:00:00:01"), {IFCFG: "NAME='eth0\nHWADDR=00:16:3e:00:00:01\n'\n"},
     {}, "the line is inside a quoted value that began above it"),
    (Fix("delete-line", IFCFG, 2, "HWADDR=00:16:3e:00:00:01 \\"), {IFCFG: "A=1\nHWADDR=00:16:3e:00:00:01 \\\nB=2\n"},
     {}, "the line is part of one continued with a backslash"),
    (Fix("delete-line", "/etc/modprobe.d/xen.conf", 2, "alias eth0 xennet"),
     {"/etc/modprobe.d/xen.conf": "install foo \\\nalias eth0 xennet\n"}, {}, "continued with a backslash"),
    (Fix("delete-line", NETPLAN, 1, "network: {ethernets: {eth0: {macaddress: '52:54:00:aa:bb:cc'}}}"),
     {NETPLAN: "network: {ethernets: {eth0: {macaddress: '52:54:00:aa:bb:cc'}}}\n"}, {},
     "not a 'key: value' line of its own"),
    (Fix("drop-mac-match", NETPLAN, 4, "      match: {macaddress: 'aa:bb:cc:dd:ee:ff'}"),
     {NETPLAN: "network:\n  ethernets:\n    eth0:\n      match: {macaddress: 'aa:bb:cc:dd:ee:ff'}\n"}, {},
     "not a 'macaddress: VALUE' line of its own"),
    (Fix("drop-mac-match", NETPLAN, 6, "        macaddress: aa:bb:cc:dd:ee:ff"),
     {NETPLAN: "network:\n  ethernets:\n    eth0:\n      match:\n        driver: ena\n"
      "        macaddress: aa:bb:cc:dd:ee:ff\n"}, {}, "the match already names a driver: drop the MAC by hand"),
    (Fix("drop-mac-match", NETPLAN, 4, "      macaddress: aa:bb:cc:dd:ee:ff"),
     {NETPLAN: "network:\n  ethernets:\n    eth0:\n      macaddress: aa:bb:cc:dd:ee:ff\n"}, {},
     "the macaddress is not one of a 'match:' block"),
    (Fix("drop-mac-match", NETWORKD + "eth0.network", 2, "MACAddress=aa:bb:cc:dd:ee:ff"),
     {NETWORKD + "eth0.network": "[Link]\nMACAddress=aa:bb:cc:dd:ee:ff\n"}, {}, "not a MACAddress= of a [Match]"),
    (Fix("drop-mac-match", IFCFG, 1, "HWADDR=x"), {IFCFG: "HWADDR=x\n"}, {}, "no MAC match to drop"),
    (Fix("drop-mac-match", RULES, 1, 'ATTR{address}=="a", ATTRS{address}=="b", NAME="eth0"'),
     {RULES: 'ATTR{address}=="a", ATTRS{address}=="b", NAME="eth0"\n'}, {}, "not one ATTR{address}== match"),
    (Fix("drop-mac-match", RULES, 1, 'DRIVERS=="e1000", ATTR{address}=="0a:17:a5:8c:7a:76", NAME="eth0"'),
     {RULES: 'DRIVERS=="e1000", ATTR{address}=="0a:17:a5:8c:7a:76", NAME="eth0"\n'}, {},
     "the rule already matches a driver"),
    (Fix("move-aside", IFCFG), {IFCFG: "HWADDR=x\n"}, {},
     "moving it aside would not disable it (its reader reads any name there)"),
    (Fix("move-aside", NM + "Wired connection 1"), {NM + "Wired connection 1": "x"}, {}, "would not disable it"),
    (Fix("rename", "/etc/sysconfig/network/ifcfg-eth-id-00:16:3e:12:34:56", 0, "ifcfg-eth-id-00:16:3e:12:34:56",
         "ifcfg-eth0"), {}, {}, "rename: not done by the opt-in fixes (do it by hand)"),
    (Fix("set-default-kernel", "", 0, "2.6.18-398.el5xen", "2.6.18-398.el5"), {}, {},
     "default kernel: make 2.6.18-398.el5 the default kernel by hand"),
    (Fix("replace-line", "/etc/modprobe.conf", 1, "alias eth0 xennet", "alias eth0 virtio_net\nrm -rf /"),
     {"/etc/modprobe.conf": "alias eth0 xennet\n"}, {}, "the new line is not one line"),
    (Fix("replace-line", "/etc/sysconfig/kernel", 1, 'INITRD_MODULES="xenblk', 'INITRD_MODULES=""'),
     {"/etc/sysconfig/kernel": 'INITRD_MODULES="xenblk\nata_piix"\n'}, {}, "opens a quoted value that goes on below"),
    (Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvdb1"), {"/etc/fstab": FSTAB + "\x00"}, {"/dev/xvdb1": U1},
     "not a text file"),
    (Fix("copy", "/mnt/esp", 0, copies=(("EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI"),)), {}, {},
     "'/mnt/esp' is not an ESP mount point the opt-in fixes write to"),
    (Fix("copy", "/boot/efi", 0, copies=(("EFI/../../etc/shadow", "EFI/BOOT/BOOTX64.EFI"),)), {}, {},
     "not EFI/<dir>/<file> to EFI/BOOT/<file>"),
    (Fix("copy", "/boot/efi", 0, copies=(("EFI/debian/shimx64.efi", "EFI/debian/../BOOT/x"),)), {}, {},
     "not EFI/<dir>/<file> to EFI/BOOT/<file>"),
])  # fmt: skip
def test_refusals(fix: Fix, files: dict, uuids: dict, reason: str):
    f = Finding("kernel" if not fix.path else "x", bp.BLOCKS_BOOT, "default kernel" if fix.action ==
                "set-default-kernel" else fix.path or "kernel line", fix.line, fix.old, "t", fix)  # fmt: skip
    plan = fx.plan_fixes(files, [f], uuids)
    assert plan.texts == {} and plan.moves == [] and plan.copies == {} and plan.verify == {}
    assert len(plan.refused) == 1 and reason in plan.refused[0], plan.refused


def test_generated_grub_cfg_with_regeneration_is_regenerated_not_edited():
    fix = Fix("device-to-uuid", "/boot/grub2/grub.cfg", 90, "root=/dev/xvda1")
    resume = Fix("device-to-uuid", "/boot/grub2/grub.cfg", 90, "resume=/dev/xvda2")
    cfg = {"/boot/grub2/grub.cfg": "linux /vmlinuz root=/dev/xvda1 resume=/dev/xvda2\n"}
    plan = fx.plan_fixes(cfg, [finding(fix), finding(fix), finding(resume)], {"/dev/xvda1": U1}, regenerate_grub=True)
    assert plan.regenerate == {"/boot/grub2/grub.cfg": ["root=/dev/xvda1", "resume=/dev/xvda2"]}
    assert plan.texts == {} and plan.refused == [] and plan.olds == cfg
    unread = fx.plan_fixes({}, [finding(fix)], {"/dev/xvda1": U1}, regenerate_grub=True)
    assert unread.regenerate == {} and unread.refused == [
        "/boot/grub2/grub.cfg line 90: its text was not read from the host: not regenerated"]


def test_regenerate_grub_cfg_operation():
    commands, _ = op("regenerate_grub_cfg", path="/boot/grub/grub.cfg", old="x\n",
                     gone=["root=/dev/xvda1", "resume=/dev/xvda2"], run_id="ab12")  # fmt: skip
    (cmd,) = commands
    assert cmd[:4] == ["sh", "-c", hostside.REGEN, "kvm-regen"] and cmd[4:8] == ["/boot/grub/grub.cfg", "x\n", "ab12",
                                                                                "/dev/xvda1"]  # fmt: skip
    assert cmd[8] == "/dev/xvda2" and "kvm-rollback" in cmd
    for bad in ({"path": "/etc/fstab"}, {"path": "/boot/grub/../../etc/passwd"}, {"gone": ["root=$(id)"]},
                {"gone": []}):  # fmt: skip
        args = {"path": "/boot/grub/grub.cfg", "old": "x\n", "gone": ["root=/dev/xvda1"], "run_id": "ab12", **bad}
        with pytest.raises(OperationError):
            op("regenerate_grub_cfg", **args)


def test_one_uuid_for_two_devices_and_fixes_on_one_line():
    old = "/dev/xvdb1 /a ext4 defaults 0 2\n/dev/sdb1 /b ext4 defaults 0 2\n"
    plan = fx.plan_fixes({"/etc/fstab": old}, bp.fstab_findings(old), {"/dev/xvdb1": U1, "/dev/sdb1": U1})
    assert plan.texts["/etc/fstab"] == f"UUID={U1} /a ext4 defaults 0 2\n/dev/sdb1 /b ext4 defaults 0 2\n"
    assert plan.refused == [f"/etc/fstab line 2: device-to-uuid: UUID {U1} is given for both /dev/xvdb1 and /dev/sdb1"]
    # a whole-line fix and a token fix on one line: the first wins, the other is refused
    grub = 'GRUB_CMDLINE_LINUX="root=/dev/xvda1"\n'
    fixes = [Fix("device-to-uuid", "/etc/default/grub", 1, "root=/dev/xvda1"),
             Fix("delete-line", "/etc/default/grub", 1, grub[:-1])]  # fmt: skip
    plan = fx.plan_fixes({"/etc/default/grub": grub}, [finding(f) for f in fixes], {"/dev/xvda1": U1})
    assert plan.texts["/etc/default/grub"] == f"# disabled by kvm-drivers (KVM): {grub}"
    assert plan.refused == ["/etc/default/grub line 1: device-to-uuid: another fix replaces this line"]


def test_a_moved_file_is_not_also_edited_and_fixless_findings_are_skipped():
    rules = 'SUBSYSTEM=="net", ATTR{address}=="00:16:3e:00:00:01", NAME="eth0"\n'
    fixes = [Fix("move-aside", RULES), Fix("delete-line", RULES, 1, rules[:-1])]
    plan = fx.plan_fixes({RULES: rules}, [finding(f) for f in fixes] + [
        Finding("static-address", bp.ADVICE, IFCFG, 1, "x", "t")], {})  # fmt: skip
    assert plan.moves == [RULES] and plan.texts == {} and plan.refused == []


def test_fixable_paths():
    yes = ["/etc/fstab", "/etc/crypttab", "/etc/default/grub", "/boot/grub2/grubenv", "/boot/efi/EFI/redhat/grubenv",
           "/boot/loader/entries/abc-6.1.conf", "/boot/grub/menu.lst", "/boot/grub/grub.conf", "/etc/modprobe.conf",
           "/etc/modprobe.d/xen.conf", "/etc/sysconfig/kernel", RULES, IFCFG, "/etc/sysconfig/network/ifcfg-eth0",
           NETPLAN, NM + "Wired connection 1", NETWORKD + "10-eth0.link", "/boot/efi/EFI/BOOT/BOOTX64.EFI",
           "/boot/efi/efi/boot/grubx64.efi", "/etc/network/interfaces"]  # fmt: skip
    no = ["/etc/passwd", "/etc/fstab.d/x", "/boot/grub/grub.cfg", "/etc/modprobe.d/x", "/lib/udev/rules.d/70.rules",
          "/etc/udev/rules.d/../../shadow.rules", "/etc/netplan/x.conf", "/boot/efi/EFI/debian/grubx64.efi",
          "/boot/efi/EFI/BOOT/sub/x.efi", "etc/fstab", "/etc//fstab", "/etc/NetworkManager/system-connections/.x",
          NETWORKD + "x.netdev", "/mnt/etc/fstab"]  # fmt: skip
    assert [p for p in yes if fx.fixable(p) is None] == []
    assert [p for p in no if fx.fixable(p) is not None] == []
    assert set(fx.FIXABLE_PATHS) == {"fstab", "crypttab", "default-grub", "grubenv", "bls", "legacy-grub", "modprobe",
                                     "sysconfig-kernel", "udev", "ifcfg", "interfaces", "netplan", "keyfile",
                                     "networkd", "esp"}  # fmt: skip


# --- 2. the operations ----------------------------------------------------------------------------

SCRIPTS = {hostside.WRITE: "@write.sh", hostside.ASIDE: "@aside.sh", hostside.EFI_COPY: "@efi_copy.sh",
           hostside.VERIFY_UUID: "@verify_uuid.sh", hostside.ROLLBACK: "@rollback.sh"}  # fmt: skip


def op(name: str, diff: bool = False, **args) -> tuple[list[list[str]], FakeHost]:
    fake = FakeHost({})
    with ctx_host.use(fake), ctx_state.use(SimpleNamespace(config=SimpleNamespace(DIFF=diff))):
        commands = list(getattr(fx, name)._inner(**args))
    out = [[SCRIPTS.get(b.obj, b.obj) if isinstance(b, QuoteString) else b for b in c.bits] for c in commands]
    return out, fake


def test_rewrite_files_one_write_per_file_then_rollback_on_failure():
    cmds, _ = op("rewrite_files", changes={"/etc/fstab": ("a\n", "b\n"), "/etc/crypttab": ("c\n", "c\n")},
                 run_id="ab12")  # fmt: skip
    assert cmds == [["sh", "-c", "@write.sh", "kvm-write", "/etc/fstab", "b\n", "1", "a\n", "ab12",
                     "||", "sh", "-c", "@rollback.sh", "kvm-rollback", "ab12"]]  # fmt: skip
    cmds, _ = op("rewrite_files", changes={"/etc/fstab": ("a\n", "b\n")})
    assert cmds == [["sh", "-c", "@write.sh", "kvm-write", "/etc/fstab", "b\n", "1", "a\n", ""]]
    cmds, fake = op("rewrite_files", changes={"/etc/fstab": ("a\n", "a\n")})
    assert cmds == [] and fake.noops == ["no file to rewrite"]


@pytest.mark.parametrize("name, args, error", [
    ("rewrite_files", {"changes": {"/etc/passwd": ("a", "b")}}, "refusing to rewrite '/etc/passwd'"),
    ("rewrite_files", {"changes": {"/boot/efi/EFI/BOOT/BOOTX64.EFI": ("a", "b")}}, "refusing to rewrite"),
    ("rewrite_files", {"changes": {"/etc/fstab": ("a", None)}}, "must be text"),
    ("rewrite_files", {"changes": {}, "run_id": "../x"}, "run_id must be"),
    ("move_aside", {"paths": [IFCFG], "olds": {IFCFG: "x"}}, "refusing to move"),
    ("move_aside", {"paths": [RULES], "olds": {}}, "refusing to move"),
    ("copy_efi_fallback", {"esp": "/tmp", "copies": []}, "not an ESP mount point"),
    ("copy_efi_fallback", {"esp": "/boot/efi", "copies": [("EFI/x/../../y", "EFI/BOOT/z")]}, "refusing to copy"),
    ("verify_uuids", {"expected": {"$(id)": "/dev/vda1"}}, "refusing to verify"),
    ("verify_uuids", {"expected": {U1: "/dev/../etc/shadow"}}, "refusing to verify"),
    ("verify_uuids", {"expected": {U1: "vda1"}}, "refusing to verify"),
])  # fmt: skip
def test_operations_refuse(name: str, args: dict, error: str):
    with pytest.raises(OperationError, match=re.escape(error)):
        op(name, **args)


def test_move_copy_and_verify_commands(caplog):
    caplog.set_level(logging.INFO)
    cmds, _ = op("move_aside", diff=True, paths=[RULES, RULES], olds={RULES: "r\n"}, run_id="ab12")
    assert cmds == [["sh", "-c", "@aside.sh", "kvm-aside", RULES, "r\n", "ab12",
                     "||", "sh", "-c", "@rollback.sh", "kvm-rollback", "ab12"]]  # fmt: skip
    assert f"Will move {RULES} aside as {RULES}.kvm-drivers-disabled" in caplog.text
    copies = [("EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI"), ("EFI/debian/grubx64.efi", "EFI/BOOT/grubx64.efi")]
    cmds, _ = op("copy_efi_fallback", esp="/boot/efi", copies=copies, run_id="ab12")
    assert cmds == [["sh", "-c", "@efi_copy.sh", "kvm-efi-copy", "/boot/efi", "ab12", "EFI/debian/shimx64.efi",
                     "EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "EFI/BOOT/grubx64.efi"]]  # fmt: skip
    cmds, _ = op("verify_uuids", expected={U3: "/dev/xvda3", U1: "/dev/xvda1"}, run_id="ab12", last=True)
    assert cmds == [["sh", "-c", "@verify_uuid.sh", "kvm-verify-uuid", "ab12", "1", U3, "/dev/xvda3", U1,
                     "/dev/xvda1"]]  # fmt: skip
    for name, args in (("move_aside", {"paths": [], "olds": {}}), ("copy_efi_fallback", {"esp": "/efi", "copies": []}),
                       ("verify_uuids", {"expected": {}})):  # fmt: skip
        cmds, fake = op(name, **args)
        assert cmds == [] and len(fake.noops) == 1


def test_rewrite_shows_a_diff(caplog):
    caplog.set_level(logging.INFO)
    old = text(FIXTURES / "fstab/gentoo-ec2-xvda.fstab")
    new, _ = fx.render_fixes({"/etc/fstab": old}, bp.fstab_findings(old), {"/dev/xvda1": U1})
    op("rewrite_files", diff=True, changes={"/etc/fstab": (old, new["/etc/fstab"])})
    assert "Will modify /etc/fstab" in caplog.text
    assert "- /dev/xvda1 / ext4 defaults 1 1" in caplog.text and f"+ UUID={U1} / ext4 defaults 1 1" in caplog.text


# --- 3. the host scripts --------------------------------------------------------------------------

SHELLS = ["sh"] + (["busybox sh"] if shutil.which("busybox") else [])


def _namespaces() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not Path("/usr/local/sbin").is_dir():
        return False
    Path("/run/kvm-drivers").mkdir(mode=0o700, exist_ok=True)  # the mount point (kvm_lock makes it too)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"]).returncode == 0


host_only = pytest.mark.skipif(not _namespaces(), reason="the host scripts run as root, in mount namespaces")


class Host:
    """A private /run/kvm-drivers (and, with tools, a /usr/local/sbin of STAND-INS) for each script run."""

    def __init__(self, tmp: Path, shell: str) -> None:
        self.tmp, self.shell = tmp, shell
        self.state = tmp / "state"
        self.state.mkdir(mode=0o700)
        self.sbin = tmp / "sbin"
        self.sbin.mkdir()

    def tool(self, name: str, body: str) -> None:
        """A STAND-IN for a host program, first in the scripts' PATH (tests only)."""
        (self.sbin / name).write_text(f"#!/bin/sh\n# STAND-IN for {name} (tests only)\n{body}\n")
        (self.sbin / name).chmod(0o755)

    def sh(self, command: str) -> subprocess.CompletedProcess:
        """command (a shell command line, as pyinfra sends it) run in the namespace by this host's shell."""
        binds = (f"mount --bind {shlex.quote(str(self.state))} /run/kvm-drivers && "
                 f"mount --bind {shlex.quote(str(self.sbin))} /usr/local/sbin")  # fmt: skip
        inner = f'{binds} && exec {self.shell} -c "$1"'
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "ns", command],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def run(self, script: str, name: str, *args: str) -> subprocess.CompletedProcess:
        return self.sh(" ".join(shlex.quote(x) for x in (self.shell.split()[0], *self.shell.split()[1:], "-c", script,
                                                         name, *args)))  # fmt: skip

    def rollback(self, run: str) -> subprocess.CompletedProcess:
        return self.run(hostside.ROLLBACK, "kvm-rollback", run)

    def entries(self, run: str) -> list[str]:
        d = self.state / f"rollback.{run}"
        return sorted((e / "path").read_text() for e in d.iterdir()) if d.exists() else []


@pytest.fixture(params=SHELLS)
def h(request, tmp_path) -> Host:
    if not _namespaces():
        pytest.skip("the host scripts run as root, in mount namespaces")
    return Host(tmp_path, request.param)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def command(run: str, script: str, name: str, *args: str) -> str:
    """A command as the operations build it (fx._or_roll_back), as the text pyinfra runs."""
    return fx._or_roll_back(run, "sh", "-c", QuoteString(script), name, *map(QuoteString, args)).get_raw_value()


def test_write_then_rollback(h):
    f = h.tmp / "fstab"
    f.write_text(FSTAB)
    f.chmod(0o640)
    ok(h.run(hostside.WRITE, "kvm-write", str(f), f"UUID={U1} /data ext4 defaults 0 2\n", "1", FSTAB, "aa11"))
    assert f.read_text().startswith("UUID=") and oct(f.stat().st_mode & 0o777) == "0o640"
    proc = h.rollback("aa11")
    assert proc.returncode == 1 and f"restored {f}" in proc.stderr
    assert "what run aa11 changed is rolled back" in proc.stderr
    assert f.read_text() == FSTAB and oct(f.stat().st_mode & 0o777) == "0o640" and h.entries("aa11") == []


def test_move_aside_then_rollback(h):
    rules = h.tmp / "70-persistent-net.rules"
    rules.write_text("old rule\n")
    rules.chmod(0o600)
    ok(h.run(hostside.ASIDE, "kvm-aside", str(rules), "old rule\n", "bb22"))
    disabled = h.tmp / "70-persistent-net.rules.kvm-drivers-disabled"
    assert not rules.exists() and disabled.read_text() == "old rule\n" and oct(disabled.stat().st_mode) == "0o100600"
    assert h.entries("bb22") == [str(rules), str(disabled)]
    again = ok(h.run(hostside.ASIDE, "kvm-aside", str(rules), "old rule\n", "bb22"))  # done already: nothing to do
    assert "already moved aside" in again.stdout
    proc = h.rollback("bb22")
    assert f"restored {rules}" in proc.stderr and f"removed {disabled} again" in proc.stderr
    assert rules.read_text() == "old rule\n" and oct(rules.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in h.tmp.iterdir()) == ["70-persistent-net.rules", "sbin", "state"]


def test_a_file_put_back_since_it_was_moved_aside_is_not_rolled_back(h):
    rules = h.tmp / "70-persistent-net.rules"
    rules.write_text("old rule\n")
    ok(h.run(hostside.ASIDE, "kvm-aside", str(rules), "old rule\n", "cc33"))
    rules.write_text("the admin's new rule\n")
    proc = h.rollback("cc33")
    assert f"{rules} is back since this run removed it: not rolled back" in proc.stderr
    assert rules.read_text() == "the admin's new rule\n"
    assert not (h.tmp / "70-persistent-net.rules.kvm-drivers-disabled").exists()


def test_move_aside_refusals(h):
    rules = h.tmp / "70-persistent-net.rules"
    rules.write_text("changed\n")
    proc = h.run(hostside.ASIDE, "kvm-aside", str(rules), "old rule\n", "dd44")
    assert proc.returncode == 1 and "changed since its state was gathered: nothing moved" in proc.stderr
    ifcfg = h.tmp / "ifcfg-eth0"
    ifcfg.write_text("x\n")
    proc = h.run(hostside.ASIDE, "kvm-aside", str(ifcfg), "x\n", "dd44")
    assert proc.returncode == 1 and "its reader would still read it" in proc.stderr
    link = h.tmp / "80-link.rules"
    link.symlink_to(rules)
    proc = h.run(hostside.ASIDE, "kvm-aside", str(link), "changed\n", "dd44")
    assert proc.returncode == 1 and "is a symbolic link: not moved" in proc.stderr
    (h.tmp / "70-persistent-net.rules.kvm-drivers-disabled").write_text("an earlier copy\n")
    proc = h.run(hostside.ASIDE, "kvm-aside", str(rules), "changed\n", "dd44")
    assert proc.returncode == 1 and "exists already" in proc.stderr and rules.read_text() == "changed\n"
    proc = h.run(hostside.ASIDE, "kvm-aside", str(rules), "changed\n", "../x")
    assert proc.returncode == 1 and "bad run id" in proc.stderr


def test_a_failed_step_rolls_back_what_the_run_changed(h):
    # as the operations chain it: write.sh (or aside.sh) || rollback.sh
    fstab, rules = h.tmp / "fstab", h.tmp / "70-persistent-net.rules"
    fstab.write_text(FSTAB)
    rules.write_text("old rule\n")
    ok(h.sh(command("ee55", hostside.ASIDE, "kvm-aside", str(rules), "old rule\n", "ee55")))
    menu = h.tmp / "menu.lst"
    menu.write_text("kernel /vmlinuz root=/dev/xvda1 # edited since\n")
    proc = h.sh(command("ee55", hostside.WRITE, "kvm-write", str(menu), "new\n", "1",
                        "kernel /vmlinuz root=/dev/xvda1\n", "ee55"))  # fmt: skip
    assert proc.returncode == 1 and "changed since its state was gathered" in proc.stderr
    assert "what run ee55 changed is rolled back" in proc.stderr
    assert rules.read_text() == "old rule\n" and not (h.tmp / "70-persistent-net.rules.kvm-drivers-disabled").exists()
    assert menu.read_text() == "kernel /vmlinuz root=/dev/xvda1 # edited since\n" and fstab.read_text() == FSTAB


def esp(h: Host) -> Path:
    top = h.tmp / "esp"
    (top / "EFI/debian").mkdir(parents=True)
    files = {"shimx64.efi": b"shim\0" * 50, "grubx64.efi": b"grub\0" * 80, "grub.cfg": b"configfile x\n"}
    for name, data in files.items():
        (top / "EFI/debian" / name).write_bytes(data)
    return top


PAIRS = ["EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "EFI/BOOT/grubx64.efi",
         "EFI/debian/grub.cfg", "EFI/BOOT/grub.cfg"]  # fmt: skip


def test_copy_then_rollback(h):
    top = esp(h)
    (top / "EFI/BOOT").mkdir()
    (top / "EFI/BOOT/grub.cfg").write_text("an older fallback's config\n")
    ok(h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "ff66", *PAIRS))
    boot = top / "EFI/BOOT"
    assert (boot / "BOOTX64.EFI").read_bytes() == (top / "EFI/debian/shimx64.efi").read_bytes()
    assert (boot / "grubx64.efi").read_bytes() == (top / "EFI/debian/grubx64.efi").read_bytes()
    assert (boot / "grub.cfg").read_bytes() == b"configfile x\n"
    assert sorted(p.name for p in boot.iterdir()) == ["BOOTX64.EFI", "grub.cfg", "grubx64.efi"]  # no temporary file
    again = ok(h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "ff66", *PAIRS))
    assert again.stdout.count("already holds") == 3
    proc = h.rollback("ff66")
    assert f"removed {boot}/BOOTX64.EFI again" in proc.stderr and f"restored {boot}/grub.cfg" in proc.stderr
    assert sorted(p.name for p in boot.iterdir()) == ["grub.cfg"]
    assert (boot / "grub.cfg").read_text() == "an older fallback's config\n"


def test_copy_never_follows_a_link(h):
    top = esp(h)
    victim = h.tmp / "victim"
    victim.write_text("secret\n")
    (top / "EFI/debian/shimx64.efi").unlink()
    (top / "EFI/debian/shimx64.efi").symlink_to(victim)  # a link to read from outside the ESP
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "aa77", *PAIRS)
    assert proc.returncode == 1 and "is gone, not a regular file or behind a link" in proc.stderr
    assert not (top / "EFI/BOOT").exists()
    (top / "EFI/debian/shimx64.efi").unlink()
    (top / "EFI/debian/shimx64.efi").write_bytes(b"shim")
    outside = h.tmp / "outside"
    outside.mkdir()
    (top / "EFI/BOOT").symlink_to(outside)  # a link to write outside the ESP
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "aa77", *PAIRS)
    assert proc.returncode == 1 and "is not a plain directory" in proc.stderr and list(outside.iterdir()) == []
    (top / "EFI/BOOT").unlink()
    (top / "EFI/BOOT").mkdir()
    (top / "EFI/BOOT/grubx64.efi").symlink_to(victim)  # a target that is a link
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "aa77", *PAIRS)
    assert proc.returncode == 1 and "is not a regular file: nothing copied" in proc.stderr
    assert victim.read_text() == "secret\n" and sorted(p.name for p in (top / "EFI/BOOT").iterdir()) == ["grubx64.efi"]
    linked = h.tmp / "esp-link"
    linked.symlink_to(top)
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(linked), "aa77", *PAIRS)
    assert proc.returncode == 1 and "a link is in its path" in proc.stderr
    for bad in (["EFI/debian/../../victim", "EFI/BOOT/x"], ["EFI/debian/grub.cfg", "EFI/BOOT/../../x"],
                ["EFI/debian/grub.cfg", "EFI/debian/x"], ["EFI/debian/grub.cfg"]):  # fmt: skip
        proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "aa77", *bad)
        assert proc.returncode == 1 and ("refusing to copy" in proc.stderr or "nothing to copy" in proc.stderr)


def test_copy_refuses_a_fallback_that_appeared_since_the_gather(h):
    top = esp(h)
    (top / "EFI/BOOT").mkdir()
    (top / "EFI/BOOT/BOOTX64.EFI").write_bytes(b"another loader")
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "bb88", *PAIRS)
    assert proc.returncode == 1 and "appeared since the state was gathered: nothing copied" in proc.stderr
    assert sorted(p.name for p in (top / "EFI/BOOT").iterdir()) == ["BOOTX64.EFI"]


def test_copy_failing_half_way_rolls_back_the_run(h):
    top = esp(h)
    fstab = h.tmp / "fstab"
    fstab.write_text(FSTAB)
    ok(h.run(hostside.WRITE, "kvm-write", str(fstab), "new\n", "1", FSTAB, "cc99"))
    h.tool("cp", 'case "$1" in *grubx64.efi) echo "cp: No space left on device" >&2; exit 1 ;; esac\n'
           'exec /bin/cp "$@"')  # fmt: skip
    proc = h.run(hostside.EFI_COPY, "kvm-efi-copy", str(top), "cc99", *PAIRS)
    assert proc.returncode == 1 and "cannot copy" in proc.stderr and "No space left on device" in proc.stderr
    assert fstab.read_text() == FSTAB and list((top / "EFI/BOOT").iterdir()) == []  # BOOTX64.EFI removed again


def test_verify_uuid_mismatch_rolls_back_the_run(h):
    # STAND-IN for findfs: U1 is on /dev/zero, U2 on nothing (/dev/null and /dev/zero play block devices)
    h.tool("findfs", f'[ "$1" = "UUID={U1}" ] && {{ echo /dev/zero; exit 0; }}\necho "findfs: unable to resolve" >&2; '
           "exit 1")  # fmt: skip
    h.tool("blkid", "exit 2")  # STAND-IN: blkid -U finds nothing either
    fstab = h.tmp / "fstab"
    fstab.write_text(FSTAB)
    ok(h.run(hostside.WRITE, "kvm-write", str(fstab), f"UUID={U1} /data ext4 defaults 0 2\n", "1", FSTAB, "dd00"))
    ok(h.run(hostside.VERIFY_UUID, "kvm-verify-uuid", "dd00", "0", U1, "/dev/zero"))
    assert h.entries("dd00") == [str(fstab)]  # not the last step: the state stays
    proc = h.run(hostside.VERIFY_UUID, "kvm-verify-uuid", "dd00", "0", U1, "/dev/null")
    assert proc.returncode == 1
    assert f"UUID={U1} is /dev/zero (/dev/zero), not /dev/null (/dev/null)" in proc.stderr
    assert fstab.read_text() == FSTAB and h.entries("dd00") == []
    proc = h.run(hostside.VERIFY_UUID, "kvm-verify-uuid", "dd00", "0", U2, "/dev/zero")
    assert proc.returncode == 1 and f"UUID={U2} names no device on this host (expected /dev/zero)" in proc.stderr
    proc = h.run(hostside.VERIFY_UUID, "kvm-verify-uuid", "dd00", "0", "$(id)", "/dev/zero")
    assert proc.returncode == 1 and "is not a UUID" in proc.stderr


GRUB_CFG = "menuentry 'Debian' {\n\tlinux /vmlinuz root=/dev/xvda1 ro\n}\n"


def test_regenerate_then_rollback_and_refusals(h):
    cfg = h.tmp / "grub.cfg"
    cfg.write_text(GRUB_CFG)
    cfg.chmod(0o600)
    # STAND-IN for grub2-mkconfig: writes what grub-mkconfig writes once /etc/default/grub names no device
    h.tool("grub2-mkconfig", f'[ "$1" = -o ] || exit 2\n'
                             f'printf "menuentry \'Debian\' {{\\n\\tlinux /vmlinuz root=UUID={U1} ro\\n}}\\n" > "$2"')
    out = ok(h.run(hostside.REGEN, "kvm-regen", str(cfg), GRUB_CFG, "ff00", "/dev/xvda1"))
    assert f"{cfg} regenerated by grub2-mkconfig" in out.stdout
    assert f"root=UUID={U1} ro" in cfg.read_text() and oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in h.tmp.iterdir()) == ["grub.cfg", "sbin", "state"]  # no temporary file left
    proc = h.rollback("ff00")
    assert f"restored {cfg}" in proc.stderr and cfg.read_text() == GRUB_CFG
    # the generator still writes the old name (GRUB_DISABLE_LINUX_UUID=true): nothing changes
    h.tool("grub2-mkconfig", 'printf "linux /vmlinuz root=/dev/xvda1\\n" > "$2"')
    proc = h.run(hostside.REGEN, "kvm-regen", str(cfg), GRUB_CFG, "ff01", "/dev/xvda1")
    assert proc.returncode == 1 and "still writes /dev/xvda1" in proc.stderr and cfg.read_text() == GRUB_CFG
    h.tool("grub2-mkconfig", 'echo "grub2-mkconfig: syntax error" >&2; exit 1')
    proc = h.run(hostside.REGEN, "kvm-regen", str(cfg), GRUB_CFG, "ff02", "/dev/xvda1")
    assert proc.returncode == 1 and "failed: grub2-mkconfig: syntax error" in proc.stderr
    proc = h.run(hostside.REGEN, "kvm-regen", str(cfg), "what it held before\n", "ff03", "/dev/xvda1")
    assert proc.returncode == 1 and "changed since its state was gathered" in proc.stderr
    assert cfg.read_text() == GRUB_CFG and sorted(p.name for p in h.tmp.iterdir()) == ["grub.cfg", "sbin", "state"]


def test_verify_uuid_last_drops_the_state(h):
    h.tool("findfs", "echo /dev/zero")  # STAND-IN for findfs
    f = h.tmp / "fstab"
    f.write_text(FSTAB)
    ok(h.run(hostside.WRITE, "kvm-write", str(f), "x\n", "1", FSTAB, "ee00"))
    out = ok(h.run(hostside.VERIFY_UUID, "kvm-verify-uuid", "ee00", "1", U1, "/dev/zero"))
    assert f"verified: UUID={U1}=/dev/zero" in out.stdout and h.entries("ee00") == [] and f.read_text() == "x\n"


@host_only
def test_verify_uuid_on_this_machines_own_root():
    found = subprocess.run(["findmnt", "-n", "-o", "UUID,SOURCE", "/"], capture_output=True, text=True).stdout.split()
    if len(found) != 2 or not fx.UUID.match(found[0]):
        pytest.skip("this machine's root has no UUID findfs could find")
    uuid, device = found
    proc = subprocess.run(["sh", "-c", hostside.VERIFY_UUID, "kvm-verify-uuid", "", "0", uuid, device],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["sh", "-c", hostside.VERIFY_UUID, "kvm-verify-uuid", "", "0", uuid, "/dev/null"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1 and "not /dev/null" in proc.stderr


def test_keep_of_a_removed_file_and_its_rollback(h):
    # lock.sh kvm_keep RUN FILE "": FILE is about to go; undoing puts it back while nothing is there
    f = h.tmp / "gone.rules"
    f.write_text("x\n")
    script = hostside.LIB + 'kvm_lock && kvm_keep "$1" "$2" "" && rm -f "$2"'
    ok(h.run(script, "kvm-test", "ff00", str(f)))
    assert not f.exists() and (next((h.state / "rollback.ff00").iterdir()) / "written").read_text() == "absent\n"
    assert f"restored {f}" in h.rollback("ff00").stderr and f.read_text() == "x\n"


def test_new_scripts_create_nothing_in_world_writable_places():
    for script in (hostside.ASIDE, hostside.EFI_COPY, hostside.VERIFY_UUID, hostside.ROLLBACK):
        code = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
        for place in ("/tmp", "/var/lock", "/var/tmp", "/dev/shm"):
            assert place not in code


def test_the_default_kernel_is_set_on_grub_legacy_s_default_line_only():
    """A default kernel that cannot run on KVM: kvm_set_default_kernel edits the one `default N` line of
    the GRUB legacy menu the default entry comes from (a real RHEL 5 grub.conf, grubby's test suite),
    N the entry of the kernel that would boot. GRUB 2 and BLS menus: by hand."""
    from kvm_drivers.facts import migration
    from kvm_drivers.facts.boot_menus import parse_boot

    path = "/boot/grub/grub.conf"
    conf = text(REAL / "legacy/grubby-rhel5-grub.conf")
    boot = parse_boot({path: conf})
    assert boot is not None and boot.default == 0
    entry = boot.entries[0]
    wanted = Fix("set-default-kernel", "", 0, "2.6.18-308.1.1.el5", "2.6.18-238.el5")
    fix = migration.set_default(SimpleNamespace(files={path: conf}), boot.entries, entry, wanted)
    assert fix == Fix("set-default-kernel", path, 10, "default=0", "default=1")
    found = Finding("no-virtio-kernel", bp.BLOCKS_BOOT, "/boot/config-x", 0, "x", "t", fix)
    plan = fx.plan_fixes({path: conf}, [found], {})
    assert plan.refused == [] and changed_lines(conf, plan.texts[path]) == {10: ("default=0\n", "default=1\n")}
    assert not fx.needs_rebuild(plan)
    twice = conf.replace("timeout=5", "default 0")  # two default lines: which one GRUB takes is not ours to guess
    assert migration.set_default(SimpleNamespace(files={path: twice}), boot.entries, entry, wanted) == wanted
    grub2 = dataclasses.replace(entry, origin="/boot/grub2/grub.cfg")
    assert migration.set_default(SimpleNamespace(files={}), boot.entries, grub2, wanted) == wanted
    refused = fx.plan_fixes({}, [Finding("xen-kernel", bp.BLOCKS_BOOT, "/boot/config-x", 0, "x", "t", wanted)], {})
    assert refused.refused == ["/boot/config-x: make 2.6.18-238.el5 the default kernel by hand (grubby --set-default, "
                               "grub2-set-default): kvm_set_default_kernel only edits GRUB legacy's default line "
                               "(menu.lst, grub.conf)"]  # fmt: skip
