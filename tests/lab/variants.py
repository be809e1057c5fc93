"""Turn a fresh host overlay into a given distribution's layout: release files, initrd
names and bootloader configuration, exactly as those distributions write them.

The root filesystems are Debian's (debootstrap); what differs is what kvm-drivers reads to
route a host (release files, bootloader files, initrd names, SUSE's sysconfig). The initrds
are rebuilt with the real dracut / mkinitramfs; the one exception, SUSE 11's mkinitrd, is a
stand-in marked as such (see MKINITRD_STANDIN).
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.bases import kernels

OS_RELEASE = {
    "centos7": 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n'
    'PRETTY_NAME="CentOS Linux 7 (Core)"\nCPE_NAME="cpe:/o:centos:centos:7"\n',
    "euleros2": 'NAME="EulerOS"\nVERSION="2.0 (SP8)"\nID="euleros"\nVERSION_ID="2.0"\n'
    'PRETTY_NAME="EulerOS 2.0 (SP8)"\nANSI_COLOR="0;31"\n',
    "openeuler2203": 'NAME="openEuler"\nVERSION="22.03 (LTS-SP1)"\nID="openEuler"\nVERSION_ID="22.03"\n'
    'PRETTY_NAME="openEuler 22.03 (LTS-SP1)"\nANSI_COLOR="0;31"\n',
    "sles12sp1": 'NAME="SLES"\nVERSION="12-SP1"\nVERSION_ID="12.1"\nPRETTY_NAME="SUSE Linux Enterprise Server 12 SP1"\n'
    'ID="sles"\nANSI_COLOR="0;32"\nCPE_NAME="cpe:/o:suse:sles:12:sp1"\n',
    "sles15sp5": 'NAME="SLES"\nVERSION="15-SP5"\nVERSION_ID="15.5"\nPRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"\n'
    'ID="sles"\nID_LIKE="suse"\nANSI_COLOR="0;32"\nCPE_NAME="cpe:/o:suse:sles:15:sp5"\n',
    "leap15": 'NAME="openSUSE Leap"\nVERSION="15.5"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.5"\n'
    'PRETTY_NAME="openSUSE Leap 15.5"\nCPE_NAME="cpe:/o:opensuse:leap:15.5"\n',
    "rocky9": 'NAME="Rocky Linux"\nVERSION="9.3 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="9.3"\nPLATFORM_ID="platform:el9"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n',
    "ubuntu2204": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nVERSION="22.04.4 LTS (Jammy '
    'Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=jammy\n',
    "arch": 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\nANSI_COLOR="38;2;23;147;209"\n',
}
LEGACY = {
    "centos7": {"centos-release": "CentOS Linux release 7.9.2009 (Core)\n",
                "redhat-release": "CentOS Linux release 7.9.2009 (Core)\n"},
    "euleros2": {"euleros-release": "EulerOS release 2.0 (SP8)\n"},
    "openeuler2203": {"openEuler-release": "openEuler release 22.03 (LTS-SP1)\n"},
    "sles12sp1": {"SuSE-release": "SUSE Linux Enterprise Server 12 (x86_64)\nVERSION = 12\nPATCHLEVEL = 1\n"},
    "rocky9": {"rocky-release": "Rocky Linux release 9.3 (Blue Onyx)\n",
               "redhat-release": "Rocky Linux release 9.3 (Blue Onyx)\n"},
    "centos6": {"centos-release": "CentOS release 6.10 (Final)\n", "redhat-release": "CentOS release 6.10 (Final)\n"},
    "sles11": {"SuSE-release": "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n"},
    "centos5": {"redhat-release": "CentOS release 5.11 (Final)\n"},
}

# SUSE 11's mkinitrd cannot be had here; this stand-in builds the initrd the same way
# (modules from INITRD_MODULES in /etc/sysconfig/kernel, -k kernel -i initrd) with the
# tree's real mkinitramfs. Marked as a stand-in in its own header.
MKINITRD_STANDIN = r"""#!/bin/sh
# LAB STAND-IN for SUSE 11's mkinitrd (not the real one): builds the initrd from
# INITRD_MODULES in /etc/sysconfig/kernel with mkinitramfs. Usage: mkinitrd -k KERNEL -i INITRD
set -e
kernel=""; initrd=""
while [ $# -gt 0 ]; do
    case "$1" in
        -k) kernel=$2; shift 2 ;;
        -i) initrd=$2; shift 2 ;;
        *) shift ;;
    esac
