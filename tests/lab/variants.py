"""Turn a fresh host overlay into a given distribution's layout: release files, initrd
names and bootloader configuration, exactly as those distributions write them.

The root filesystems are Debian's (debootstrap); what differs is what kvm-drivers reads to
route a host (release files, bootloader files, initrd names, SUSE's sysconfig). The initrds
are rebuilt with the real dracut / mkinitramfs; the one exception, SUSE 11's mkinitrd, is a
stand-in marked as such (see MKINITRD_STANDIN).
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.bases import BOOT_UUID, CONSOLE, ROOT_UUID, chroot, grub_cfg, kernels

# Kernel command lines of the lab's hosts: their own, as their configurations hold them. Every one
# has a serial console (as cloud images do), so a boot's console shows why it failed.
DEB_CMDLINE = f"root=/dev/vda ro quiet {CONSOLE}"
UUID_CMDLINE = f"root=UUID={ROOT_UUID} ro quiet {CONSOLE}"

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
    "rocky8": 'NAME="Rocky Linux"\nVERSION="8.10 (Green Obsidian)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="8.10"\nPLATFORM_ID="platform:el8"\nPRETTY_NAME="Rocky Linux 8.10 (Green Obsidian)"\n',
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
    "rocky8": {"rocky-release": "Rocky Linux release 8.10 (Green Obsidian)\n",
               "redhat-release": "Rocky Linux release 8.10 (Green Obsidian)\n"},
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


# RHEL's 00_header defines load_video (entries call it); as grub2-mkconfig writes it.
LOAD_VIDEO = ["function load_video {", "  if [ x$feature_all_video_module = xy ]; then", "    insmod all_video",
              "  else", "    insmod efi_gop", "    insmod efi_uga", "    insmod ieee1275_fb", "    insmod vbe",
              "    insmod vga", "    insmod video_bochs", "    insmod video_cirrus", "  fi", "}"]


def rhel_grub2(root: Path, title: str, linux: str = "linux16", initrd: str = "initrd16") -> None:
    """RHEL 7 / EulerOS / openEuler: /boot/grub2/grub.cfg, paths relative to a /boot partition."""
    names = rename_initrds(root, "initramfs-{k}.img")
    drop_debian_grub(root)
    lines = ["### BEGIN /etc/grub.d/00_header ###", "set pager=1", 'if [ -s $prefix/grubenv ]; then',
             "  load_env", "fi", 'if [ "${next_entry}" ] ; then', '   set default="${next_entry}"',
             "   set next_entry=", "   save_env next_entry", "   set boot_once=true", "else",
             '   set default="${saved_entry}"', "fi", *LOAD_VIDEO, "set timeout=5",
             "### BEGIN /etc/grub.d/10_linux ###"]
    for k in sorted(names, reverse=True):
        lines += [f"menuentry '{title} ({k})' --class red --class gnu-linux --class gnu --class os --unrestricted"
                  f" $menuentry_id_option 'gnulinux-{k}-advanced-8c1d' {{",
                  "\tload_video", "\tset gfxpayload=keep", "\tinsmod gzio", "\tinsmod part_msdos", "\tinsmod xfs",
                  "\tset root='hd0,msdos1'",
                  f"\tsearch --no-floppy --fs-uuid --set=root --hint='hd0,msdos1' {BOOT_UUID}",
                  f"\t{linux} /vmlinuz-{k} root=UUID={ROOT_UUID} ro crashkernel=auto rhgb quiet {CONSOLE}"
                  " LANG=en_US.UTF-8",
                  f"\t{initrd} {names[k].removeprefix('/boot')}", "}"]
    write(root, "/boot/grub2/grub.cfg", "\n".join(lines) + "\n")
    newest = sorted(names, reverse=True)[0]
    write(root, "/boot/grub2/grubenv",
          f"# GRUB Environment Block\nsaved_entry={title} ({newest})\n".ljust(1024, "#"))


def suse_grub2(root: Path, title: str) -> None:
    """SLES 12/15, openSUSE Leap: /boot/grub2/grub.cfg, initrd-K names, paths under /boot."""
    names = rename_initrds(root, "initrd-{k}")
    drop_debian_grub(root)
    lines = ['if [ -s $prefix/grubenv ]; then', "  load_env", "fi", 'set default="${saved_entry}"', "set timeout=5"]
    for k in sorted(names, reverse=True):
        lines += [f"menuentry '{title}' --class sles --class gnu-linux --class gnu --class os"
                  f" $menuentry_id_option 'gnulinux-simple-{k}' {{",
                  "\tinsmod gzio", "\tinsmod part_gpt", "\tinsmod btrfs",
                  f"\tlinux\t/boot/vmlinuz-{k} root=UUID={ROOT_UUID} ro splash=silent quiet {CONSOLE} mitigations=auto",
                  f"\tinitrd\t{names[k]}", "}"]
    write(root, "/boot/grub2/grub.cfg", "\n".join(lines) + "\n")
    write(root, "/boot/grub2/grubenv", f"# GRUB Environment Block\nsaved_entry={title}\n".ljust(1024, "#"))


# Fedora/RHEL's 08_fallback_counting block (greenboot boot counting): its `set default=1`
# only applies when boot_counter is set and boot_success is 0.
COUNTING = """### BEGIN /etc/grub.d/08_fallback_counting ###
insmod increment
if [ -n "${boot_counter}" -a "${boot_success}" = "0" ]; then
  if  [ "${boot_counter}" = "0" -o "${boot_counter}" = "-1" ]; then
    set default=1
    set boot_counter=-1
  else
    decrement boot_counter
  fi
  save_env boot_counter
