"""The boot-path and network readers of issue 20 (facts/boot_path.py, facts/network.py) on real files.

Fixtures: tests/fixtures/boot_path (sources in its SOURCES.md). Expected kinds, lines and severities
come from the rules the programs follow (systemd, udev, the kernel, virt-v2v), cited there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kvm_drivers.facts import boot_path as bp
from kvm_drivers.facts import network as net
from kvm_drivers.facts.boot_path import ADVICE, BLOCKS_BOOT, BLOCKS_NETWORK, Fix

FIXTURES = Path(__file__).parent / "fixtures" / "boot_path"
REAL = Path(__file__).parent / "fixtures" / "real"
SEEN: list[bp.Finding] = []  # every finding the tests produce, for the vocabulary check at the end


def text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def rows(findings: list[bp.Finding]) -> list[tuple[str, str, int]]:
    SEEN.extend(findings)
    return [(f.kind, f.severity, f.line) for f in findings]


# --- device names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "/dev/xvda1", "/dev/xvdb", "/dev/xvdaa2", "/dev/hda1", "/dev/hdc", "/dev/sda", "/dev/sdab3", "/dev/sdb1",
    "/dev/nvme0n1p2", "/dev/nvme1n1", "/dev/cciss/c0d0p1", "/dev/ida/c0d0p2", "/dev/rd/c0d0p1", "/dev/mmcblk0p2",
    "/dev/disk/by-id/scsi-0DO_Volume_jupiter-1", "/dev/disk/by-id/ata-VBOX_HARDDISK_VB6ffa82a1-b88db3af-part1",
    "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part1", "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123",
    "/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:1:0-part1", '"/dev/xvda1"', "'/dev/sda2'", "block:/dev/sda1",
])  # fmt: skip
def test_device_names_that_do_not_exist_on_kvm(spec: str) -> None:
    assert bp.device_name_problem(spec) is not None


@pytest.mark.parametrize("spec", [
    "UUID=949779ce-46aa-434e-8eb0-852514a5d69e", "UUID=0a1b2c3d-nvme-sda1-xvda1", "LABEL=cloudimg-rootfs",
    'PARTUUID="5d24a228-d239-480c-aff1-354aaf5d39cd"', "PARTLABEL=root", "ZFS=rpool/ROOT/debian",
    "/dev/disk/by-uuid/9b9b0c1d-751c-478c-8492-2a51452ad154", "/dev/disk/by-label/ROOT",
    "/dev/disk/by-partuuid/4aa57d6f-01", "/dev/disk/by-id/dm-name-vg-root", "/dev/disk/by-id/md-uuid-1a2b:3c4d",
    "/dev/disk/by-id/lvm-pv-uuid-abc", "/dev/mapper/VolGroup00-LogVol00", "/dev/VolGroup00/LogVol00",
    "/dev/vg_xen/root", "/dev/md0", "/dev/md127", "/dev/md/root", "/dev/vda1", "/dev/vdb", "/dev/dm-0",
    "/dev/root", "/dev/zvol/pool/vol", "/dev/sr0", "/dev/cdrom", "/dev/fd0", "/dev/loop0",
    "/dev/hdd/backup", "/dev/sdb_vg/root", "/dev/xvdvg/lv0",  # LVM volume groups named like disks
    "server:/export/home", "//nas/share", "tmpfs", "none", "proc", "/swapfile", "/mnt/swapfile", "",
])  # fmt: skip
def test_device_names_that_survive(spec: str) -> None:
    assert bp.device_name_problem(spec) is None


def test_virtio_scsi_disks_are_sd_not_vd() -> None:
    assert bp.device_name_problem("/dev/sda1", "virtio-scsi") is None
    assert "virtio-blk disk name" in bp.device_name_problem("/dev/vda1", "virtio-scsi")
    assert bp.device_name_problem("/dev/xvda1", "virtio-scsi") is not None
    with pytest.raises(ValueError, match="disk_bus"):
        bp.device_name_problem("/dev/sda1", "ide")


def test_numeric_root_devices_only_on_the_kernel_line() -> None:
    # major 8 (sd), 202 (xvd), 3 (hd); hex dev_t as the kernel decodes it; 253 is dynamic (dm, virtio)
    for spec in ("0801", "8:1", "ca01", "202:1", "0301"):
        assert bp.device_name_problem(spec, kernel_line=True) is not None, spec
    for spec in ("fd00", "253:0", "259:1"):
        assert bp.device_name_problem(spec, kernel_line=True) is None, spec
    assert bp.device_name_problem("0801") is None  # not a device in fstab


# --- the kernel command line --------------------------------------------------------------------------


def test_kernel_args_split_and_unquote_as_the_kernel() -> None:
    args = bp.kernel_args('BOOT_IMAGE=/vmlinuz-6.1 ro\troot="/dev/sda 1" "resume=/dev/xvda3" quiet\n')
    assert args == {"BOOT_IMAGE": "/vmlinuz-6.1", "ro": None, "root": "/dev/sda 1", "resume": "/dev/xvda3",
                    "quiet": None}  # fmt: skip
    assert bp.kernel_args("root=/dev/sda1 root=UUID=abc")["root"] == "UUID=abc"  # the last one wins
    assert bp.kernel_args("root=UUID=abc -- root=/dev/sda1 single") == {"root": "UUID=abc"}  # init's arguments
    assert bp.kernel_args('root=a"b c"d')["root"] == 'a"b c"d'  # inner quotes stay, spaces inside them too
    assert bp.kernel_args('"quiet"') == {"quiet": None}
    assert bp.kernel_args('root=""') == {"root": ""}
    assert bp.kernel_args("") == {}


def test_gentoo_ec2_menu_lst_root_on_xvda() -> None:
    line = text("grub/gentoo-ec2-menu.lst").splitlines()[4]
    assert line.startswith("kernel /boot/bzImage ")
    found = bp.kernel_line_findings(line.split(None, 2)[2], "/boot/grub/menu.lst", 5)
    assert rows(found) == [("device-name", BLOCKS_BOOT, 5)]
    assert found[0].fix == Fix("device-to-uuid", "/boot/grub/menu.lst", 5, "root=/dev/xvda1")
    assert "Xen virtual disk" in found[0].message


def test_fedora_grub_conf_root_on_sda() -> None:
    lines = (REAL / "legacy" / "grubby-fedora23-grub.conf").read_text().splitlines()
    kernel_lines = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip().startswith("kernel ")]
    found = [f for n, ln in kernel_lines for f in bp.kernel_line_findings(" ".join(ln.split()[2:]), "grub.conf", n)]
    # 18 entries boot root=/dev/sda1; memtest, /f10vz, /gittest pass no root=; the Fedora 11 entry's
    # root=/dev/d2/rescue64 is an LVM volume (VG d2); the commented example is not a kernel line
    sda1 = [n for n, ln in kernel_lines if "root=/dev/sda1" in ln]
    assert len(sda1) == 18 and len(kernel_lines) == 22
    assert rows(found) == [("device-name", BLOCKS_BOOT, n) for n in sda1]


def test_opensuse_menu_lst_vd_names_depend_on_the_bus() -> None:
    line = (REAL / "legacy" / "grubby-opensuse12.1-menu.lst").read_text().splitlines()[12]
    args = line.split(None, 2)[2]
    assert "root=/dev/vda2 resume=/dev/vda1" in args
    assert bp.kernel_line_findings(args) == []
    found = bp.kernel_line_findings(args, disk_bus="virtio-scsi")
    assert rows(found) == [("device-name", BLOCKS_BOOT, 0), ("resume-device", BLOCKS_BOOT, 0)]
    assert [f.fix.old for f in found] == ["root=/dev/vda2", "resume=/dev/vda1"]
    assert found[0].fix.path == ""  # "kernel line": the caller knows where the value lives


def test_resume_device() -> None:
    assert rows(bp.kernel_line_findings("root=UUID=abc resume=/dev/xvda3")) == [("resume-device", BLOCKS_BOOT, 0)]
    assert bp.kernel_line_findings("root=UUID=abc resume=/dev/sda2 noresume") == []
    assert bp.kernel_line_findings("root=UUID=abc resume=UUID=def resume_offset=4096") == []
    assert bp.kernel_line_findings("root=/dev/mapper/vg-root resume=/dev/vg/swap") == []
    quoted = bp.kernel_line_findings('root="/dev/xvda1" ro')
    assert quoted[0].fix.old == 'root="/dev/xvda1"'


def test_default_grub() -> None:
    assert bp.default_grub_findings(text("grub/aws-rhel8-default-grub")) == []
    found = bp.default_grub_findings('GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="console=hvc0 root=/dev/xvda1"\n'
                                     'GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=/dev/sda2"\n'
                                     'GRUB_DISABLE_LINUX_UUID="true"\n#GRUB_DISABLE_LINUX_UUID=true\n')
    assert rows(found) == [("device-name", BLOCKS_BOOT, 2), ("resume-device", BLOCKS_BOOT, 3),
                           ("grub-no-uuid", ADVICE, 4)]  # fmt: skip
    assert found[0].text == 'GRUB_CMDLINE_LINUX="console=hvc0 root=/dev/xvda1"'
    assert found[0].fix == Fix("device-to-uuid", "/etc/default/grub", 2, "root=/dev/xvda1")
    assert bp.default_grub_findings("GRUB_DISABLE_LINUX_UUID=false\n") == []


# --- fstab --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("fstab/aws-rhel8.fstab", []),
    ("fstab/ubuntu-cloudimg-label.fstab", []),
    ("fstab/slackware-partuuid-quoted.fstab", []),
    ("fstab/digitalocean-byid-nofail.fstab", [("device-name", ADVICE, 14)]),
    ("fstab/slackware-extra-sda.fstab", [("device-name", BLOCKS_BOOT, 2)]),
    ("fstab/opensuse-byid.fstab", [("device-name", ADVICE, 1), ("device-name", BLOCKS_BOOT, 2)]),
    ("fstab/gentoo-ec2-xvda.fstab", [("device-name", BLOCKS_BOOT, 1), ("device-name", ADVICE, 2)]),
])  # fmt: skip
def test_fstab_files(name: str, expected: list[tuple[str, str, int]]) -> None:
    assert rows(bp.fstab_findings(text(name))) == expected


def test_fstab_fix_and_message() -> None:
    found = bp.fstab_findings(text("fstab/gentoo-ec2-xvda.fstab"))
    assert found[0].fix == Fix("device-to-uuid", "/etc/fstab", 1, "/dev/xvda1")
    assert found[0].text == "/dev/xvda1 / ext4 defaults 1 1"
    assert "emergency" in found[0].message and "swap" in found[1].message
    assert bp.fstab_findings(text("fstab/slackware-extra-sda.fstab"), disk_bus="virtio-scsi") == []


@pytest.mark.parametrize("line, expected", [
    ("/dev/xvdb1 /data ext4 defaults 0 2", [("device-name", BLOCKS_BOOT, 1)]),
    ("/dev/xvdb1\t/data\text4\tdefaults\t0\t2", [("device-name", BLOCKS_BOOT, 1)]),
    ("/dev/xvdb1 /data ext4", [("device-name", BLOCKS_BOOT, 1)]),  # options default to "defaults"
    ("/dev/xvdb1 /data ext4 defaults,noauto 0 2", []),
    ("/dev/xvdb1 /data ext4 noauto,auto 0 2", [("device-name", BLOCKS_BOOT, 1)]),  # the last one wins
    ("/dev/xvdb1 /data ext4 auto,noauto 0 2", []),
    ("/dev/xvdb1 /data ext4 nofail 0 2", [("device-name", ADVICE, 1)]),
    ("/dev/xvdb1 /data ext4 nofail,fail 0 2", [("device-name", BLOCKS_BOOT, 1)]),
    ("/dev/xvda1 / ext4 defaults,nofail 0 1", [("device-name", BLOCKS_BOOT, 1)]),  # "/" ignores nofail
    ("/dev/xvda1 / ext4 noauto 0 1", [("device-name", BLOCKS_BOOT, 1)]),  # and noauto
    ("/dev/sdb1 /home ext4 x-systemd.automount 0 2", [("device-name", ADVICE, 1)]),
    ("/dev/sdb1 /home ext4 comment=systemd.automount 0 2", [("device-name", ADVICE, 1)]),
    ("/dev/sdb1 /iscsi ext4 _netdev 0 0", []),  # a network disk keeps its name
    ("/dev/sdc2 none swap sw 0 0", [("device-name", ADVICE, 1)]),
    ("/dev/dm-3 /srv xfs defaults 0 0", [("device-name", ADVICE, 1)]),
    ("  # /dev/xvdb1 /data ext4 defaults 0 2", []),
    ("/dev/xvdb1", []),  # no mount point: not an entry
    ("UUID=a1b2 /data ext4 defaults 0 2\n/dev/VolGroup00/LogVol02 /home ext3 defaults,usrquota 1 2", []),
])  # fmt: skip
def test_fstab_entries(line: str, expected: list[tuple[str, str, int]]) -> None:
    assert rows(bp.fstab_findings(line)) == expected


def test_fstab_octal_escapes() -> None:
    found = bp.fstab_findings("/dev/xvdb1 /srv/my\\040data ext4 defaults 0 2\n", "/mnt/root/etc/fstab")
    assert found[0].message.startswith("/srv/my data: ") and found[0].where == "/mnt/root/etc/fstab"
    assert bp.fstab_findings("/dev/disk/by-label/my\\040disk /data ext4 defaults 0 2") == []


# --- crypttab -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("crypttab/slackware-sda.crypttab", [("device-name", BLOCKS_BOOT, 1), ("device-name", BLOCKS_BOOT, 2)]),
    ("crypttab/debian-noauto-sdc.crypttab", []),
    ("crypttab/devuan-uuid.crypttab", []),
    ("crypttab/grapheneos-swapfile.crypttab", []),
    ("crypttab/nc10-mapper-swap.crypttab", []),
    ("crypttab/cryptroot-by-uuid.crypttab", []),
])  # fmt: skip
def test_crypttab_files(name: str, expected: list[tuple[str, str, int]]) -> None:
    assert rows(bp.crypttab_findings(text(name))) == expected


def test_crypttab_options() -> None:
    found = bp.crypttab_findings(text("crypttab/slackware-sda.crypttab"))
    assert found[0].fix == Fix("device-to-uuid", "/etc/crypttab", 1, "/dev/sda1")
    assert found[0].message.startswith("/dev/mapper/sda1_crypt: ")
    assert rows(bp.crypttab_findings("data /dev/xvdb1 none luks,nofail\n")) == [("device-name", ADVICE, 1)]
    assert rows(bp.crypttab_findings("cswap /dev/xvda3 /dev/urandom swap\n")) == [("device-name", ADVICE, 1)]
    assert rows(bp.crypttab_findings("data /dev/xvdb1\n")) == [("device-name", BLOCKS_BOOT, 1)]


# --- kernels ------------------------------------------------------------------------------------------

XEN_CONFIG = "CONFIG_X86_64=y\nCONFIG_X86_64_XEN=y\nCONFIG_XEN=y\nCONFIG_XEN_BLKDEV_FRONTEND=m\n"
XEN_I386_CONFIG = "CONFIG_X86_32=y\nCONFIG_X86_XEN=y\nCONFIG_XEN=y\n"
PVOPS_CONFIG = "CONFIG_XEN=y\nCONFIG_XEN_PVHVM=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_VIRTIO_PCI=m\n"
NO_VIRTIO_CONFIG = "CONFIG_ATA_PIIX=y\nCONFIG_VIRTIO=y\nCONFIG_VIRTIO_MENU=y\nCONFIG_VIRTIO_BLK_SCSI=y\n" \
    "# CONFIG_VIRTIO_BLK is not set\n"  # fmt: skip
BLK_ONLY_CONFIG = "CONFIG_VIRTIO_BLK=y\n"


def test_kernel_problem() -> None:
    assert bp.kernel_problem("2.6.16.60-0.21-xen", XEN_CONFIG)[0] == "xen-kernel"
    assert bp.kernel_problem("2.6.18-8.el5xen", XEN_I386_CONFIG)[0] == "xen-kernel"
    assert bp.kernel_problem("2.6.18-398.el5xen", None)[0] == "xen-kernel"  # the flavour, no config
    assert bp.kernel_problem("3.0.101-63-xen", None)[0] == "xen-kernel"
    assert bp.kernel_problem("2.6.32-5-xen-amd64", None) is None  # Debian's pvops flavour: not known bad
    assert bp.kernel_problem("6.1.0-18-amd64", PVOPS_CONFIG) is None  # CONFIG_XEN alone is not Xen-PV-only
    assert bp.kernel_problem("6.1.0-18-amd64", None) is None
    kind, why = bp.kernel_problem("4.9.0-custom", NO_VIRTIO_CONFIG)
    assert kind == "no-virtio-kernel" and "CONFIG_VIRTIO_BLK unset" in why  # not fooled by VIRTIO_BLK_SCSI
    assert bp.kernel_problem("4.9.0-custom", NO_VIRTIO_CONFIG, ["virtio-blk"]) is None  # the module is there
    assert bp.kernel_problem("4.9.0-custom", "CONFIG_VIRTIO_BLK=n\nCONFIG_VIRTIO_BLK=y\n")[0] == "no-virtio-kernel"
    assert bp.kernel_problem("6.1.0-18-amd64", BLK_ONLY_CONFIG, disk_bus="virtio-scsi")[0] == "no-virtio-kernel"


def test_kernel_findings_name_the_kernels_that_would_boot() -> None:
    kernels = [("2.6.18-398.el5xen", XEN_CONFIG), ("2.6.18-398.el5debug", PVOPS_CONFIG),
               ("2.6.18-398.el5", PVOPS_CONFIG), ("2.6.18-371.el5", PVOPS_CONFIG),
               ("2.6.18-400.el5", BLK_ONLY_CONFIG), ("2.6.18-399.el5", None)]  # fmt: skip
    found = bp.kernel_findings(kernels, "2.6.18-398.el5xen")
    assert rows(found) == [("xen-kernel", BLOCKS_BOOT, 0)]
    # virtio_net first (400 has only virtio_blk), then the version, then not the debug kernel; 399: unknown
    assert found[0].fix == Fix("set-default-kernel", "", 0, "2.6.18-398.el5xen", "2.6.18-398.el5")
    assert "2.6.18-398.el5, 2.6.18-398.el5debug, 2.6.18-371.el5, 2.6.18-400.el5" in found[0].message
    assert found[0].where == "/boot/config-2.6.18-398.el5xen"
    assert bp.kernel_findings(kernels, "2.6.18-398.el5") == []
    assert bp.kernel_findings(kernels, "not-installed") == []
    only = bp.kernel_findings([("2.6.18-398.el5xen", None)], "2.6.18-398.el5xen")
    assert only[0].fix is None and "no installed kernel has virtio_blk" in only[0].message
    with_modules = bp.kernel_findings([("4.9.0-custom", NO_VIRTIO_CONFIG), ("4.8.0", NO_VIRTIO_CONFIG)], "4.9.0-custom",
                                      modules={"4.8.0": ["virtio_blk"]})  # fmt: skip
    assert rows(with_modules) == [("no-virtio-kernel", BLOCKS_BOOT, 0)] and with_modules[0].fix.new == "4.8.0"


# --- paravirtual leftovers ----------------------------------------------------------------------------

CENTOS5_XEN_MODPROBE = "alias scsi_hostadapter xenblk\nalias eth0 xennet\n"


def test_modprobe_xen_aliases() -> None:
    found = bp.modprobe_findings(CENTOS5_XEN_MODPROBE, "/etc/modprobe.conf")
    assert rows(found) == [("pv-leftover", ADVICE, 1), ("pv-leftover", ADVICE, 2)]
    assert found[0].fix == Fix("replace-line", "/etc/modprobe.conf", 1, "alias scsi_hostadapter xenblk",
                               "alias scsi_hostadapter virtio_blk")  # fmt: skip
    assert found[1].fix == Fix("replace-line", "/etc/modprobe.conf", 2, "alias eth0 xennet", "alias eth0 virtio_net")
    more = bp.modprobe_findings("alias scsi_hostadapter mptspi\nalias scsi_hostadapter1 xen-vbd\n"
                                "alias scsi_hostadapter2 xenblk\n# alias eth1 xennet\nalias eth1 e1000\n"
                                "alias eth10 vmxnet3\nalias ethernet xennet\nalias net-pf-10 off\n", "/etc/x.conf")
    assert rows(more) == [("pv-leftover", ADVICE, 2), ("pv-leftover", ADVICE, 3), ("pv-leftover", ADVICE, 6)]
    assert [f.fix.action for f in more] == ["replace-line", "delete-line", "replace-line"]
    assert more[0].fix.new == "alias scsi_hostadapter1 virtio_blk"


def test_suse_sysconfig_kernel() -> None:
    lines = text("sysconfig/opensuse-kernel").splitlines()
    assert lines[31] == 'DOMU_INITRD_MODULES="xennet xenblk"'
    found = bp.sysconfig_kernel_findings(text("sysconfig/opensuse-kernel"))
    assert rows(found) == [("pv-leftover", ADVICE, 32)]
    assert found[0].fix == Fix("replace-line", "/etc/sysconfig/kernel", 32, lines[31], 'DOMU_INITRD_MODULES=""')
    found = bp.sysconfig_kernel_findings('INITRD_MODULES="ata_piix xenblk ata_generic" # SLES 10\n')
    assert found[0].fix.new == 'INITRD_MODULES="ata_piix ata_generic"'
    assert bp.sysconfig_kernel_findings('INITRD_MODULES="virtio_blk xen_blkfront_foo"\n') == []


# --- UEFI ---------------------------------------------------------------------------------------------

DEBIAN_ESP = ["EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi", "EFI/debian/mmx64.efi", "EFI/debian/fbx64.efi",
              "EFI/debian/grub.cfg", "EFI/debian/BOOTX64.CSV"]  # fmt: skip


def test_efi_fallback_missing_on_debian() -> None:
    found = bp.efi_fallback_findings(DEBIAN_ESP)
    assert rows(found) == [("efi-fallback", BLOCKS_BOOT, 0)]
    assert found[0].fix.copies == (("EFI/debian/shimx64.efi", "EFI/BOOT/BOOTX64.EFI"),
                                   ("EFI/debian/grubx64.efi", "EFI/BOOT/grubx64.efi"),
                                   ("EFI/debian/mmx64.efi", "EFI/BOOT/mmx64.efi"),
                                   ("EFI/debian/grub.cfg", "EFI/BOOT/grub.cfg"))  # fmt: skip
    assert bp.efi_fallback_findings(DEBIAN_ESP, firmware="bios") == []


@pytest.mark.parametrize("present", ["EFI/BOOT/BOOTX64.EFI", "efi/boot/bootx64.efi", "/EFI/Boot/BootX64.efi",
                                     "\\EFI\\BOOT\\BOOTX64.EFI"])  # fmt: skip
def test_efi_fallback_present_any_case(present: str) -> None:
    assert bp.efi_fallback_findings(DEBIAN_ESP + [present]) == []


def test_efi_fallback_without_shim_and_legacy_grub() -> None:
    found = bp.efi_fallback_findings(["EFI/arch/grubx64.efi"])
    assert found[0].fix.copies == (("EFI/arch/grubx64.efi", "EFI/BOOT/BOOTX64.EFI"),)
    centos6 = bp.efi_fallback_findings(["EFI/redhat/grub.efi", "EFI/redhat/grub.conf"])
    assert centos6[0].fix.copies == (("EFI/redhat/grub.efi", "EFI/BOOT/BOOTX64.EFI"),
                                     ("EFI/redhat/grub.conf", "EFI/BOOT/BOOTX64.conf"))  # fmt: skip
    sles = bp.efi_fallback_findings(["EFI/sles/shim.efi", "EFI/sles/grub.efi", "EFI/sles/MokManager.efi",
                                     "EFI/sles/grub.cfg"])  # fmt: skip
    assert sles[0].fix.copies == (("EFI/sles/shim.efi", "EFI/BOOT/BOOTX64.EFI"),
                                  ("EFI/sles/grub.efi", "EFI/BOOT/grub.efi"),
                                  ("EFI/sles/MokManager.efi", "EFI/BOOT/MokManager.efi"),
                                  ("EFI/sles/grub.cfg", "EFI/BOOT/grub.cfg"))  # fmt: skip
    arm = bp.efi_fallback_findings(["EFI/debian/shimaa64.efi", "EFI/debian/grubaa64.efi"], arch="aa64")
    assert arm[0].text == "EFI/BOOT/BOOTAA64.EFI" and arm[0].fix.copies[0][1] == "EFI/BOOT/BOOTAA64.EFI"


def test_efi_fallback_several_distributions_pick_deterministically() -> None:
    esp = ["EFI/centos/grubx64.efi", "EFI/ubuntu/grubx64.efi", "EFI/ubuntu/shimx64.efi", "EFI/BOOT/fbx64.efi"]
    found = bp.efi_fallback_findings(esp)
    assert found[0].fix.copies[0] == ("EFI/ubuntu/shimx64.efi", "EFI/BOOT/BOOTX64.EFI")  # the one with a shim
    assert "also found: centos; chose ubuntu" in found[0].message
    assert bp.efi_fallback_findings(esp, distro="centos")[0].fix.copies[0][0] == "EFI/centos/grubx64.efi"
    assert bp.efi_fallback_findings(list(reversed(esp)))[0].fix == found[0].fix
    two = bp.efi_fallback_findings(["EFI/zeta/grubx64.efi", "EFI/alpha/grubx64.efi"])
    assert two[0].fix.copies[0][0] == "EFI/alpha/grubx64.efi"


def test_efi_fallback_nothing_to_copy() -> None:
    found = bp.efi_fallback_findings(["EFI/Microsoft/Boot/bootmgfw.efi", "EFI/BOOT/fbx64.efi"])
    assert rows(found) == [("efi-fallback", BLOCKS_BOOT, 0)] and found[0].fix is None


# --- network ------------------------------------------------------------------------------------------

RULES = "/etc/udev/rules.d/70-persistent-net.rules"


def net_rows(path: str, name: str, **kw: bool) -> list[tuple[str, str, int]]:
    return rows(net.network_findings({path: text(name)}, **kw))


@pytest.mark.parametrize("name, lines", [
    ("udev/aws-rhel8-70-persistent-net.rules", [1]),
    ("udev/opensuse-70-persistent-net.rules", [13, 16, 19, 22]),
    ("udev/airlink-70-persistent-net.rules", [8, 11]),
    ("udev/slackware-wlan-70-persistent-net.rules", []),  # KERNEL=="wlan*": never a virtio NIC
])  # fmt: skip
def test_persistent_net_rules(name: str, lines: list[int]) -> None:
    assert net_rows(RULES, name) == [("nic-rule", BLOCKS_NETWORK, n) for n in lines]
    assert net_rows(RULES, name, persistent_net_generator=False) == [("nic-rule", ADVICE, n) for n in lines]


def test_persistent_net_rule_fix_moves_the_file_aside() -> None:
    found = net.network_findings({RULES: text("udev/aws-rhel8-70-persistent-net.rules")})
    assert found[0].fix == Fix("move-aside", RULES) and "names eth0 by MAC 0a:17:a5:8c:7a:76" in found[0].message
    xen_oui = 'SUBSYSTEM=="net", ATTR{address}=="00:16:3e:*", KERNEL=="eth*", NAME="xen0"\n'
    assert rows(net.network_findings({RULES: xen_oui})) == [("nic-rule", BLOCKS_NETWORK, 1)]
    for rule in ('SUBSYSTEM=="net", ATTR{address}=="?*", NAME="lan0"\n',
                 'SUBSYSTEM=="tty", ATTR{address}=="00:16:3e:00:00:01", NAME="x"\n'):
        assert net.network_findings({RULES: rule}) == []


def test_udev_name_for() -> None:
    aws = text("udev/aws-rhel8-70-persistent-net.rules")
    assert net.udev_name_for(aws, "0a:17:a5:8c:7a:76") == "eth0"
    assert net.udev_name_for(aws, "52:54:00:12:34:56") is None  # the KVM NIC: no rule names it
    assert net.udev_name_for(aws, "0A:17:A5:8C:7A:76") is None  # udev compares case-sensitively
    suse = text("udev/opensuse-70-persistent-net.rules")
    assert net.udev_name_for(suse, "08:00:27:db:b2:b7") == "eth2"
    assert net.udev_name_for(suse, "08:00:27:db:b2:b7", kernel="ens3") is None  # KERNEL=="eth*"
    wlan = text("udev/slackware-wlan-70-persistent-net.rules")
    assert net.udev_name_for(wlan, "64:32:a8:7e:60:99") is None
    assert net.udev_name_for(wlan, "64:32:a8:7e:60:99", kernel="wlan0") == "wlan0"


@pytest.mark.parametrize("rules, expected", [
    ('SUBSYSTEM=="net", DRIVERS=="e1000", NAME="lan0"', None),  # the driver chain is virtio_net, virtio-pci
    ('SUBSYSTEM=="net", DRIVERS=="virtio-pci", NAME="lan0"', "lan0"),
    ('SUBSYSTEM=="net", ATTRS{vendor}=="0x1af4", NAME="lan0"', "lan0"),
    ('SUBSYSTEM=="net", ATTRS{address}=="52:54:00:*", NAME="lan0"', "lan0"),
    ('SUBSYSTEM=="net", ATTR{address}=="aa:*|52:54:*", NAME="lan0"', "lan0"),
    ('SUBSYSTEM=="net", ATTR{address}!="52:54:*", NAME="lan0"', None),
    ('SUBSYSTEM=="block", NAME="lan0"', None),
    ('SUBSYSTEM=="net", ENV{ID_NET_NAME}=="?*", NAME="lan0"', None),  # a key this model does not know
    ('SUBSYSTEM=="net", ENV{ID_NET_NAME}!="eth9", NAME="lan0"', None),
    ('SUBSYSTEM=="net", NAME:="first"\nSUBSYSTEM=="net", NAME="second"', "first"),
    ('SUBSYSTEM=="net", NAME="first"\nSUBSYSTEM=="net", NAME="second"', "second"),
    ('SUBSYSTEM=="net", GOTO="end"\nSUBSYSTEM=="net", NAME="skipped"\nLABEL="end"', None),
    ('SUBSYSTEM=="net", \\\n  ATTR{address}=="52:54:00:12:34:56", NAME="joined"', "joined"),
    ('SUBSYSTEM=="net", ATTR{address}=="aa:bb:cc:dd:ee:ff", \\\n  NAME="joined"', None),
    ('SUBSYSTEM=="net", garbage NAME="lan0"', None),
    ('NAME="lan0", garbage', None),  # udev drops a line it cannot parse
])  # fmt: skip
def test_udev_matching(rules: str, expected: str | None) -> None:
    assert net.udev_name_for(rules, "52:54:00:12:34:56") == expected


IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"


def test_rhel_ifcfg() -> None:
    assert net_rows(IFCFG, "ifcfg/aws-rhel8-ifcfg-eth0") == [("nic-mac-binding", BLOCKS_NETWORK, 5)]
    found = net.network_findings({IFCFG: text("ifcfg/nm-test-wired-static")})
    assert rows(found) == [("nic-mac-binding", BLOCKS_NETWORK, 4), ("static-address", BLOCKS_NETWORK, 5)]
    assert found[0].fix == Fix("delete-line", IFCFG, 4, "HWADDR=00:11:22:33:44:ee")
    assert found[1].fix is None and "no interface uses DHCP" in found[1].message
    assert net_rows(IFCFG, "ifcfg/nm-test-onboot-no") == []
    both = net.network_findings({IFCFG: text("ifcfg/aws-rhel8-ifcfg-eth0"),
                                 IFCFG[:-1] + "1": text("ifcfg/nm-test-wired-static")})  # fmt: skip
    assert ("static-address", ADVICE, 5) in rows(both)  # another interface uses DHCP
    assert net.network_findings({IFCFG + ".bak": text("ifcfg/nm-test-wired-static")}) == []
    assert net.network_findings({IFCFG[:-4] + "lo": "DEVICE=lo\nIPADDR=127.0.0.1\n"}) == []
    spoof = net.network_findings({IFCFG: 'DEVICE=eth0\nMACADDR="52:54:00:aa:bb:cc" # keep\nBOOTPROTO=dhcp\n'})
    assert rows(spoof) == [("nic-mac-set", BLOCKS_NETWORK, 2)]


def test_suse_ifcfg() -> None:
    suse = "/etc/sysconfig/network/ifcfg-eth0"
    assert net_rows(suse, "ifcfg/opensuse-ifcfg-eth0") == []
    by_mac = "/etc/sysconfig/network/ifcfg-eth-id-00:16:3e:12:34:56"
    found = net.network_findings({by_mac: text("ifcfg/opensuse-ifcfg-eth0")})
    assert rows(found) == [("nic-mac-binding", BLOCKS_NETWORK, 0)]
    assert found[0].fix == Fix("rename", by_mac, 0, "ifcfg-eth-id-00:16:3e:12:34:56", "ifcfg-eth0")
    static = net.network_findings({suse: "BOOTPROTO='static'\nIPADDR='10.0.0.5/24'\nLLADDR='00:16:3e:12:34:56'\n"})
    assert rows(static) == [("static-address", BLOCKS_NETWORK, 1), ("nic-mac-set", BLOCKS_NETWORK, 3)]
    assert net.network_findings({suse: "STARTMODE=manual\nIPADDR=10.0.0.5\n"}) == []
    assert rows(net.network_findings({suse: "IPADDR='10.0.0.5/24'\n"})) == [("static-address", BLOCKS_NETWORK, 1)]
    assert net.network_findings({suse: "BOOTPROTO='none'\nIPADDR='10.0.0.5/24'\n"}) == []  # a bond port's


INTERFACES = "/etc/network/interfaces"


def test_debian_interfaces() -> None:
    assert net_rows(INTERFACES, "interfaces/ovh-static.interfaces") == [("static-address", BLOCKS_NETWORK, 9)]
    assert net_rows(INTERFACES, "interfaces/debian-static-inet6.interfaces") == [("static-address", BLOCKS_NETWORK,
                                                                                  13)]  # fmt: skip
    dhcp = "auto lo\niface lo inet loopback\nallow-hotplug eth0\niface eth0 inet dhcp\n" \
        "\thwaddress ether 00:16:3e:aa:bb:cc\n"  # fmt: skip
    assert rows(net.network_findings({INTERFACES: dhcp})) == [("nic-mac-set", BLOCKS_NETWORK, 5)]
    mixed = net.network_findings({INTERFACES: text("interfaces/ovh-static.interfaces"),
                                  "/etc/network/interfaces.d/eth1": "iface eth1 inet dhcp\n"})  # fmt: skip
    assert rows(mixed) == [("static-address", ADVICE, 9)]


NETPLAN = "/etc/netplan/50-cloud-init.yaml"


def test_netplan() -> None:
    found = net.network_findings({NETPLAN: text("netplan/aws-isucon11q-50-cloud-init.yaml")})
    assert rows(found) == [("nic-mac-binding", BLOCKS_NETWORK, 12)]
    assert found[0].fix == Fix("drop-mac-match", NETPLAN, 12, "                macaddress: 0a:ba:2e:a0:d9:b7")
    assert net_rows(NETPLAN, "netplan/dhcp-eth0-50-cloud-init.yaml") == []
    # br1's address (line 20) is static and nothing uses DHCP; the nameservers' addresses are not the
    # interface's; match: is only read for ethernets (netplan takes it for physical devices only)
    assert net_rows(NETPLAN, "netplan/edge-server-bridges-50-cloud-init.yaml") == [("static-address", BLOCKS_NETWORK,
                                                                                     20)]  # fmt: skip
    lifetime = "network:\n  ethernets:\n    eth0:\n      addresses:\n        - 10.0.0.5/24:\n            lifetime: 0\n"
    assert rows(net.network_findings({NETPLAN: lifetime})) == [("static-address", BLOCKS_NETWORK, 5)]
    flow = "network: {version: 2, ethernets: {eth0: {dhcp4: yes, macaddress: '52:54:00:aa:bb:cc'}}}\n"
    assert rows(net.network_findings({NETPLAN: flow})) == [("nic-mac-set", BLOCKS_NETWORK, 1)]
    dhcp_elsewhere = net.network_findings({NETPLAN: text("netplan/aws-isucon11q-50-cloud-init.yaml"),
                                           INTERFACES: text("interfaces/ovh-static.interfaces")})  # fmt: skip
    assert ("static-address", ADVICE, 9) in rows(dhcp_elsewhere)
    broken = net.network_findings({NETPLAN: "network:\n  ethernets:\n    eth0: [\n"})
    assert [(f.kind, f.severity) for f in broken] == [("unread", ADVICE)] and broken[0].line > 0
    assert net.network_findings({NETPLAN: ""}) == []


KEYFILES = "/etc/NetworkManager/system-connections/"


def test_networkmanager_keyfiles() -> None:
    found = net.network_findings({KEYFILES + "Test_Wired_Connection": text("nm/Test_Wired_Connection")})
    assert rows(found) == [("nic-mac-binding", BLOCKS_NETWORK, 10), ("static-address", BLOCKS_NETWORK, 17)]
    assert found[0].fix == Fix("delete-line", KEYFILES + "Test_Wired_Connection", 10, "mac-address=00:11:22:33:44:55")
    old = net.network_findings({KEYFILES + "Test_MAC_Old_Format": text("nm/Test_MAC_Old_Format")})
    assert rows(old) == [("nic-mac-binding", BLOCKS_NETWORK, 7), ("nic-mac-set", BLOCKS_NETWORK, 8)]
    assert net.network_findings({KEYFILES + "Test_minimal_1": text("nm/Test_minimal_1")}) == []
    assert net.network_findings({KEYFILES + "p.nmconnection": "[connection]\nautoconnect=false\n[ethernet]\n"
                                 "mac-address=00:11:22:33:44:55\n[ipv4]\nmethod=manual\n"}) == []  # fmt: skip
    port = "[connection]\ntype=ethernet\nmaster=bond0\n[ethernet]\ncloned-mac-address=preserve\n"
    assert net.network_findings({KEYFILES + "port.nmconnection": port}) == []
    bond = "[connection]\ntype=bond\ninterface-name=bond0\n[ipv4]\nmethod=manual\naddress1=10.0.0.5/24\n"
    found = net.network_findings({KEYFILES + "port.nmconnection": port, KEYFILES + "bond0.nmconnection": bond})
    assert rows(found) == [("static-address", BLOCKS_NETWORK, 5)]  # a port does not get its address by DHCP


NETWORKD = "/etc/systemd/network/"


def test_networkd() -> None:
    found = net.network_findings({NETWORKD + "12-dummy.network": text("networkd/12-dummy-match-mac-01.network")})
    assert rows(found) == [("nic-mac-binding", BLOCKS_NETWORK, 5), ("static-address", BLOCKS_NETWORK, 9)]
    assert found[0].fix.action == "drop-mac-match"
    assert net_rows(NETWORKD + "25-dhcp.network", "networkd/25-dhcp-client-with-static-address.network") == []
    dhcp = text("networkd/25-dhcp-client-with-static-address.network")
    both = net.network_findings({NETWORKD + "12-dummy.network": text("networkd/12-dummy-match-mac-01.network"),
                                 NETWORKD + "25-dhcp.network": dhcp})  # fmt: skip
    assert ("static-address", ADVICE, 9) in rows(both)
    assert net_rows(NETWORKD + "25-sriov.link", "networkd/25-sriov.link") == []  # [SR-IOV] MACAddress= is a VF's
    assert net_rows(NETWORKD + "99-default.link", "networkd/25-default.link") == []
    link = net.network_findings({NETWORKD + "10-eth0.link": text("networkd/10-eth0.link")})
    assert rows(link) == [("nic-mac-binding", BLOCKS_NETWORK, 2)] and link[0].fix == Fix("move-aside",
                                                                                         NETWORKD + "10-eth0.link")
    spoof = net.network_findings({NETWORKD + "eth0.network": "[Match]\nName=eth0\n[Link]\n"
                                  "MACAddress=00:16:3e:aa:bb:cc\n[Network]\nDHCP=yes\n"})  # fmt: skip
    assert rows(spoof) == [("nic-mac-set", BLOCKS_NETWORK, 4)]


def test_unknown_network_file() -> None:
    with pytest.raises(ValueError, match="/etc/hosts: not a network configuration file"):
        net.network_findings({"/etc/hosts": "127.0.0.1 localhost\n"})


# --- the vocabulary ------------------------------------------------------------------------------------


def test_findings_are_frozen_and_use_the_vocabulary() -> None:
    found = bp.fstab_findings(text("fstab/gentoo-ec2-xvda.fstab"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].line = 2  # type: ignore[misc]
    assert hash(found[0])  # usable in sets
    for f in SEEN + found:
        assert f.kind in bp.KINDS and f.severity in bp.SEVERITIES
        assert f.fix is None or f.fix.action in bp.FIX_ACTIONS
        assert f.line >= 0 and f.where and f.message


def test_a_gone_resume_device_blocks_boot_but_under_initramfs_tools():
    """systemd's initrd waits for the resume device for ever; initramfs-tools gives up after 30 s
    and boots on (its scripts/local-premount/resume, seen in the lab's real boot)."""
    line = "root=UUID=3a5b ro resume=/dev/sda2 quiet"
    for generator, severity in ((None, bp.BLOCKS_BOOT), ("dracut", bp.BLOCKS_BOOT), ("suse-mkinitrd", bp.BLOCKS_BOOT),
                                ("initramfs-tools", bp.ADVICE)):  # fmt: skip
        (found,) = bp.kernel_line_findings(line, "/boot/loader/entries/x.conf", 5, generator=generator)
        assert (found.kind, found.severity) == ("resume-device", severity), generator
        (grub,) = bp.default_grub_findings(f'GRUB_CMDLINE_LINUX_DEFAULT="{line}"\n', generator=generator)
        assert grub.severity == severity and grub.line == 1
    (root, resume) = bp.kernel_line_findings("root=/dev/xvda1 resume=/dev/xvda2", generator="initramfs-tools")
    assert (root.kind, root.severity, resume.severity) == ("device-name", bp.BLOCKS_BOOT, bp.ADVICE)
