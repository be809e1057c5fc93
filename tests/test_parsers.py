"""Unit tests of the parsers, on captured real outputs and real file formats."""

from pathlib import Path

import pytest

from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.boot_menus import parse_boot, parse_grub2
from kvm_drivers.facts.config_files import parse_dracut, parse_initrd_modules, parse_modules_file
from kvm_drivers.facts.distro import kernel_version_tuple, parse_distro
from kvm_drivers.facts.state import OLDEST_KERNEL, VIRTIO, driver_kind
from kvm_drivers.facts.wire import CONF_TEXT_MAX, RawKernel, Snapshot, parse_snapshot
from tests.planning import analyse

FIX = Path(__file__).parent / "fixtures"


def snapshot(name: str) -> Snapshot:
    return parse_snapshot((FIX / name).read_text().splitlines())


# --- gather output captured on the lab's Debian 12 trees ------------------------------------


def test_itools_snapshot_is_drifted_with_every_virtio_missing():
    info = analyse(snapshot("gather-bookworm-itools.txt"))
    assert info.status == "drifted"
    assert info.state.distro.family == "debian"
    assert info.generator == "initramfs-tools"
    assert info.declared.setting == "MODULES=list"
    assert info.declared.drivers == ["ext4", "xen_blkfront", "xen_netfront"]
    (kernel,) = info.kernels
    assert kernel.version == "6.1.0-50-amd64" and kernel.default
    assert kernel.initrd == "/boot/initrd.img-6.1.0-50-amd64"
    assert kernel.initrd_source.startswith("bootloader entry")
    assert kernel.modules == VIRTIO and kernel.builtin == [] and kernel.absent == []
    # dependency closure, not just the six names
    for dep in ("virtio_pci_modern_dev", "virtio_pci_legacy_dev", "net_failover", "failover"):
        assert dep in kernel.needed and dep in kernel.missing
    assert info.to_rebuild == ["6.1.0-50-amd64"]
    assert info.to_declare == VIRTIO
    assert info.state.running_kernel == "6.18.44-fc-v595" and not any("running kernel" in w for w in info.warnings)


def test_dracut_snapshot_routes_to_dracut_dropin():
    info = analyse(snapshot("gather-bookworm-dracut.txt"))
    assert info.generator == "dracut"  # mkinitramfs is left behind, but dracut is in charge
    assert info.declared.path == "/etc/dracut.conf.d/90-kvm-drivers.conf"
    (kernel,) = info.kernels
    assert "virtio_blk" in kernel.missing and "scsi_mod" not in kernel.missing
    assert (
        len(
            parse_snapshot((FIX / "gather-bookworm-dracut.txt").read_text().splitlines())
            .initrds["/boot/initrd.img-6.1.0-50-amd64"]
            .modules
        )
        > 100
    )


def test_initrd_already_fine_and_declared_is_compliant():
    snap = snapshot("gather-bookworm-itools.txt")
    raw = snap.initrds["/boot/initrd.img-6.1.0-50-amd64"]
    info = analyse(snap)
    raw.modules |= set(info.kernels[0].needed)
    snap.files["/etc/initramfs-tools/modules"] += "\n".join(VIRTIO) + "\n"
    info = analyse(snap)
    assert info.status == "compliant", info
    assert info.to_rebuild == [] and info.to_declare == []


def test_builtin_driver_is_never_demanded_nor_declared():
    snap = snapshot("gather-bookworm-itools.txt")
    k = snap.kernels["6.1.0-50-amd64"]
    del k.modules["virtio_blk"]
    k.builtin.add("virtio_blk")
    info = analyse(snap)
    assert info.kernels[0].builtin == ["virtio_blk"]
    assert "virtio_blk" not in info.kernels[0].needed
    assert "virtio_blk" not in info.to_declare