fi
### END /etc/grub.d/08_fallback_counting ###
"""
MACHINE_ID = "4b7f1c2e9d8a4f6b8e2a1c3d5e7f9a0b"


def bls(root: Path, title: str, versions: dict[str, str] | None = None, saved: bool = True,
        counting: bool = False) -> None:
    """RHEL 8/9 family: BLS entries in /boot/loader/entries, grub.cfg with blscfg.

    versions: kernel -> the version its entry names (default: the kernel's own); saved: grubenv
    names the newest kernel's entry; counting: grub.cfg has the boot-success counting block.
    """
    names = rename_initrds(root, "initramfs-{k}.img")
    drop_debian_grub(root)
    versions = versions or {k: k for k in names}
    for k in names:
        write(root, f"/boot/loader/entries/{MACHINE_ID}-{versions[k]}.conf",
              f"title {title} ({versions[k]})\nversion {versions[k]}\nlinux /vmlinuz-{k}\n"
              f"initrd {names[k].removeprefix('/boot')} $tuned_initrd\n"
              f"options root=UUID={ROOT_UUID} ro crashkernel=1G-4G:192M {CONSOLE}\n"
              f"grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rocky\n")
    write(root, "/boot/grub2/grub.cfg", "### BEGIN /etc/grub.d/00_header ###\nset pager=1\nset timeout=5\n"
          'if [ -f ${config_directory}/grubenv ]; then\n  load_env -f ${config_directory}/grubenv\nfi\n'
          'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\nelse\n   set default="${saved_entry}"\nfi\n'
          + (COUNTING if counting else "")
          + "### BEGIN /etc/grub.d/10_linux ###\ninsmod blscfg\nblscfg\n")
    newest = sorted(names, reverse=True)[0]
    saved_line = f"saved_entry={MACHINE_ID}-{versions[newest]}\n" if saved else ""
    write(root, "/boot/grub2/grubenv", f"# GRUB Environment Block\n{saved_line}".ljust(1024, "#"))


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
                  f"\tkernel /boot/vmlinuz-{k} ro root=/dev/vda1 rd_NO_LUKS rd_NO_MD crashkernel=auto {CONSOLE}",
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
    sles11_menu(root, initrd_file="/boot/initrd.vmx")


def debian(root: Path) -> None:
    """Debian's grub.cfg (grub-mkconfig's layout) with the lab's command line."""
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, cmdline=DEB_CMDLINE))


# Debian's signed GRUB (grub-efi-amd64-signed, on this machine): the ESP's loader, as grub-install puts it.
GRUB_EFI = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
# EFI/debian/grub.cfg as Debian's grub-install writes it: a stub that only points at the real grub.cfg.
ESP_STUB = (
    f"search.fs_uuid {ROOT_UUID} root hd0,msdos2\n"
    "set prefix=($root)'/boot/grub'\n"
    "set debug=linux\nexport debug\n"  # lab addition: GRUB prints the initrd's size
    "configfile $prefix/grub.cfg\n"
)


