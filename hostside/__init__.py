"""
What runs on the hosts, as the text sent to them: POSIX sh scripts and a Python lister.

Facts and operations both send these; nothing here runs on the control machine.

- ``gather.sh``: the one read-only command that gathers a host's state (``@@KVM`` sections,
  specified in ``facts/wire.py`` next to their parser);
- ``write.sh``, ``unblacklist.sh``, ``rebuild.sh``: the changes, each under the host's lock;
- ``aside.sh``, ``efi_copy.sh``, ``verify_uuid.sh``, ``rollback.sh``: those of the boot-path fixes
  (issue 20: move a file aside, copy the UEFI fallback, prove the UUIDs written, undo a failed run);
- ``lib.sh``: shell functions prepended to each of them (listing an initrd and reading its
  modprobe.d and command-line files, module-name normalisation, finding the lines that may stop a
  module: the awk twin of ``facts/blacklist.py``); ``lock.sh``: those of the changes only (lock,
  state directory, rollback, swap);
- ``initrd_ls.py``: lists an initrd where lsinitrd/lsinitramfs cannot, and prints a few of its
  files (``--cat``: lsinitramfs cannot) (Python 2.7 or 3).

The lists and limits the scripts share with the control side are defined once, below: the
scripts get them as shell assignments (``KVM_*``, quoted as pyinfra quotes an argument) put
before ``lib.sh`` (``SHELL_CONSTANTS``); ``facts/`` imports them from here.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path

HERE = Path(__file__).parent

# --- what gather.sh reads, and its limits ---------------------------------------------------

# One path component a host may report where a list below has "*" (a plain name).
NAME = r"[A-Za-z0-9][A-Za-z0-9._@+,-]{0,127}"
# The release files distro may read (facts/distro.py parse_distro copies each to a fixed place
# of a private directory: only these names are ever written there).
RELEASE_FILES = (
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/SuSE-release",
    "/etc/redhat-release",
    "/etc/centos-release",
    "/etc/euleros-release",
    "/etc/openEuler-release",
    "/etc/system-release",
)
# The declaration each initrd generator reads (what kvm-drivers writes the drivers into).
CONFIG_PATHS = {
    "initramfs-tools": "/etc/initramfs-tools/modules",
    "dracut": "/etc/dracut.conf.d/90-kvm-drivers.conf",
    "suse-mkinitrd": "/etc/sysconfig/kernel",
}
# GRUB 2's files, as gather.sh looks for them.
GRUB_FILES = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub/grubenv", "/boot/grub2/grubenv",
              "/boot/grub/custom.cfg", "/boot/grub2/custom.cfg")  # fmt: skip
# Files whose presence gather.sh always reports (dumped when they exist): a GRUB test '-f' on one
# of them has a known answer, and sourcing one that is not there does nothing.
REPORTED_BOOT_FILES = frozenset(GRUB_FILES)
# Configurations of boot loaders kvm-drivers does not read: on a host that has one, which loader
# really boots (and what) cannot be told from GRUB's files alone.
OTHER_LOADERS = {
    "/boot/extlinux/extlinux.conf": "extlinux", "/boot/extlinux.conf": "extlinux",
    "/boot/syslinux/syslinux.cfg": "syslinux", "/boot/loader/loader.conf": "systemd-boot",
    "/boot/efi/loader/loader.conf": "systemd-boot", "/efi/loader/loader.conf": "systemd-boot",
}  # fmt: skip
# What else decides whether a migrated server boots and is reached on KVM (facts/migration.py):
# mounts, encrypted disks, Xen leftovers in module configuration, NIC rules and network settings.
BOOT_PATH_FILES = (
    "/etc/fstab", "/etc/crypttab", "/etc/modprobe.conf", "/etc/modprobe.d/*.conf", "/etc/udev/rules.d/*.rules",
    "/etc/sysconfig/network-scripts/ifcfg-*", "/etc/sysconfig/network/ifcfg-*", "/etc/netplan/*.yaml",
    "/etc/NetworkManager/system-connections/*", "/etc/systemd/network/*.network", "/etc/systemd/network/*.link",
    "/etc/network/interfaces", "/etc/network/interfaces.d/*",
)  # fmt: skip
# udev rules that write persistent-net rules for new NICs (the old generator).
NET_GENERATORS = ("/lib/udev/rules.d/75-persistent-net-generator.rules",
                  "/usr/lib/udev/rules.d/75-persistent-net-generator.rules",
                  "/etc/udev/rules.d/75-persistent-net-generator.rules")  # fmt: skip
# Every file gather.sh sends whole ("@@KVM file"), in the order it sends them; "*" is one path
# component (gather.sh: a shell pattern; here: NAME).
DUMPED = (
    *RELEASE_FILES, "/etc/lsb-release", "/etc/debian_version",
    "/etc/initramfs-tools/modules", "/etc/initramfs-tools/initramfs.conf", "/etc/dracut.conf",
    "/etc/sysconfig/kernel", "/etc/sysconfig/bootloader", "/etc/default/grub",
    *GRUB_FILES, *OTHER_LOADERS, "/boot/grub/menu.lst", "/boot/grub/grub.conf", "/boot/grub/default",
    "/etc/dracut.conf.d/*.conf", "/usr/lib/dracut/dracut.conf.d/*.conf",
    "/boot/loader/entries/*.conf", "/boot/efi/EFI/*/grub.cfg", *BOOT_PATH_FILES, "/etc/selinux/config",
)  # fmt: skip
DUMPED_FILES = re.compile("^(?:" + "|".join(re.escape(f).replace(r"\*", NAME) for f in DUMPED) + ")$")
# The modprobe.d directories, first the one whose files override same-named files of the others
# (kmod's order; module-init-tools reads them too); the single files module-init-tools (and SUSE,
# the .local one) reads besides.
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")  # fmt: skip
MODPROBE_CONFS = ("/etc/modprobe.conf", "/etc/modprobe.conf.local")
_DIRS = "|".join(re.escape(d.lstrip("/")) for d in MODPROBE_DIRS)
_CONFS = "|".join(re.escape(c.lstrip("/")) for c in MODPROBE_CONFS)
MODPROBE_FILE = re.compile(f"^/(?:(?:{_DIRS})/{NAME}|(?:{_CONFS}))$")
# The same files inside an initrd (paths as its listing shows them).
INITRD_CONF_FILE = re.compile(f"^(?:(?:{_DIRS})/{NAME}|(?:{_CONFS}))$")
# First bytes of the formats an initrd comes in (hex): cpio (newc, crc; early microcode too), gzip,
# xz, zstd, lz4 (legacy and frame), bzip2, lzop, lzma. gather.sh sends the first MAGIC_BYTES bytes.
INITRD_MAGIC = ("303730373031", "303730373032", "1f8b", "fd377a585a00", "28b52ffd", "02214c18", "04224d18",
                "425a68", "894c5a4f", "5d0000")  # fmt: skip
MAGIC_BYTES = max(len(m) for m in INITRD_MAGIC) // 2
FINGERPRINT_MAX = 32768  # gather.sh sends none longer: it is sent back with the next command


def _shell_constants() -> str:
    """The lists and limits above, as the shell assignments the scripts read (KVM_*)."""
    values = {
        "KVM_DUMPS": " ".join(DUMPED),
        "KVM_MODPROBE_DIRS": " ".join(MODPROBE_DIRS),
        "KVM_MODPROBE_CONFS": " ".join(MODPROBE_CONFS),
        "KVM_DECLARATIONS": " ".join(CONFIG_PATHS.values()),
        "KVM_MAGIC_BYTES": str(MAGIC_BYTES),
        "KVM_FP_MAX": str(FINGERPRINT_MAX),
        "KVM_NETGEN": " ".join(NET_GENERATORS),
    }
    for name, value in values.items():  # words of plain names: also put inside awk programs (lib.sh)
        assert re.match(r"^[A-Za-z0-9._@+,:=~/* -]*$", value), (name, value)
    for f in DUMPED:  # absolute; gather.sh's kvm_glob takes one component with a "*" at most
        assert f.startswith("/") and sum("*" in c for c in f.split("/")) <= 1, f
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


SHELL_CONSTANTS = _shell_constants()


# --- the scripts ------------------------------------------------------------------------------


def _compact(script: str) -> str:
    """The script without its comment lines, blank lines and indentation: it travels to every host
    each run (no quoted text in gather.sh or lib.sh spans lines with meaningful leading blanks).
    """
    lines = script.splitlines(keepends=True)
    return "".join(ln.lstrip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))


def _with_lib(name: str, *parts: str) -> str:
    return SHELL_CONSTANTS + "".join((HERE / f).read_text() for f in ("lib.sh", *parts, name))


LIB = SHELL_CONSTANTS + (HERE / "lib.sh").read_text() + (HERE / "lock.sh").read_text()  # every shell function
GATHER = _compact(_with_lib("gather.sh", "root.sh", "live.sh"))  # read-only: no lock functions
# gather.sh's functions without its last line (the call of gather_main): for running them one by one.
GATHER_FUNCTIONS = GATHER[: GATHER.rstrip("\n").rindex("\n") + 1]
assert GATHER[len(GATHER_FUNCTIONS) :].startswith("gather_main "), "gather.sh must end with the call of gather_main"
REBUILD = _with_lib("rebuild.sh", "lock.sh")
WRITE = _with_lib("write.sh", "lock.sh")
UNBLACKLIST = _with_lib("unblacklist.sh", "lock.sh")
ASIDE = _with_lib("aside.sh", "lock.sh")
EFI_COPY = _with_lib("efi_copy.sh", "lock.sh")
VERIFY_UUID = _with_lib("verify_uuid.sh", "lock.sh")
REGEN = _with_lib("regen.sh", "lock.sh")
ROLLBACK = _with_lib("rollback.sh", "lock.sh")
LISTER = (HERE / "initrd_ls.py").read_text()
# Cached gather output is only reused with the script that produced it.
SCRIPT_VERSION = hashlib.sha256((GATHER + LISTER).encode()).hexdigest()[:16]