def no_initrd_snapshot(builtin: bool) -> Snapshot:
    """The itools fixture whose GRUB entry boots the kernel without an initrd."""
    lines = (FIX / "gather-bookworm-itools.txt").read_text().splitlines()
    snap = parse_snapshot([ln for ln in lines if not ln.startswith("\tinitrd\t")])
    if builtin:
        k = snap.kernels["6.1.0-50-amd64"]
        for d in VIRTIO:
            k.modules.pop(d, None)
            k.builtin.add(d)
    return snap


def test_kernel_with_everything_built_in_booted_without_initrd_is_compliant():
    info = analyse(no_initrd_snapshot(builtin=True))
    (k,) = info.kernels
    assert k.initrd == "" and "(no initrd)" in k.initrd_source and k.initrd_error == ""
    assert info.status == "compliant" and info.to_rebuild == [] and info.to_declare == []


def test_kernel_needing_modules_booted_without_initrd_is_refused_not_rebuilt():
    info = analyse(no_initrd_snapshot(builtin=False))
    assert info.errors and "without an initrd" in info.errors[0] and "virtio_blk" in info.errors[0]
    assert info.status == "error"  # the deploy refuses the host: there is no initrd to rebuild


def test_config_fallback_when_modules_builtin_is_missing():
    k = RawKernel("2.6.32-754.el6.x86_64", has_builtin=False)
    k.config = {"VIRTIO": "y", "VIRTIO_PCI": "y", "VIRTIO_BLK": "m", "VIRTIO_MENU": "y"}
    k.modules = {"virtio_blk": []}
    assert driver_kind(k, "virtio") == "builtin"
    assert driver_kind(k, "virtio_ring") == "builtin"
    assert driver_kind(k, "virtio_blk") == "module"
    assert driver_kind(k, "virtio_net") == "absent"  # VIRTIO_MENU=y must not count


def test_truncated_output_is_an_error_not_a_verdict():
    lines = (FIX / "gather-bookworm-itools.txt").read_text().splitlines()
    info = analyse(parse_snapshot(lines[:-1]))
    assert info.status == "error"
    assert "did not finish" in info.errors[0]


def test_unreadable_initrd_is_reported_and_rebuilt():
    lines = (FIX / "gather-bookworm-itools.txt").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("@@KVM initrd "))
    end = next(i for i, ln in enumerate(lines) if i > start and ln.startswith("@@KVM ") and " initrd " not in ln)
    lines[start + 1 : end] = ["@@KVM listfail 1", "/boot/x: unreadable initrd: unknown data at offset 0"]
    info = analyse(parse_snapshot(lines))
    assert "unreadable initrd" in info.kernels[0].initrd_error
    assert info.to_rebuild == ["6.1.0-50-amd64"]


# --- distributions --------------------------------------------------------------------------

OS_RELEASE = {
    "centos7": (
        'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n',
        "rhel",
    ),
    "euleros2": ('NAME="EulerOS"\nVERSION="2.0 (SP8)"\nID="euleros"\nVERSION_ID="2.0"\n', "rhel"),
    "openeuler": ('NAME="openEuler"\nVERSION="22.03 (LTS-SP1)"\nID="openEuler"\nVERSION_ID="22.03"\n', "rhel"),
    "ubuntu": ('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n', "debian"),
    "sles12": ('NAME="SLES"\nVERSION="12"\nVERSION_ID="12"\nID="sles"\nID_LIKE="suse"\n', "suse-legacy"),
    "sles12sp1": ('NAME="SLES"\nVERSION="12-SP1"\nVERSION_ID="12.1"\nID="sles"\n', "suse-12sp1"),
    "sles15sp5": ('NAME="SLES"\nVERSION="15-SP5"\nVERSION_ID="15.5"\nID="sles"\nID_LIKE="suse"\n', "suse"),
    "leap15": (
        'NAME="openSUSE Leap"\nVERSION="15.5"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.5"\n',
        "suse",
    ),
    "tumbleweed": (
        'NAME="openSUSE Tumbleweed"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\nVERSION_ID="20240101"\n',
        "suse",
    ),
}