def debian_uefi(root: Path, fallback: bool = True) -> None:
    """Debian booted through UEFI: root on partition 2 (the ESP is partition 1), named by UUID. Its
    ESP, mounted on /boot/efi (the lab's boot disk is made of what is there, tests/lab/boot.py):
    EFI/debian/grubx64.efi and the stub grub.cfg, and (fallback) the same GRUB on the removable-media
    path EFI/BOOT/BOOTX64.EFI, which the firmware boots when its NVRAM holds no entry."""
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, cmdline=UUID_CMDLINE))
    write(root, "/boot/efi/EFI/debian/grub.cfg", ESP_STUB)
    loaders = ["EFI/debian/grubx64.efi"] + (["EFI/BOOT/BOOTX64.EFI"] if fallback else [])
    for loader in loaders:
        (root / "boot/efi" / loader).parent.mkdir(parents=True, exist_ok=True)
        (root / "boot/efi" / loader).write_bytes(GRUB_EFI.read_bytes())


def efi_without_fallback(root: Path) -> None:
    """Issue 20: Debian booted through UEFI by its NVRAM entry (grub-install's default, no
    --removable): the ESP has EFI/debian/ but no EFI/BOOT/BOOTX64.EFI. Imported as an image, the
    NVRAM does not come along, and the firmware finds nothing to boot."""
    debian_uefi(root, fallback=False)


def builtin(root: Path) -> None:
    """A kernel with every virtio driver built in: GRUB boots it without an initrd."""
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, cmdline=DEB_CMDLINE, initrd=False))


def ubuntu2204(root: Path) -> None:
    release(root, "ubuntu2204")
    debian(root)


def two_kernels_default_older(root: Path) -> None:
    """Two kernels; GRUB's default is the older one (set default="1")."""
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, default="1", cmdline=DEB_CMDLINE))


def custom_initrd_name(root: Path) -> None:
    """GRUB boots /boot/initrd-kvm-custom.img, not Debian's initrd.img-K."""
    for k in kernels(root):
        src = root / f"boot/initrd.img-{k}"
        (root / "boot/initrd-kvm-custom.img").write_bytes(src.read_bytes())
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, initrd_name="initrd-kvm-custom.img", cmdline=DEB_CMDLINE))


def declared_already(root: Path) -> None:
    """MODULES=most initrd (virtio inside) and the drivers already declared: nothing to do."""
    p = root / "etc/initramfs-tools/modules"
    p.write_text(p.read_text() + "virtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_pci\nvirtio_ring\nvirtio\n")
    debian(root)


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
    debian(root)


# --- issue 10: bootloader configurations that real GRUB reads differently from a naive model ---


def debian_entry(title: str, k: str, initrd: str, ident: str, indent: str = "", cmdline: str = DEB_CMDLINE,
                 prefix: str = "") -> list[str]:
    """One Debian-style menuentry (prefix: a path in front of /boot, e.g. /@ on btrfs)."""
    return [f"{indent}menuentry '{title}' --class debian --class gnu-linux --class gnu --class os"
            f" $menuentry_id_option '{ident}' {{",
            f"{indent}\tinsmod ext2",
            f"{indent}\tlinux\t{prefix}/boot/vmlinuz-{k} {cmdline}",
            f"{indent}\tinitrd\t{prefix}/boot/{initrd}",
            f"{indent}}}"]


DEBIAN_HEADER = ["if [ -s $prefix/grubenv ]; then", "  set have_grubenv=true", "  load_env", "fi",
                 'if [ "${next_entry}" ] ; then', '   set default="${next_entry}"', "   set next_entry=",
                 "   save_env next_entry", "else", '   set default="{default}"', "fi", "set timeout=5"]


def debian_submenu_cfg(root: Path, default: str, top: str) -> str:
    """grub-mkconfig's layout: one top-level entry (kernel top), then 'Advanced options' holding
    an entry per kernel, newest first."""
    ks = sorted(kernels(root), reverse=True)
    lines = [ln.replace("{default}", default) for ln in DEBIAN_HEADER]
    lines += debian_entry("Debian GNU/Linux", top, f"initrd.img-{top}", "gnulinux-simple-3a5b")
    lines += ["submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-3a5b' {"]
    for k in ks:
        lines += debian_entry(f"Debian GNU/Linux, with Linux {k}", k, f"initrd.img-{k}",
                              f"gnulinux-{k}-advanced-3a5b", indent="\t")
    return "\n".join(lines + ["}"]) + "\n"