done
INITRD_MODULES=""
. /etc/sysconfig/kernel
kver=${kernel##*vmlinuz-}
case "$initrd" in /*) ;; *) initrd=/boot/$initrd ;; esac
conf=$(mktemp -d)
cp -a /etc/initramfs-tools/. "$conf/"
sed -i 's/^MODULES=.*/MODULES=list/' "$conf/initramfs.conf"
printf '%s\n' $INITRD_MODULES ext4 > "$conf/modules"
echo "mkinitrd (lab stand-in): kernel $kver, modules: $INITRD_MODULES"
mkinitramfs -d "$conf" -o "$initrd" "$kver"
rm -rf "$conf"
"""

SYSCONFIG_KERNEL = """\
## Path:        System/Kernel
## Description:
## Type:        string
## Command:     /sbin/mkinitrd
#
# This variable contains the list of modules to be added to the initial
# ramdisk by calling the script "mkinitrd"
# (like drivers for scsi-controllers, for lvm or reiserfs)
#
INITRD_MODULES="ext4 xen-blkfront" # root disk on Xen

## Type:        string
## Command:     /sbin/mkinitrd
#
# This variable contains the list of modules to be added to the initial
# ramdisk that is created for unprivilegd Xen domains (domU); you may need
# drivers for virtual block and network devices in addition to filesystem
# and device-mapper modules.
#
DOMU_INITRD_MODULES="xennet xenblk"

## Type:        string
#
# This variable contains the list of modules to be loaded
# once the main filesystem is active
#
MODULES_LOADED_ON_BOOT=""
"""


def write(root: Path, path: str, text: str) -> None:
    """Write a file in the host tree, replacing a symlink rather than following it."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.write_text(text)


def release(root: Path, name: str, os_release: bool = True) -> None:
    """Replace Debian's release files by distribution name's."""
    for f in ("etc/os-release", "usr/lib/os-release", "etc/debian_version"):
        p = root / f
        if p.exists() or p.is_symlink():
            p.unlink()
    if os_release:
        write(root, "/etc/os-release", OS_RELEASE[name])
    for fname, text in LEGACY.get(name, {}).items():
        write(root, f"/etc/{fname}", text)


def rename_initrds(root: Path, pattern: str) -> dict[str, str]:
    """Rename Debian's initrd.img-K to the distribution's name; return kernel -> new path."""
    out = {}
    for k in kernels(root):
        new = "/boot/" + pattern.format(k=k)
        (root / f"boot/initrd.img-{k}").rename(root / new.lstrip("/"))
        out[k] = new
    return out


def drop_debian_grub(root: Path) -> None:
    """Remove the Debian-style grub.cfg (the variant writes its own)."""
    (root / "boot/grub/grub.cfg").unlink(missing_ok=True)


def rhel_grub2(root: Path, title: str, linux: str = "linux16", initrd: str = "initrd16") -> None:
    """RHEL 7 / EulerOS / openEuler: /boot/grub2/grub.cfg, paths relative to a /boot partition."""
    names = rename_initrds(root, "initramfs-{k}.img")
    drop_debian_grub(root)
    lines = ["### BEGIN /etc/grub.d/00_header ###", "set pager=1", 'if [ -s $prefix/grubenv ]; then',
             "  load_env", "fi", 'if [ "${next_entry}" ] ; then', '   set default="${next_entry}"',
             "   set next_entry=", "   save_env next_entry", "   set boot_once=true", "else",
             '   set default="${saved_entry}"', "fi", "### BEGIN /etc/grub.d/10_linux ###"]
    for k in sorted(names, reverse=True):
        lines += [f"menuentry '{title} ({k})' --class red --class gnu-linux --class gnu --class os --unrestricted"
                  f" $menuentry_id_option 'gnulinux-{k}-advanced-8c1d' {{",
                  "\tload_video", "\tset gfxpayload=keep", "\tinsmod gzio", "\tinsmod part_msdos", "\tinsmod xfs",
                  "\tset root='hd0,msdos1'",
                  f"\t{linux} /vmlinuz-{k} root=/dev/mapper/vg-root ro crashkernel=auto rhgb quiet LANG=en_US.UTF-8",
                  f"\t{initrd} {names[k].removeprefix('/boot')}", "}"]
    write(root, "/boot/grub2/grub.cfg", "\n".join(lines) + "\n")
    newest = sorted(names, reverse=True)[0]
    write(root, "/boot/grub2/grubenv",
          f"# GRUB Environment Block\nsaved_entry={title} ({newest})\n".ljust(1024, "#"))


def suse_grub2(root: Path, title: str) -> None:
    """SLES 12/15, openSUSE Leap: /boot/grub2/grub.cfg, initrd-K names, paths under /boot."""
    names = rename_initrds(root, "initrd-{k}")
    drop_debian_grub(root)
    lines = ['if [ -s $prefix/grubenv ]; then', "  load_env", "fi", 'set default="${saved_entry}"']
    for k in sorted(names, reverse=True):
        lines += [f"menuentry '{title}' --class sles --class gnu-linux --class gnu --class os"
                  f" $menuentry_id_option 'gnulinux-simple-{k}' {{",
                  "\tinsmod gzio", "\tinsmod part_gpt", "\tinsmod btrfs",
                  f"\tlinux\t/boot/vmlinuz-{k} root=UUID=3a5b ro splash=silent resume=/dev/sda2 quiet mitigations=auto",
                  f"\tinitrd\t{names[k]}", "}"]
    write(root, "/boot/grub2/grub.cfg", "\n".join(lines) + "\n")
    write(root, "/boot/grub2/grubenv", f"# GRUB Environment Block\nsaved_entry={title}\n".ljust(1024, "#"))


def bls(root: Path, title: str) -> None:
    """RHEL 8/9 family: BLS entries in /boot/loader/entries, grub.cfg with blscfg."""
    names = rename_initrds(root, "initramfs-{k}.img")
    drop_debian_grub(root)
    machine = "4b7f1c2e9d8a4f6b8e2a1c3d5e7f9a0b"
    for k in names:
        write(root, f"/boot/loader/entries/{machine}-{k}.conf",
              f"title {title} ({k})\nversion {k}\nlinux /vmlinuz-{k}\n"
              f"initrd {names[k].removeprefix('/boot')} $tuned_initrd\n"
              "options root=/dev/mapper/rl-root ro crashkernel=1G-4G:192M resume=/dev/mapper/rl-swap\n"
              f"grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rocky\n")
    write(root, "/boot/grub2/grub.cfg", "### BEGIN /etc/grub.d/00_header ###\nset pager=1\n"
          'if [ -f ${config_directory}/grubenv ]; then\n  load_env -f ${config_directory}/grubenv\nfi\n'
          'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\nelse\n   set default="${saved_entry}"\nfi\n'
          "### BEGIN /etc/grub.d/10_linux ###\ninsmod blscfg\nblscfg\n")
    newest = sorted(names, reverse=True)[0]
    write(root, "/boot/grub2/grubenv", f"# GRUB Environment Block\nsaved_entry={machine}-{newest}\n".ljust(1024, "#"))


def grub_legacy(root: Path, title: str, initrd_pattern: str, path: str, initrd_file: str | None = None) -> None:
    """GRUB legacy (CentOS 6 grub.conf, SLES 11 menu.lst); initrd_file: one custom file for all."""
    names = rename_initrds(root, initrd_pattern)
    drop_debian_grub(root)
    lines = ["# grub.conf generated by anaconda / Modified by YaST2", "default=0", "timeout=5", "hiddenmenu"]
    for k in sorted(names, reverse=True):
        initrd = initrd_file or names[k]
        if initrd_file:
            (root / initrd_file.lstrip("/")).write_bytes((root / names[k].lstrip("/")).read_bytes())
        lines += [f"title {title} ({k})", "\troot (hd0,0)",
                  f"\tkernel /boot/vmlinuz-{k} ro root=/dev/sda2 rd_NO_LUKS rd_NO_MD crashkernel=auto",
                  f"\tinitrd {initrd}"]
    write(root, path, "\n".join(lines) + "\n")


# --- the variants -----------------------------------------------------------------------


def centos7(root: Path) -> None:
    release(root, "centos7")
    rhel_grub2(root, "CentOS Linux")


def euleros2(root: Path) -> None:
    release(root, "euleros2")
    rhel_grub2(root, "EulerOS", "linux", "initrd")


def openeuler2203(root: Path) -> None:
    release(root, "openeuler2203")
    rhel_grub2(root, "openEuler", "linux", "initrd")


def sles12sp1(root: Path) -> None:
    release(root, "sles12sp1")
    suse_grub2(root, "SLES12-SP1")


def sles15sp5(root: Path) -> None:
    release(root, "sles15sp5")
    suse_grub2(root, "SLES 15-SP5")


def leap15(root: Path) -> None:
    release(root, "leap15")
    suse_grub2(root, "openSUSE Leap 15.5")


def rocky9_bls(root: Path) -> None:
    release(root, "rocky9")
    bls(root, "Rocky Linux")


def centos6(root: Path) -> None:
    release(root, "centos6", os_release=False)
    grub_legacy(root, "CentOS 6", "initramfs-{k}.img", "/boot/grub/grub.conf")
    (root / "boot/grub/menu.lst").symlink_to("grub.conf")


def sles11(root: Path) -> None:
    """SLES 11 SP4: SuSE-release only, INITRD_MODULES, menu.lst booting a custom /boot/initrd.vmx."""
    release(root, "sles11", os_release=False)
    grub_legacy(root, "SUSE Linux Enterprise Server 11 SP4", "initrd-{k}", "/boot/grub/menu.lst",
                initrd_file="/boot/initrd.vmx")
    write(root, "/etc/sysconfig/kernel", SYSCONFIG_KERNEL)
    write(root, "/sbin/mkinitrd", MKINITRD_STANDIN)
    (root / "sbin/mkinitrd").chmod(0o755)


def ubuntu2204(root: Path) -> None:
    release(root, "ubuntu2204")


def two_kernels_default_older(root: Path) -> None:
    """Two kernels; GRUB's default is the older one (set default="1")."""
    from tests.lab.bases import grub_cfg

    write(root, "/boot/grub/grub.cfg", grub_cfg(root, default="1"))


def custom_initrd_name(root: Path) -> None:
    """GRUB boots /boot/initrd-kvm-custom.img, not Debian's initrd.img-K."""
    from tests.lab.bases import grub_cfg

    for k in kernels(root):
        src = root / f"boot/initrd.img-{k}"
        (root / "boot/initrd-kvm-custom.img").write_bytes(src.read_bytes())
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, initrd_name="initrd-kvm-custom.img"))