@pytest.mark.parametrize("name", sorted(OS_RELEASE))
def test_os_release_families(name):
    text, family = OS_RELEASE[name]
    assert parse_distro({"/etc/os-release": text}).family == family


def test_sles11_suse_release_only_is_legacy():
    d = parse_distro(
        {"/etc/SuSE-release": "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n"}
    )
    assert (d.id, d.version, d.family) == ("sles", "11.4", "suse-legacy")


def test_opensuse_12_suse_release_is_legacy():
    d = parse_distro({"/etc/SuSE-release": "openSUSE 12.3 (x86_64)\nVERSION = 12.3\nCODENAME = Dartmouth\n"})
    assert (d.id, d.family) == ("opensuse", "suse-legacy")


def test_centos6_redhat_release_only():
    d = parse_distro(
        {"/etc/redhat-release": "CentOS release 6.10 (Final)\n", "/etc/centos-release": "CentOS release 6.10 (Final)\n"}
    )
    assert (d.id, d.version, d.family) == ("centos", "6.10", "rhel")


def test_euleros_release_only():
    d = parse_distro({"/etc/euleros-release": "EulerOS release 2.0 (SP5)\n"})
    assert d.family == "rhel"


def test_unknown_and_garbage_distros_are_unsupported_with_reason():
    d = parse_distro({"/etc/os-release": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.0\n'})
    assert d.family is None and "unsupported distribution Alpine Linux" in d.reason
    d = parse_distro({"/etc/os-release": "\x00\x01garbage ===\n=\n"})
    assert d.family is None and d.reason
    d = parse_distro({})
    assert d.family is None and "no release file" in d.reason


def test_kernel_version_tuple():
    assert kernel_version_tuple("2.6.18-398.el5") == (2, 6, 18)
    assert kernel_version_tuple("6.1.0-50-amd64") == (6, 1, 0)
    assert kernel_version_tuple("2.6.18-398.el5") <= OLDEST_KERNEL < kernel_version_tuple("2.6.32")


# --- bootloaders ----------------------------------------------------------------------------

UBUNTU_GRUB = """\
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="1>2"
fi
menuentry 'Ubuntu' --class ubuntu $menuentry_id_option 'gnulinux-simple-8f1e' {
	linux	/boot/vmlinuz-5.15.0-91-generic root=UUID=8f1e ro quiet splash
	initrd	/boot/initrd.img-5.15.0-91-generic
}
submenu 'Advanced options for Ubuntu' $menuentry_id_option 'gnulinux-advanced-8f1e' {
	menuentry 'Ubuntu, with Linux 5.15.0-91-generic' $menuentry_id_option 'gnulinux-5.15.0-91-generic-advanced-8f1e' {
		linux	/boot/vmlinuz-5.15.0-91-generic root=UUID=8f1e ro quiet splash
		initrd	/boot/initrd.img-5.15.0-91-generic
	}
	menuentry 'Ubuntu, with Linux 5.15.0-91-generic (recovery mode)' {
		linux	/boot/vmlinuz-5.15.0-91-generic root=UUID=8f1e ro recovery nomodeset
		initrd	/boot/initrd.img-5.15.0-91-generic
	}
	menuentry 'Ubuntu, with Linux 5.15.0-88-generic' $menuentry_id_option 'gnulinux-5.15.0-88-generic-advanced-8f1e' {
		linux	/boot/vmlinuz-5.15.0-88-generic root=UUID=8f1e ro quiet splash
		initrd	/boot/intel-ucode.img /boot/initrd.img-5.15.0-88-generic
	}
}
"""


def test_grub2_submenu_default_path():
    cfg = parse_grub2(UBUNTU_GRUB, {}, "/boot/grub/grub.cfg")
    assert [e.path for e in cfg.entries] == ["0", "1>0", "1>1", "1>2"]
    default = cfg.entries[cfg.default]
    assert default.kernel == "5.15.0-88-generic"
    assert default.initrd == "/boot/initrd.img-5.15.0-88-generic"  # microcode image skipped


def test_grub2_saved_entry_by_id_and_title():
    text = UBUNTU_GRUB.replace('set default="1>2"', 'set default="${saved_entry}"')
    env = {"saved_entry": "gnulinux-advanced-8f1e>gnulinux-5.15.0-88-generic-advanced-8f1e"}
    cfg = parse_grub2(text, env, "x")
    assert cfg.entries[cfg.default].kernel == "5.15.0-88-generic"
    # A bare title is looked up at the top level only (menu.c get_entry_number): not found, entry 0.
    cfg = parse_grub2(text, {"saved_entry": "Ubuntu, with Linux 5.15.0-88-generic"}, "x")
    assert cfg.default == 0 and "not found at the top level" in cfg.warnings[0]
    cfg = parse_grub2(text, {"saved_entry": "Advanced options for Ubuntu>Ubuntu, with Linux 5.15.0-88-generic"}, "x")
    assert cfg.entries[cfg.default].kernel == "5.15.0-88-generic"
    cfg = parse_grub2(text, {"saved_entry": "no-such-entry"}, "x")
    assert cfg.default == 0 and "not found" in cfg.warnings[0]


BLS = {
    "/boot/loader/entries/abc-4.18.0-348.el8.x86_64.conf": (
        "title Red Hat Enterprise Linux (4.18.0-348.el8.x86_64) 8.5 (Ootpa)\nversion 4.18.0-348.el8.x86_64\n"
        "linux /vmlinuz-4.18.0-348.el8.x86_64\ninitrd /initramfs-4.18.0-348.el8.x86_64.img $tuned_initrd\n"
        "options $kernelopts $tuned_params\nid rhel-20211027175005-4.18.0-348.el8.x86_64\ngrub_class kernel\n"
    ),
    "/boot/loader/entries/abc-4.18.0-513.5.1.el8_9.x86_64.conf": (
        "title Red Hat Enterprise Linux (4.18.0-513.5.1.el8_9.x86_64) 8.9 (Ootpa)\n"
        "version 4.18.0-513.5.1.el8_9.x86_64\nlinux /vmlinuz-4.18.0-513.5.1.el8_9.x86_64\n"
        "initrd /initramfs-4.18.0-513.5.1.el8_9.x86_64.img $tuned_initrd\noptions $kernelopts\n"
    ),
    "/boot/loader/entries/abc-0-rescue.conf": (
        "title Red Hat Enterprise Linux (0-rescue-abc) 8.5 (Ootpa)\nversion 0-rescue-abc\n"
        "linux /vmlinuz-0-rescue-abc\ninitrd /initramfs-0-rescue-abc.img\n"
    ),
}


def test_bls_newest_first_and_saved_entry():
    files = dict(BLS)
    files["/boot/grub2/grub.cfg"] = 'set default="${saved_entry}"\ninsmod blscfg\nblscfg\n'
    cfg = parse_boot(files)
    assert "blscfg" in cfg.source
    assert cfg.entries[0].kernel == "4.18.0-513.5.1.el8_9.x86_64"
    assert cfg.entries[cfg.default].kernel == "4.18.0-513.5.1.el8_9.x86_64"
    assert cfg.entries[0].initrd == "/initramfs-4.18.0-513.5.1.el8_9.x86_64.img"
    files["/boot/grub2/grubenv"] = "# GRUB Environment Block\nsaved_entry=abc-4.18.0-348.el8.x86_64\n####\n"
    cfg = parse_boot(files)
    assert cfg.entries[cfg.default].kernel == "4.18.0-348.el8.x86_64"


CENTOS6 = """\
default=1
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
title CentOS 6 (2.6.32-754.35.1.el6.x86_64)
	root (hd0,0)
	kernel /vmlinuz-2.6.32-754.35.1.el6.x86_64 ro root=/dev/mapper/vg-root rd_NO_LUKS
	initrd /initramfs-2.6.32-754.35.1.el6.x86_64.img
title CentOS 6 (2.6.32-754.el6.x86_64)
	root (hd0,0)
	kernel /vmlinuz-2.6.32-754.el6.x86_64 ro root=/dev/mapper/vg-root rd_NO_LUKS
	initrd /initramfs-2.6.32-754.el6.x86_64.img
"""

SLES11 = """\
# Modified by YaST2. Last modification on Tue Mar  1 10:00:00 UTC 2016
default 0
timeout 8
title SUSE Linux Enterprise Server 11 SP4 - 3.0.101-63
    root (hd0,0)
    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/sda2 resume=/dev/sda1 splash=silent showopts
    initrd /boot/initrd.vmx
title Failsafe -- SUSE Linux Enterprise Server 11 SP4 - 3.0.101-63
    root (hd0,0)
    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/sda2 showopts ide=nodma apm=off
    initrd /boot/initrd-3.0.101-63-default
"""


def test_grub_legacy_default_and_custom_initrd():
    cfg = parse_boot({"/boot/grub/grub.conf": CENTOS6})
    assert cfg.entries[cfg.default].kernel == "2.6.32-754.el6.x86_64"
    cfg = parse_boot({"/boot/grub/menu.lst": SLES11})
    assert cfg.entries[cfg.default].initrd == "/boot/initrd.vmx"
    saved = SLES11.replace("default 0", "default saved")
    cfg = parse_boot({"/boot/grub/menu.lst": saved, "/boot/grub/default": "1\n"})
    assert cfg.entries[cfg.default].title.startswith("Failsafe")


def test_empty_or_unreadable_grub_cfg_falls_back_cleanly():
    assert parse_boot({"/boot/grub/grub.cfg": ""}) is None
    cfg = parse_boot({"/boot/grub/grub.cfg": None})
    assert cfg.entries == [] and "unreadable" in cfg.warnings[0]


def test_uefi_stub_that_only_points_at_the_real_config():
    stub = "search --no-floppy --fs-uuid --set=dev 1234\nset prefix=($dev)/grub2\nconfigfile $prefix/grub.cfg\n"
    files = {"/boot/efi/EFI/centos/grub.cfg": stub, "/boot/grub2/grub.cfg": UBUNTU_GRUB}
    assert parse_boot(files).source == "/boot/grub2/grub.cfg"


# --- declarations ---------------------------------------------------------------------------


def test_modules_file_crlf_odd_spacing_and_args():
    text = "# comment\r\n  virtio_blk   \r\n\r\nvirtio-net  napi_tx=1\r\n# virtio_pci\r\n"
    assert parse_modules_file(text) == ["virtio_blk", "virtio_net"]


def test_dracut_order_overrides_and_omit():
    files = {
        "/etc/dracut.conf": 'add_drivers+=" virtio_blk "\nhostonly="yes"\n',
        "/usr/lib/dracut/dracut.conf.d/01-dist.conf": 'add_drivers+=" virtio_net "\n',
        "/usr/lib/dracut/dracut.conf.d/50-vendor.conf": 'add_drivers+=" xen_blkfront "\n',
        "/etc/dracut.conf.d/50-vendor.conf": "# overridden by the admin\n",
        "/etc/dracut.conf.d/60-omit.conf": 'omit_drivers+=" virtio_scsi "  # no scsi\n',
    }
    conf = parse_dracut(files)
    assert conf.files[0] == "/etc/dracut.conf"
    assert set(conf.add_drivers) == {"virtio_blk", "virtio_net"}  # the /etc file hides the vendor one
    assert conf.omit_drivers == {"virtio_scsi": "/etc/dracut.conf.d/60-omit.conf"}
    assert conf.hostonly == "yes"


def test_initrd_modules_with_quotes_and_comment():
    text = '## Type: string\n# comment\nINITRD_MODULES="xenblk  ext3" # root disk\nDOMU_INITRD_MODULES="xennet"\n'
    assert parse_initrd_modules(text) == (["xenblk", "ext3"], "xenblk  ext3")


def test_prechecks_full_or_readonly_boot_refuse_before_any_change():
    snap = snapshot("gather-bookworm-itools.txt")
    snap.meta["bootfree"] = "9000"  # KiB: less than a backup plus a new 6 MB initrd
    info = analyse(snap)
    assert info.status == "error" and "not enough free space in /boot" in info.errors[0]
    snap.meta["bootfree"] = "900000"
    assert analyse(snap).status == "drifted"
    snap.meta["bootmount"] = "ro,relatime"
    info = analyse(snap)
    assert info.status == "error" and "read-only" in info.errors[0]


def test_file_without_final_newline_is_kept_exactly():
    lines = ["@@KVM file /etc/initramfs-tools/modules", "# c", "ext4", "@@KVM file /etc/dracut.conf", "a", "",
             "@@KVM end"]  # fmt: skip
    snap = parse_snapshot(lines)
    assert snap.files["/etc/initramfs-tools/modules"] == "# c\next4"
    assert snap.files["/etc/dracut.conf"] == "a\n"


def test_kernel_directory_without_image_or_modules_dep_is_skipped_with_a_warning():
    snap = snapshot("gather-bookworm-itools.txt")
    snap.kernels["5.10.0-9-amd64"] = RawKernel("5.10.0-9-amd64", has_dep=True)  # no image
    snap.kernels["kernel-abi-whitelists"] = RawKernel("kernel-abi-whitelists")  # not a kernel
    info = analyse(snap)
    assert [k.version for k in info.kernels] == ["6.1.0-50-amd64"]
    assert any("5.10.0-9-amd64 skipped" in w and "no kernel image" in w for w in info.warnings)
    assert any("kernel-abi-whitelists skipped" in w and "no modules.dep" in w for w in info.warnings)


def test_short_facts_return_typed_parts_of_the_state():
    state = kd.KvmDrivers().process((FIX / "gather-bookworm-itools.txt").read_text().splitlines())
    (kernel,) = kd.Kernels().process_data(state)
    assert kernel.initrd == "/boot/initrd.img-6.1.0-50-amd64" and kernel.default is True
    assert kernel.kinds["virtio_blk"] == "module" and "virtio_blk" not in kernel.in_initrd
    assert kd.Distro().process_data(state).family == "debian"
    assert kd.DeclaredDrivers().process_data(state).path == "/etc/initramfs-tools/modules"


def test_unreadable_declaration_file_is_never_rewritten():
    snap = snapshot("gather-bookworm-itools.txt")
    snap.files["/etc/initramfs-tools/modules"] = None  # present, but unreadable or not UTF-8
    info = analyse(snap)
    assert info.status == "error"
    assert "/etc/initramfs-tools/modules exists but could not be read" in info.errors[0]


def test_unreadable_marker_after_a_file_keeps_that_file():
    a, b, c = "/etc/dracut.conf", "/etc/sysconfig/kernel", "/etc/default/grub"
    lines = [f"@@KVM file {a}", "x", "", f"@@KVM unreadable {b}", f"@@KVM file {c}", "y", "", "@@KVM end"]
    snap = parse_snapshot(lines)
    assert snap.files == {a: "x\n", b: None, c: "y\n"}


INITRD = ["@@KVM initrd /boot/initrd.img-6.1 1234", "key /boot/initrd.img-6.1|1234|1|2", "m virtio_blk"]


def test_initrd_files_lines_are_kept_and_odd_ones_refused():
    good = [
        "conf etc/modprobe.d/x.conf:2:virtio_blk:install virtio_blk /bin/false",
        "conf etc/modprobe.conf:1:virtio_pci:install virtio_pci :",
        "conf usr/lib/modprobe.d/legacy:3:virtio_net:alias virtio_net off",
        "cmdline etc/cmdline.d/10.conf:rd.driver.blacklist=virtio_pci",
        "cmdline etc/cmdline:modprobe.blacklist=virtio_blk",
        "confread 4",
    ]
    snap = parse_snapshot(["@@KVM blacklist", "/etc/modprobe.conf:2:virtio_pci:install virtio_pci :", *INITRD, *good,
                             "@@KVM end"])  # fmt: skip
    assert not snap.problems and snap.blacklists[0]["file"] == "/etc/modprobe.conf"
    image = snap.initrds["/boot/initrd.img-6.1"]
    files = [b["file"] for b in image.blocks]
    assert files == ["etc/modprobe.d/x.conf", "etc/modprobe.conf", "usr/lib/modprobe.d/legacy"]
    assert image.cmdline[1] == {"file": "etc/cmdline", "word": "modprobe.blacklist=virtio_blk"}
    assert image.conf_read == 4 and image.conf_error == ""
    for bad in (
        "conf /etc/modprobe.d/x.conf:1:virtio_blk:blacklist virtio_blk",  # not a path inside the image
        "conf etc/shadow:1:virtio_blk:blacklist virtio_blk",
        "conf etc/modprobe.d/x.conf:1e:virtio_blk:blacklist virtio_blk",
        "conf etc/modprobe.d/x.conf:1:virtio_blk;id:blacklist virtio_blk",
        "conf etc/modprobe.d/x.conf:1:virtio_blk:" + "x" * (CONF_TEXT_MAX + 1),
        "conf etc/modprobe.d/x.conf:1:virtio_blk:blacklist virtio_blk\x1b[2J",
        "conf etc/modprobe.d/../x.conf:1:virtio_blk:blacklist virtio_blk",
        "cmdline etc/cmdline.d/10.conf:rd.driver.blacklist=virtio_pci rd.retry=1",
        "cmdline boot/grub/grub.cfg:rd.driver.blacklist=virtio_pci",
        "confread many",
        "conferror",
    ):
        snap = parse_snapshot([*INITRD, bad, "confread 1", "@@KVM end"])
        assert snap.problems, bad
    for bad in ("/etc/modprobe.d/x.conf:1:virtio_blk:" + "x" * 5000, "/etc/modprobe.conf.d/x:1:virtio_blk:blacklist x",
                "/etc/modprobe.d/sub/x.conf:1:virtio_blk:blacklist virtio_blk"):  # fmt: skip
        assert parse_snapshot(["@@KVM blacklist", bad, "@@KVM end"]).problems, bad


def test_initrd_files_not_read_are_never_a_clean_bill():
    snap = parse_snapshot([*INITRD, "conferror could not read etc/modprobe.d/x.conf", "@@KVM end"])
    image = snap.initrds["/boot/initrd.img-6.1"]
    assert image.conf_error == "could not read etc/modprobe.d/x.conf" and image.conf_read is None
    snap = parse_snapshot([*INITRD, "@@KVM end"])  # an answer that does not say: unknown
    assert "does not say" in snap.initrds["/boot/initrd.img-6.1"].conf_error
    snap = parse_snapshot([*INITRD[:2], "cached", "@@KVM end"])  # the cache brings them (facts/cache.py fill)
    assert snap.initrds["/boot/initrd.img-6.1"].conf_error == ""
    snap = parse_snapshot([*INITRD[:2], "@@KVM listfail 1", "lsinitramfs: broken", "@@KVM end"])
    assert snap.initrds["/boot/initrd.img-6.1"].error and snap.initrds["/boot/initrd.img-6.1"].conf_error == ""