def saved_title_in_submenu(root: Path) -> None:
    """grubenv's saved_entry is the bare title of an entry inside the submenu (the older kernel).
    GRUB looks titles up at the top level only and falls back to entry 0 (the newest kernel)."""
    older, newest = sorted(kernels(root))
    write(root, "/boot/grub/grub.cfg", debian_submenu_cfg(root, "${saved_entry}", newest))
    write(root, "/boot/grub/grubenv",
          f"# GRUB Environment Block\nsaved_entry=Debian GNU/Linux, with Linux {older}\n".ljust(1024, "#"))


def default_names_submenu(root: Path) -> None:
    """set default="1" where entry 1 is 'Advanced options': GRUB boots the submenu's first entry
    (the newest kernel). The top-level entry boots the older kernel (GRUB_TOP_LEVEL)."""
    older, _newest = sorted(kernels(root))
    write(root, "/boot/grub/grub.cfg", debian_submenu_cfg(root, "1", older))


def suse_snapshot_header(root: Path) -> None:
    """SLES 15 on btrfs: 00_header's snapshot block (one-line { ... } blocks) before the entries.
    The default (saved_entry, the top entry's title) boots the older kernel."""
    release(root, "sles15sp5")
    names = rename_initrds(root, "initrd-{k}")
    drop_debian_grub(root)
    older, _newest = sorted(names)
    title = "SLES 15-SP5"

    def entry(t: str, k: str, ident: str, indent: str = "") -> list[str]:
        return [f"{indent}menuentry '{t}' --class sles --class gnu-linux --class gnu --class os"
                f" $menuentry_id_option '{ident}' {{",
                f"{indent}\tinsmod gzio", f"{indent}\tinsmod part_gpt", f"{indent}\tinsmod btrfs",
                f"{indent}\tlinux\t/boot/vmlinuz-{k} root=UUID={ROOT_UUID} ro splash=silent quiet {CONSOLE}",
                f"{indent}\tinitrd\t{names[k]}", f"{indent}}}"]

    lines = ["### BEGIN /etc/grub.d/00_header ###", "if [ -s $prefix/grubenv ]; then", "  load_env", "fi",
             'set default="${saved_entry}"', "set timeout=5",
             'if [ -n "$extra_cmdline" ]; then',
             '  submenu "Bootable snapshot #$snapshot_num" {',
             "    menuentry \"If OK, run 'snapper rollback' and reboot.\" { true; }",
             "  }", "fi", "### END /etc/grub.d/00_header ###", "### BEGIN /etc/grub.d/10_linux ###"]
    lines += entry(title, older, f"gnulinux-simple-{ROOT_UUID}")
    lines += [f"submenu 'Advanced options for {title}' --hotkey=1 $menuentry_id_option 'gnulinux-advanced' {{"]
    for k in sorted(names, reverse=True):
        lines += entry(f"{title}, with Linux {k}", k, f"gnulinux-{k}-advanced", "\t")
    lines += ["}", "### END /etc/grub.d/10_linux ###"]
    write(root, "/boot/grub2/grub.cfg", "\n".join(lines) + "\n")
    write(root, "/boot/grub2/grubenv", f"# GRUB Environment Block\nsaved_entry={title}\n".ljust(1024, "#"))


def sles11_vmx(root: Path) -> None:
    """SLES 11 SP4 as the procedure's example: menu.lst boots kernel /boot/linux.vmx and initrd
    /boot/initrd.vmx, copies of the versioned files: only the image itself ties them to a kernel."""
    release(root, "sles11", os_release=False)
    names = rename_initrds(root, "initrd-{k}")
    drop_debian_grub(root)
    (k,) = names
    (root / "boot/linux.vmx").write_bytes((root / f"boot/vmlinuz-{k}").read_bytes())
    (root / "boot/initrd.vmx").write_bytes((root / names[k].lstrip("/")).read_bytes())
    write(root, "/boot/grub/menu.lst",
          "# Modified by YaST2. Last modification on Mon Jan 11 10:00:00 UTC 2016\ndefault 0\ntimeout 5\n\n"
          "title SUSE Linux Enterprise Server 11 SP4\n    root (hd0,0)\n"
          f"    kernel /boot/linux.vmx root=/dev/vda1 resume=/dev/vda2 splash=silent showopts {CONSOLE}\n"
          "    initrd /boot/initrd.vmx\n")
    write(root, "/etc/sysconfig/kernel", SYSCONFIG_KERNEL)
    write(root, "/sbin/mkinitrd", MKINITRD_STANDIN)
    (root / "sbin/mkinitrd").chmod(0o755)