def declared_already(root: Path) -> None:
    """MODULES=most initrd (virtio inside) and the drivers already declared: nothing to do."""
    p = root / "etc/initramfs-tools/modules"
    p.write_text(p.read_text() + "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\nvirtio\n")


def unsupported(root: Path) -> None:
    release(root, "arch")


def kernel_2_6_18(root: Path) -> None:
    """CentOS 5: the only kernel directory and image are a 2.6.18 kernel's (names only)."""
    release(root, "centos5", os_release=False)
    for k in kernels(root):
        (root / f"boot/vmlinuz-{k}").unlink()
        (root / f"lib/modules/{k}/modules.dep").unlink()
    old = "2.6.18-398.el5"
    write(root, f"/lib/modules/{old}/modules.dep", "")
    write(root, f"/boot/vmlinuz-{old}", "placeholder: the test only needs the refusal\n")
    drop_debian_grub(root)
    write(root, "/boot/grub/grub.conf", f"default=0\ntitle CentOS ({old})\n\troot (hd0,0)\n"
          f"\tkernel /vmlinuz-{old} ro root=/dev/VolGroup00/LogVol00\n\tinitrd /initrd-{old}.img\n")


def blacklisted(root: Path) -> None:
    """A modprobe.d rule that stops virtio_blk loading even when asked for by name."""
    write(root, "/etc/modprobe.d/no-virtio.conf",
          "# left over from a Xen image template\ninstall virtio_blk /bin/false\noptions loop max_loop=8\n")