def bls_rpm_order(root: Path) -> None:
    """Rocky 8, BLS, no saved_entry: RHEL's blscfg sorts the entries by rpm version order, and
    4.18.0-240.1.1.el8_3 is newer than 4.18.0-240.el8. The versions are RHEL's; the images are
    the lab's Debian kernels (the older kernel under the newer RHEL version)."""
    release(root, "rocky8")
    older, newest = sorted(kernels(root))
    bls(root, "Rocky Linux", versions={older: "4.18.0-240.1.1.el8_3.x86_64", newest: "4.18.0-240.el8.x86_64"},
        saved=False)


def rhel_counting(root: Path) -> None:
    """Rocky 9, BLS, saved_entry the newest kernel, and the boot-success counting block whose
    `set default=1` (the older kernel) only applies while boot_counter counts down."""
    release(root, "rocky9")
    bls(root, "Rocky Linux", counting=True)


def btrfs_subvolume(root: Path) -> None:
    """Ubuntu on btrfs with the @ subvolume: grub.cfg names /@/boot/vmlinuz-K and /@/boot/initrd.img-K
    (GRUB reads the top level); the running system sees them as /boot/... The initrd lists btrfs."""
    release(root, "ubuntu2204")
    modules = root / "etc/initramfs-tools/modules"
    modules.write_text(modules.read_text() + "btrfs\n")
    chroot(root, "update-initramfs -u -k all >/dev/null 2>&1")
    (root / "etc/fstab").write_text(f"UUID={ROOT_UUID} / btrfs defaults,subvol=@ 0 1\n")
    cmdline = f"root=UUID={ROOT_UUID} ro rootflags=subvol=@ quiet {CONSOLE}"
    lines = [ln.replace("{default}", "0") for ln in DEBIAN_HEADER]
    for k in sorted(kernels(root), reverse=True):
        lines += debian_entry(f"Ubuntu, with Linux {k}", k, f"initrd.img-{k}", f"gnulinux-{k}-advanced",
                              cmdline=cmdline, prefix="/@")
    write(root, "/boot/grub/grub.cfg", "\n".join(lines).replace("insmod ext2", "insmod btrfs") + "\n")


# --- issue 18: the real boot lacks virtio although the usual files look fine ---------------------

CUSTOM_TITLE = "Debian GNU/Linux (custom initrd)"
RECOVERY = "Debian GNU/Linux, with Linux {k} (recovery mode)"
# /etc/grub.d/41_custom as grub-mkconfig writes it into every stock grub.cfg (Debian, RHEL, SUSE)
CUSTOM_41 = ["### BEGIN /etc/grub.d/41_custom ###", "if [ -f  ${config_directory}/custom.cfg ]; then",
             "  source ${config_directory}/custom.cfg",
             'elif [ -z "${config_directory}" -a -f  $prefix/custom.cfg ]; then', "  source $prefix/custom.cfg",
             "fi", "### END /etc/grub.d/41_custom ###"]


def default_entry_without_initrd(root: Path) -> None:
    """The default entry has no initrd line; the recovery entry of the same kernel has one (whose
    image holds virtio). GRUB boots the default entry: its kernel starts without any initrd."""
    (k,) = kernels(root)
    lines = [ln for ln in debian_entry(f"Debian GNU/Linux, with Linux {k}", k, f"initrd.img-{k}",
                                       f"gnulinux-{k}-advanced") if "\tinitrd\t" not in ln]
    lines += debian_entry(RECOVERY.format(k=k), k, f"initrd.img-{k}", f"gnulinux-{k}-recovery",
                          cmdline=DEB_CMDLINE + " single")
    header = [ln.replace("{default}", "0") for ln in DEBIAN_HEADER]
    write(root, "/boot/grub/grub.cfg", "\n".join(header + lines) + "\n")


def xen_initrd(root: Path, path: str) -> None:
    """Build an initrd as a Xen template's (MODULES=list: ext4 and the Xen front ends, no virtio)
    at path, with the tree's real mkinitramfs and a configuration directory of its own."""
    (k,) = kernels(root)
    chroot(root, "rm -rf /root/xen-conf && cp -a /etc/initramfs-tools /root/xen-conf"
                 " && sed -i 's/^MODULES=.*/MODULES=list/' /root/xen-conf/initramfs.conf"
                 " && printf 'ext4\\nxen-blkfront\\nxen-netfront\\n' > /root/xen-conf/modules"
                 f" && mkinitramfs -d /root/xen-conf -o {path} {k} && rm -rf /root/xen-conf")


def custom_cfg_default(root: Path) -> None:
    """Stock grub.cfg (41_custom sources custom.cfg); custom.cfg adds an entry whose initrd has no
    virtio and makes it the default. The distribution's initrd.img-K has virtio."""
    (k,) = kernels(root)
    xen_initrd(root, "/boot/initrd-custom.img")
    cfg = (root / "boot/grub/grub.cfg").read_text()
    write(root, "/boot/grub/grub.cfg", cfg + "\n".join(CUSTOM_41) + "\n")
    entry = debian_entry(CUSTOM_TITLE, k, "initrd-custom.img", "custom-initrd")
    write(root, "/boot/grub/custom.cfg", "\n".join(entry) + f'\nset default="{CUSTOM_TITLE}"\n')


def blacklist_left_in_initrd(root: Path) -> None:
    """'install virtio_blk /bin/false' was in modprobe.d when the initrd was built (initramfs-tools
    copies modprobe.d into it), then removed from the host: only the initrd still carries it."""
    write(root, "/etc/modprobe.d/no-virtio.conf", "install virtio_blk /bin/false\n")
    chroot(root, "update-initramfs -u -k all >/dev/null 2>&1")
    (root / "etc/modprobe.d/no-virtio.conf").unlink()


def cmdline_blacklist(root: Path) -> None:
    """The default entry's kernel line has module_blacklist=virtio_blk: the kernel refuses it."""
    write(root, "/boot/grub/grub.cfg", grub_cfg(root, cmdline=DEB_CMDLINE + " module_blacklist=virtio_blk"))


def empty_modules_dep(root: Path) -> None:
    """modules.dep cut to nothing (depmod on a full disk): modprobe finds no module at all."""
    for k in kernels(root):
        (root / f"lib/modules/{k}/modules.dep").write_text("")


def dracut_omit_regex(root: Path) -> None:
    """dracut's omit_drivers holds the pattern 'virtio.*': the next initrd dracut builds has no virtio."""
    write(root, "/etc/dracut.conf.d/50-slim.conf", '# from a slim-image template\nomit_drivers+=" virtio.* "\n')


# Issue 20: a server moved from Xen, its root named as Xen named it. The drivers are fine (the
# MODULES=most base, declared): the only thing that stops the boot on KVM is the name.
XEN_ROOT = "/dev/xvda2"  # under Xen; on KVM the same partition is /dev/vda2 (the lab's "split" disk)
XEN_DATA = "/dev/xvdb1"  # under Xen; on KVM the lab's data disk (tests/lab/boot.py wants_data_disk) is /dev/vdb
DATA_UUID = "5d0c2b7e-9f3a-4c1d-8e6b-0a9f8e7d6c5b"  # the lab's data disk's file system
SWAP_UUID = "7e1f3a5c-2b4d-4e6f-8a0c-1d3e5f7a9b2c"  # a swap partition the lab's split disk gets (fstab names it)

# STAND-IN for blkid and findfs (marked as such): a lab host is a namespace over an overlay, with no
# block device at all, so the real programs have nothing to answer from. These answer what they
# would on the old host (blkid_standin's devices: device -> UUID), e.g. the Xen host: the root
# partition /dev/xvda2 holds the file system whose UUID is ROOT_UUID, /dev/xvdb1 the data disk's,
# DATA_UUID (the lab's disks carry fixed UUIDs). Anything else: what blkid/findfs say for an unknown
# device.
def blkid_standin(devices: dict[str, str]) -> str:
    """The blkid stand-in's script for these devices (device -> UUID; ext4, swap for a swap UUID)."""
    by_uuid = "".join(f"    *-U*{u}*) echo {d} ;;\n" for d, u in devices.items())
    listing = "; ".join(f"echo '{d}: UUID=\"{u}\" TYPE=\"{'swap' if u == SWAP_UUID else 'ext4'}\"'"
                        for d, u in devices.items())  # fmt: skip
    return ("#!/bin/sh\n# kvm-drivers lab STAND-IN for blkid (tests/lab/variants.py): the old host's disks.\n"
            f'case "$*" in\n{by_uuid}    *-U*) exit 2 ;;\n    *) {listing} ;;\nesac\n')


def findfs_standin(devices: dict[str, str]) -> str:
    """The findfs stand-in's script for these devices (device -> UUID)."""
    lines = "".join(f'[ "$1" = "UUID={u}" ] && {{ echo {d}; exit 0; }}\n' for d, u in devices.items())
    return ("#!/bin/sh\n# kvm-drivers lab STAND-IN for findfs (tests/lab/variants.py): the old host's disks.\n"
            f"{lines}echo \"findfs: unable to resolve '$1'\" >&2; exit 1\n")


def standins(root: Path, devices: dict[str, str]) -> None:
    """Install the blkid and findfs stand-ins in /usr/local/sbin (before /sbin on root's PATH)."""
    for name, text in (("blkid", blkid_standin(devices)), ("findfs", findfs_standin(devices))):
        write(root, f"/usr/local/sbin/{name}", text)
        (root / "usr/local/sbin" / name).chmod(0o755)


def xen_data_name(root: Path) -> None:
    """The Xen-named data disk alone: root by UUID, but /dev/xvdb1 /data in fstab (no nofail), with
    the same blkid and findfs stand-ins: the boot's fstab mounts fail, not its root."""
    xen_root_name(root)
    for entry in (root / "boot/loader/entries").glob("*.conf"):
        entry.write_text(entry.read_text().replace(f"root={XEN_ROOT}", f"root=UUID={ROOT_UUID}"))
    write(root, "/etc/fstab", f"# /etc/fstab: static file system information.\n"
                              f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n{XEN_DATA} /data ext4 defaults 0 2\n")


def xen_root_name(root: Path) -> None:
    """Debian booted through BLS entries (GRUB 2.14's blscfg: the entry file is where root= is
    written, not a generated grub.cfg), root=/dev/xvda2 on its kernel line and in fstab, and a data
    disk /dev/xvdb1 /data in fstab (no nofail), as the Xen host booted; blkid and findfs stand-ins
    (standins)."""
    bls(root, "Debian GNU/Linux")
    for entry in (root / "boot/loader/entries").glob("*.conf"):
        entry.write_text(entry.read_text().replace(f"root=UUID={ROOT_UUID}", f"root={XEN_ROOT}"))
    write(root, "/etc/fstab", f"# /etc/fstab: static file system information.\n"
                              f"{XEN_ROOT} / ext4 errors=remount-ro 0 1\n{XEN_DATA} /data ext4 defaults 0 2\n")
    (root / "data").mkdir(exist_ok=True)
    standins(root, {XEN_ROOT: ROOT_UUID, XEN_DATA: DATA_UUID})


RESUME_GONE = "/dev/sda2"  # the Xen/VMware host's swap partition; on KVM the disk is /dev/vda


def resume_name(root: Path) -> None:
    """Issue 20: Debian booted through BLS entries whose kernel line names the old swap partition by
    its device name, resume=/dev/sda2 (hibinit-agent #55), as the host was set up to hibernate."""
    bls(root, "Debian GNU/Linux")
    for entry in (root / "boot/loader/entries").glob("*.conf"):
        text = entry.read_text()
        entry.write_text(text.replace(f"root=UUID={ROOT_UUID}", f"root=UUID={ROOT_UUID} resume={RESUME_GONE}"))


# Lab artifact: a tree holding this file has udev started by the lab's boot probe (tests/lab/boot.py
# PROBE), which then reports each NIC's name as udev left it. The other hosts boot without udev.
UDEV_MARK = "/etc/kvm-lab/udev"
UDEV_RULES = Path(__file__).parents[1] / "fixtures/boot_path/udev/aws-rhel8-70-persistent-net.rules"


def nic_rule_by_mac(root: Path) -> None:
    """Issue 20: a Debian host moved from AWS whose NIC is named eth0 by a udev rule bound to its old
    MAC (the real 70-persistent-net.rules of tests/fixtures/boot_path/udev, from an AWS RHEL 8
    host), and configured as eth0 in /etc/network/interfaces; predictable names are on (no
    net.ifnames=0), so the rule is what named the old NIC eth0."""
    bls(root, "Debian GNU/Linux")
    write(root, "/etc/udev/rules.d/70-persistent-net.rules", UDEV_RULES.read_text())
    write(root, "/etc/network/interfaces", "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
                                           "auto eth0\niface eth0 inet dhcp\n")
    write(root, UDEV_MARK, "")


def default_kernel_without_virtio(root: Path) -> None:
    """Issue 20: SLES 11 (menu.lst, INITRD_MODULES, the mkinitrd stand-in) whose default entry boots a
    kernel that cannot run on KVM, as a Xen host's kernel-xen does, while an older installed kernel
    can. STAND-IN (marked as such): no Xen PV kernel can be had here, so the newer kernel is made one
    without virtio: its virtio modules are deleted (depmod run again) and its /boot/config says so.
    Its real boot has no virtio_blk anywhere. The older kernel has its modules; its initrd lacks them."""
    sles11_menu(root)
    new = max(kernels(root), key=lambda k: [int(x) if x.isdigit() else 0 for x in k.replace("-", ".").split(".")])
    for module in (root / "lib/modules" / new).rglob("*virtio*.ko*"):
        module.unlink()
    chroot(root, f"depmod {new}")  # the tree's own depmod
    config = root / f"boot/config-{new}"
    lines = config.read_text().splitlines()
    config.write_text("".join((f"# {ln.split('=')[0]} is not set" if "VIRTIO" in ln and not ln.startswith("#")
                               else ln) + "\n" for ln in lines))  # fmt: skip


def sles11_menu(root: Path, initrd_file: str | None = None) -> None:
    """SLES 11 SP4's release file, menu.lst with an entry per kernel (newest first, default 0; each
    booting initrd_file when given), INITRD_MODULES and the mkinitrd stand-in."""
    release(root, "sles11", os_release=False)
    grub_legacy(root, "SUSE Linux Enterprise Server 11 SP4", "initrd-{k}", "/boot/grub/menu.lst", initrd_file)
    write(root, "/etc/sysconfig/kernel", SYSCONFIG_KERNEL)
    write(root, "/sbin/mkinitrd", MKINITRD_STANDIN)
    (root / "sbin/mkinitrd").chmod(0o755)


VIRTIO_DECLARED = ('# lab: the drivers declared as kvm-drivers declares them\n'
                   'add_drivers+=" virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring virtio "\n')


def resume_name_systemd(root: Path) -> None:
    """Issue 20: resume=/dev/sda2 on a host whose initrd is dracut's with systemd, whose resume module
    (the lab's dracut bases leave it out) is put back, and whose drivers are declared: the initrd is
    built again (real dracut, --no-hostonly) with virtio and the resume module, systemd's
    hibernate-resume generator among it. /dev/sda2 was its swap partition: fstab names it by UUID,
    the lab's disk has it (tests/lab/boot.py wants_swap), the blkid and findfs stand-ins know it."""
    resume_name(root)
    for entry in (root / "boot/loader/entries").glob("*.conf"):  # dracut's default rd.retry: its timeout
        entry.write_text(entry.read_text().replace(" rd.retry=30", ""))  # line must not end the boot first
    with open(root / "etc/fstab", "a") as f:
        f.write(f"UUID={SWAP_UUID} none swap sw 0 0\n")
    standins(root, {RESUME_GONE: SWAP_UUID})
    conf = root / "etc/dracut.conf.d/05-lab-xen-image.conf"
    conf.write_text(conf.read_text().replace(" resume ", " "))
    write(root, "/etc/dracut.conf.d/90-kvm-drivers.conf", VIRTIO_DECLARED)
    for k in kernels(root):
        chroot(root, f"dracut -f --no-hostonly /boot/initramfs-{k}.img {k}")
