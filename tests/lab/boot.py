"""Boot a lab host in QEMU as a KVM cloud would, through its real bootloader.

Firmware (SeaBIOS, or OVMF for UEFI) starts real GRUB 2 (Debian's), GRUB reads the host's own
grub.cfg and grubenv (``configfile``), or its GRUB legacy menu.lst (``legacy_configfile``),
picks the default entry itself and loads that entry's kernel and initrd from the host's disk
on virtio-blk. Nothing here decides what to boot: no parser of ours is consulted.

The disk is a copy of the host's tree (``mkfs.ext4 -d``, partitioned as the host's layout
needs) in which the root's init (``/sbin/init``, and systemd's binary that dracut's systemd
re-executes on switch-root) is the probe: in the copy only, never in the host. The probe
writes what it saw to ``/probe-result`` in the image, syncs and powers off; the result is read
back with ``debugfs`` after QEMU exits. A boot that never reaches the root file system leaves
no file. The NIC is attached to an empty hub: the guest has a virtio-net device but no network.

GRUB's own serial output tells which entry it booted (``Booting `TITLE'``) and, with
``debug=linux``, the size of the initrd it loaded; the size is matched against the files in
the host's /boot to name the initrd.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.bases import BOOT_UUID, CACHE, ROOT_UUID, log, run
from tests.lab.hosts import STATE, HostSpec, root
from tests.lab.variants import DATA_UUID, SWAP_UUID

TIMEOUT = int(os.environ.get("KVM_LAB_BOOT_TIMEOUT", "480"))
ESP_ID = "4B5D1E2F"
GRUB_PC = Path("/usr/lib/grub/i386-pc")  # Debian's grub-pc-bin (GRUB 2.06 on Debian 12)
OVMF = Path("/usr/share/ovmf/OVMF.fd")
MiB = 1 << 20
GPT_ESP, GPT_LINUX = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
OS_RELEASE_STUB = Path(__file__).with_name("os-release.lab-disk-copy")

# Where a GRUB core would find its directory: grub-install bakes the prefix into core.img;
# the rescue image plays that part by looking for the disk's GRUB directory in this order.
GRUB_DIRS = ["/boot/grub2", "/grub2", "/boot/grub", "/grub", "/@/boot/grub", "/@/boot/grub2"]
PRELOAD = (
    "part_msdos part_gpt ext2 btrfs xfs fat search search_fs_uuid search_fs_file search_label test echo"
    " configfile normal loadenv linux linux16 gzio xzio lzopio zstd legacycfg blsuki sleep true cat ls"
    " regexp halt reboot minicmd serial terminal probe all_video video gfxterm"
).split()

PROBE = r"""#!/bin/sh
# kvm-drivers lab probe: /sbin/init of the DISK-IMAGE COPY only (never of the host). Writes what
# it sees to /probe-result in the image, syncs and powers off.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -o remount,rw / 2>/dev/null
{
echo "root: $(awk '$2 == "/" {print $1, $3}' /proc/mounts | tail -n 1)"
r=$(readlink -f "$(awk '$2 == "/" {print $1}' /proc/mounts | tail -n 1)")
echo "root-under: $(ls "/sys/class/block/${r##*/}/slaves" 2>/dev/null | tr '\n' ' ')"
echo "kernel: $(uname -r)"
echo "cmdline: $(cat /proc/cmdline)"
echo "initrd-freed: $(dmesg 2>/dev/null | sed -n 's/.*Freeing initrd memory: \([0-9]*\)K.*/\1/p' | head -n 1)"
echo "virtio-drivers: $(ls /sys/bus/virtio/drivers 2>/dev/null | tr '\n' ' ')"
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/driver" ] && echo "bound: ${d##*/} $(basename "$(readlink "$d/driver")")"
done
# the names udev gives the NICs (issue 20), on hosts whose tree asks for it (tests/lab/variants.py UDEV_MARK)
if [ -e /etc/kvm-lab/udev ]; then
    mount -t tmpfs run /run 2>/dev/null
    /lib/systemd/systemd-udevd --daemon 2>/dev/null
    udevadm trigger --type=devices --action=add 2>/dev/null
    udevadm settle --timeout=60 2>/dev/null
    echo "nics: $(cd /sys/class/net && for n in *; do [ "$n" = lo ] || printf '%s=%s ' "$n" "$(cat "$n/address")"
                 done)"
    udevadm control --exit 2>/dev/null
fi
# every fstab entry the boot would mount, by the real mount (issue 20: fstab is on the boot path)
if m=$(mount -a 2>&1); then echo "fstab: mounted"; else echo "fstab: FAILED $(echo $m)"; fi
echo "done"
} > /probe-result 2>&1
sed 's/^/KVM-PROBE /' /probe-result
sync
mount -o remount,ro / 2>/dev/null
sync
echo o > /proc/sysrq-trigger
sleep 30
"""

# Console lines after which a boot cannot succeed any more: stop waiting. dracut's first word on a root
# device that never came: its initqueue has waited two thirds of rd.retry (default 180 s; its loop runs
# 2 x rd.retry times, 0.5 s each) and starts its "timeout" hooks, the fallbacks for RAID and LVM roots.
# It gives up ("Could not boot") after the last third, minutes later under emulation, and would print
# nothing else meanwhile: a root device with no driver in the initrd does not appear in that last third.
FAILED = re.compile(
    r"ALERT! .* does not exist|Dropping to a shell|Could not boot|emergency mode|Kernel panic"
    r"|Press any key to continue|KVM-GRUB no bootloader configuration|dracut-initqueue: starting timeout scripts"
    r'|BdsDxe: failed to load Boot\d+ "UEFI Misc Device"'  # OVMF: nothing to boot on the (virtio) disk
    r"|Job dev-\S+\.device/start running \(\d+min[^/)]*/ no limit\)"  # systemd's initrd waits for ever (resume=)
)
# What a boot shows when its root disk never came (no driver for it in the initrd): initramfs-tools'
# ALERT!, dracut's timeout scripts or systemd's device timeout.
NO_ROOT = re.compile(r"ALERT! .* does not exist|dracut-initqueue: starting timeout scripts"
                     r"|Timed out waiting for device")
FAILED_GRACE = 3.0  # seconds of console kept after such a line (the lines that say why), then QEMU is killed

# GRUB's menu counting down to the entry it boots (its default, highlighted). The lab presses Enter then:
# GRUB boots the highlighted entry at once, the entry the countdown ends in (grub-core/normal/menu.c:
# run_menu starts on the default entry and returns it for Enter as for the timeout), without emulating
# seconds of GRUB polling its keyboard. One difference: an entry chosen with Enter that fails to load
# does not fall back to the entries of GRUB's `fallback` variable, so a host whose GRUB files mention
# `fallback` is left to count down. A hidden or countdown-only timeout prints no menu: nothing is pressed.
COUNTDOWN = re.compile(r"will be executed automatically in")
# A key pressed in GRUB's menu unsets its `timeout` (menu.c run_menu), so a submenu entered with Enter
# (a default such as "1" or "1>2" that names a submenu) would wait for a key for ever: a menu drawn
# after the lab's Enter (its footer) gets Enter too, on its highlighted entry, the one GRUB's own
# countdown would have booted there (the rest of the default, else the first). At most MAX_PRESSES.
MENU_FOOTER = re.compile(r"Use the .{1,12} keys to select which entry is highlighted")
MAX_PRESSES = 4

# The emulated kernel's timer check failing under load (TCG on a busy 2-core machine): an artefact of
# the emulator, decided before the kernel reads any disk. Such a boot is started again once, on the
# same disk image (untouched: the kernel stopped before it mounted anything), and says so.
EMULATOR_PANIC = re.compile(r"Kernel panic - not syncing: IO-APIC \+ timer doesn't work")


@dataclass
class BootResult:
    """What a QEMU boot through GRUB showed."""

    host: str
    loader: str  # the boot path: GRUB BIOS, GRUB UEFI, legacy_configfile, model
    seconds: float
    entry: str = ""  # GRUB's "Booting `TITLE'" lines, joined with '>' (submenus)
    grub_initrd_size: int | None = None  # bytes, from GRUB's debug=linux output (None: not seen)
    initrd: str = ""  # /boot files whose size is what GRUB loaded ('' if it loaded none)
    kernel: str = ""  # uname -r, from the probe ('' if root was never reached)
    cmdline: str = ""  # /proc/cmdline, from the probe
    root: str = ""  # root device and fs type as the probe saw them ('' if never reached)
    under: list[str] = field(default_factory=list)  # the devices under a device-mapper root (LVM: its PVs)
    bound: dict[str, str] = field(default_factory=dict)  # virtio device -> driver
    fstab: str = ""  # "mounted", or "FAILED <mount -a's words>" (the probe mounts every fstab entry)
    nics: dict[str, str] = field(default_factory=dict)  # NIC name -> MAC, as udev left them (UDEV_MARK hosts only)
    log: str = ""

    @property
    def boot_image(self) -> str:
        """BOOT_IMAGE= of the kernel command line: the kernel path as GRUB's entry names it."""
        m = re.search(r"BOOT_IMAGE=(\S+)", self.cmdline)
        return m.group(1) if m else ""

    @property
    def ok(self) -> bool:
        """Root mounted from the virtio disk, virtio_blk bound to it, and every fstab entry mounted
        (``mount -a``). Without an initrd the kernel itself mounts root=/dev/vda, and calls it /dev/root.
        A root on LVM is a device-mapper device over partitions of the virtio disk."""
        on_vda = self.root.startswith(("/dev/vda", "/dev/root ")) or (
            self.root.startswith(("/dev/mapper/", "/dev/dm-")) and bool(self.under)
            and all(u.startswith("vda") for u in self.under))  # fmt: skip
        return on_vda and "virtio_blk" in self.bound.values() and self.fstab == "mounted"

    @property
    def cause(self) -> str:
        """The console line that shows why a boot failed ('' if none was seen)."""
        lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", ln).strip() for ln in self.log.splitlines()]
        # not causes: the rescue CD's own search for a /boot partition, and a host config's insmod
        # of a module that GRUB has built in or lacks (e.g. RHEL's blscfg, increment)
        lines = [ln for ln in lines if BOOT_UUID not in ln and not re.search(r"\.mod' not found", ln)]
        if self.fstab.startswith("FAILED"):
            return f"fstab: {self.fstab}"
        for pattern in (r"ALERT!", r"Timed out waiting|Could not boot|emergency mode", FAILED.pattern,
                        r"\berror: |Gave up|rdsosreport|time limit"):  # fmt: skip
            for line in lines:
                if re.search(pattern, line):
                    return line
        return ""

    def summary(self) -> str:
        """One line for people."""
        what = f"GRUB entry `{self.entry or '?'}', initrd {self.initrd or 'none'}"
        if self.ok:
            return (
                f"{self.host} [{self.loader}]: BOOTED {what}, kernel {self.kernel} ({self.boot_image})"
                f" in {self.seconds:.0f}s; root {self.root}; bound: {' '.join(sorted(set(self.bound.values())))}"
            )
        return f"{self.host} [{self.loader}]: FAILED {what} in {self.seconds:.0f}s: {self.cause or 'no probe result'}"


def grub_script(efi: bool = False) -> str:
    """GRUB commands that find the disk's GRUB directory and hand over to the host's own config.

    They play core.img's part (grub-install bakes the prefix in): prefix is set to the host's
    GRUB directory so that the host's ``load_env`` reads ITS grubenv. The host's config then
    decides everything. ``debug=linux`` makes GRUB print the size of the initrd it loads; the
    timeout exported here only applies where the host's config sets none.
    """
    dirs = " ".join(GRUB_DIRS)
    serial = "" if efi else (
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
    )
    return f"""{serial}set debug=linux
export debug
set timeout=3
export timeout
if search --no-floppy --fs-uuid --set=root {BOOT_UUID}; then true
else search --no-floppy --fs-uuid --set=root {ROOT_UUID}; fi
set kvm_dir=""
for d in {dirs}; do
  if [ -z "$kvm_dir" -a -f "($root)$d/grub.cfg" ]; then set kvm_dir="$d"; fi
done
if [ -n "$kvm_dir" ]; then
  set prefix="($root)$kvm_dir"
  echo "KVM-GRUB configfile $prefix/grub.cfg"
  configfile "$prefix/grub.cfg"
elif [ -f "($root)/boot/grub/menu.lst" ]; then
  set prefix="($root)/boot/grub"
  echo "KVM-GRUB legacy_configfile $prefix/menu.lst"
  legacy_configfile "$prefix/menu.lst"
fi
echo "KVM-GRUB no bootloader configuration found on ($root)"
sleep 5
"""


def grub_dir(version: str) -> Path:
    """The i386-pc module directory of a GRUB: Debian 12's, or Debian's 2.14 (for blscfg)."""
    if version == "2.06":
        return GRUB_PC
    return grub214()


def grub214() -> Path:
    """GRUB 2.14's i386-pc directory from Debian's grub-pc-bin (unstable): the first Debian GRUB
    with a ``blscfg`` command (module blsuki). Fetched once with apt-get into the lab cache;
    Debian 12's grub-mkrescue builds the image from its modules."""
    target = CACHE / "grub-2.14" / "usr/lib/grub/i386-pc"
    if (target / "blsuki.mod").exists():
        return target
    work = CACHE / "grub-2.14.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "lists/partial").mkdir(parents=True)
    (work / "archives/partial").mkdir(parents=True)
    mirror = os.environ.get("KVM_LAB_MIRROR", "http://deb.debian.org/debian")
    (work / "sources.list").write_text(f"deb {mirror} unstable main\n")
    opts = [f"-oDir::Etc::SourceList={work}/sources.list", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={work}/lists", f"-oDir::Cache={work}", "-oDir::State::status=/dev/null",
            "-oAPT::Sandbox::User=root"]  # fmt: skip
    log("GRUB 2.14 (Debian unstable's grub-pc-bin, for blscfg): apt-get download")
    run(["apt-get", *opts, "update", "-qq"])
    run(["apt-get", *opts, "download", "grub-pc-bin"], cwd=work)
    deb = next(work.glob("grub-pc-bin_*.deb"))
    run(["dpkg-deb", "-x", str(deb), str(work / "x")])
    if not (work / "x/usr/lib/grub/i386-pc/blsuki.mod").exists():
        raise RuntimeError(f"{deb.name} has no blsuki.mod (blscfg)")
    shutil.rmtree(CACHE / "grub-2.14", ignore_errors=True)
    (work / "x").rename(CACHE / "grub-2.14")
    shutil.rmtree(work, ignore_errors=True)
    return target


def rescue_iso(version: str) -> Path:
    """A GRUB rescue CD (grub-mkrescue) whose config is grub_script(); cached by content."""
    modules = grub_dir(version)
    preload = [m for m in PRELOAD if (modules / f"{m}.mod").exists()]
    cfg = "".join(f"insmod {m}\n" for m in preload) + grub_script()
    key = hashlib.sha256(f"{version}\n{cfg}".encode()).hexdigest()[:12]
    iso = CACHE / f"grub-rescue-{version}-{key}.iso"
    if iso.exists():
        return iso
    with tempfile.TemporaryDirectory() as tmp:  # two boots may make it at once: each its own temporary file
        (Path(tmp) / "boot/grub").mkdir(parents=True)
        (Path(tmp) / "boot/grub/grub.cfg").write_text(cfg)
        part = Path(f"{iso}.{os.getpid()}.{threading.get_ident()}")
        run(["grub-mkrescue", "-d", str(modules), "-o", str(part), tmp])
        part.rename(iso)
    return iso


def inside(tree: Path, path: str) -> str:
    """path with the symlinks of its directories resolved inside tree (e.g. /sbin -> usr/sbin)."""
    parent = (tree / path.lstrip("/")).parent.resolve()
    if parent != tree.resolve() and tree.resolve() not in parent.parents:
        parent = tree.resolve() / str(parent).lstrip("/")  # an absolute link: resolve it in the tree
    return "/" + str(parent.relative_to(tree.resolve()) / Path(path).name).lstrip("/")


def mkfs_ext4(src: Path, image: Path, offset: int, size: int, uuid: str) -> None:
    """An ext4 file system holding src's tree, at offset bytes into image."""
    run(["mkfs.ext4", "-q", "-F", "-U", uuid, "-E", f"offset={offset}", "-d", str(src), str(image), f"{size // 1024}k"])


# The root's init: /sbin/init (run-init of initramfs-tools execs it), and systemd's own binary,
# which dracut's systemd re-executes from the new root on switch-root (no init= on the command line).
INITS = ["/sbin/init", "/lib/systemd/systemd"]


def put_probe(image: str, tree: Path) -> None:
    """Replace the root's init (INITS) in the ext4 file system image (path?offset=N) by the probe."""
    with tempfile.NamedTemporaryFile("w", suffix=".probe", delete=False) as f:
        f.write(PROBE)
    os.chmod(f.name, 0o755)
    script = ""
    for init in INITS:
        if (tree / init.lstrip("/")).exists() or (tree / init.lstrip("/")).is_symlink():
            folder, name = inside(tree, init).rsplit("/", 1)
            script += f"cd {folder or '/'}\nrm {name}\nwrite {f.name} {name}\n"
    if not any((tree / p).exists() for p in ("etc/os-release", "usr/lib/os-release", "etc/initrd-release")):
        # Lab artifact: the lab's dracut is Debian's, with systemd, whose switch-root refuses a root
        # without os-release (a real CentOS 6's dracut has no systemd). The DISK COPY gets one.
        script += f"cd /usr/lib\nwrite {OS_RELEASE_STUB} os-release\n"
    try:
        run(["debugfs", "-w", "-f", "-", image], input=script)
    finally:
        os.unlink(f.name)


def partition(image: Path, parts: list[tuple[int, int, str]], label: str = "dos") -> None:
    """Write a partition table: (offset, size, type) per partition, in bytes."""
    lines = [f"label: {label}"] + [f"start={o // 512}, size={s // 512}, type={t}" for o, s, t in parts]
    run(["sfdisk", "-q", "--wipe", "never", "--wipe-partitions", "never", str(image)], input="\n".join(lines) + "\n")


@dataclass
class Disk:
    """A host's boot disk image, and where its root file system is (for reading the probe back)."""

    image: Path
    probe_fs: str  # debugfs device spec of the root fs ('' for btrfs: read through a loop mount)
    extra: list[Path] = field(default_factory=list)


def make_disk(h: HostSpec, tree: Path, image: Path, probe: bool = True) -> Disk:
    """Write the host's tree as its boot disk (layout h.disk) with the probe as /sbin/init (probe=False:
    the tree's own init, e.g. for a disk image an initrd is rebuilt in: ``put_probe`` before booting it).

    whole: one unpartitioned ext4 (/dev/vda). split: MBR, partition 1 /boot (its own ext4, as
    RHEL installs it), partition 2 root. part: MBR, partition 1 root (GRUB legacy's (hd0,0)).
    esp: MBR, partition 1 an EFI system partition, partition 2 root (gpt-esp: the same on GPT). btrfs: one btrfs whose
    top level holds the tree in subvolume @ (Ubuntu's layout). lvm: MBR, partition 1 /boot, partition 2 an LVM
    physical volume whose volume vgkvm/root holds the tree (RHEL's and EulerOS's layout; ``make_lvm``).
    """
    image.unlink(missing_ok=True)
    root_size = 4 << 30
    if h.disk == "whole":
        mkfs_ext4(tree, image, 0, root_size, ROOT_UUID)
        spec = str(image)
    elif h.disk == "split":
        boot_size = 1 << 30
        mkfs_ext4(tree / "boot", image, MiB, boot_size, BOOT_UUID)
        mkfs_ext4(tree, image, MiB + boot_size, root_size, ROOT_UUID)
        parts = [(MiB, boot_size, "83"), (MiB + boot_size, root_size, "83")]
        if wants_swap(tree):  # partition 3: the swap partition the tree's fstab names (SWAP_UUID)
            at = MiB + boot_size + root_size
            swap = image.with_suffix(".swap")
            run(["truncate", "-s", str(SWAP_SIZE), str(swap)])
            run(["mkswap", "-q", "-U", SWAP_UUID, str(swap)])
            run(["dd", f"if={swap}", f"of={image}", "bs=1M", f"seek={at // MiB}", "conv=notrunc,sparse", "status=none"])
            swap.unlink()
            parts.append((at, SWAP_SIZE, "82"))
        partition(image, parts)
        spec = f"{image}?offset={MiB + boot_size}"
    elif h.disk == "part":
        mkfs_ext4(tree, image, MiB, root_size, ROOT_UUID)
        partition(image, [(MiB, root_size, "83")])
        spec = f"{image}?offset={MiB}"
    elif h.disk in ("esp", "gpt-esp"):
        esp_size = 64 * MiB
        mkfs_ext4(tree, image, MiB + esp_size, root_size, ROOT_UUID)
        esp = image.with_suffix(".esp")
        make_esp(esp, esp_size, tree)
        run(["dd", f"if={esp}", f"of={image}", "bs=1M", f"seek={MiB // MiB}", "conv=notrunc,sparse", "status=none"])
        esp.unlink()
        if h.disk == "esp":
            partition(image, [(MiB, esp_size, "ef"), (MiB + esp_size, root_size, "83")])
        else:  # GPT, as UEFI installers make it (its backup table after the root)
            run(["truncate", "-s", str(MiB + esp_size + root_size + MiB), str(image)])
            partition(image, [(MiB, esp_size, GPT_ESP), (MiB + esp_size, root_size, GPT_LINUX)], label="gpt")
        spec = f"{image}?offset={MiB + esp_size}"
    elif h.disk == "lvm":  # RHEL's layout: partition 1 /boot, partition 2 an LVM PV, "/" in volume vgkvm/root
        boot_size, pv_size = 1 << 30, root_size + 8 * MiB
        mkfs_ext4(tree / "boot", image, MiB, boot_size, BOOT_UUID)
        run(["truncate", "-s", str(MiB + boot_size + pv_size), str(image)])
        partition(image, [(MiB, boot_size, "83"), (MiB + boot_size, pv_size, "8e")])
        at = MiB + boot_size + make_lvm(image, MiB + boot_size, pv_size, root_size)
        mkfs_ext4(tree, image, at, root_size, ROOT_UUID)
        spec = f"{image}?offset={at}"
    elif h.disk == "btrfs":
        make_btrfs(tree, image, root_size)
        return Disk(image, "")
    else:
        raise ValueError(f"{h.name}: unknown disk layout {h.disk!r}")
    if probe:
        put_probe(spec, tree)
    return Disk(image, spec)


LVM_VG = "vgkvm"


def make_lvm(image: Path, offset: int, size: int, lv_size: int) -> int:
    """An LVM physical volume at offset in image, with volume group LVM_VG and its volume root of lv_size,
    made by lvm2 itself on a loop device with activation off (this machine has no device-mapper; nothing
    is activated, nothing of this machine's LVM is looked at). Returns where root starts in the PV, as
    lvm2 reports it."""
    loop = run(["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), str(image)])
    dev = loop.stdout.strip()
    config = (f'devices {{ filter = [ "a|^{dev}$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }}'
              " global { activation = 0 } backup { backup = 0 archive = 0 }")  # fmt: skip
    try:
        run(["pvcreate", "-q", "--config", config, dev])
        run(["vgcreate", "-q", "--config", config, LVM_VG, dev])
        run(["lvcreate", "-q", "--config", config, "-an", "-Zn", "-L", f"{lv_size // MiB}m", "-n", "root", LVM_VG])
        pe = run(["lvs", "--config", config, "--noheadings", "-o", "seg_pe_ranges", f"{LVM_VG}/root"]).stdout
        starts = run(["pvs", "--config", config, "--noheadings", "--units", "b", "-o", "pe_start,vg_extent_size",
                      dev]).stdout.split()  # fmt: skip
    finally:
        run(["losetup", "-d", dev])
    first = int(pe.strip().rsplit(":", 1)[1].split("-")[0])
    return int(starts[0].rstrip("B")) + first * int(starts[1].rstrip("B"))


def make_esp(esp: Path, size: int, tree: Path) -> None:
    """The EFI system partition holding what the host has on /boot/efi (its ESP's mount point, e.g.
    Debian's EFI/debian/ and EFI/BOOT/, tests/lab/variants.py debian_uefi): FAT, written with mtools."""
    run(["mkfs.vfat", "-C", "-i", ESP_ID, "-n", "EFI", str(esp), str(size // 1024)])
    content = tree / "boot/efi"
    if content.is_dir() and not content.is_symlink() and any(content.iterdir()):
        run(["mcopy", "-s", "-i", str(esp), *(str(p) for p in sorted(content.iterdir())), "::/"])


@contextlib.contextmanager
def btrfs_lock() -> Iterator[None]:
    """Held while a btrfs with the lab's fixed UUID is made or mounted on this machine: mkfs.btrfs refuses
    a UUID a block device here already carries, so test workers must not overlap there."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "btrfs.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def make_btrfs(tree: Path, image: Path, size: int) -> None:
    """A btrfs image whose subvolume @ holds the tree (GRUB sees /@/boot/..., Linux mounts @)."""
    with btrfs_lock():
        _make_btrfs(tree, image, size)


def _make_btrfs(tree: Path, image: Path, size: int) -> None:
    run(["truncate", "-s", str(size), str(image)])
    # mkfs.btrfs refuses a UUID that any block device here carries, and libblkid probes every device
    # it finds (/proc/partitions, else /sys/block, and its cache) to know: a loop device of an image
    # check still being torn down made CI fail here. The image file is not this machine's disk: its
    # mkfs runs in a mount namespace of its own that shows it no block device.
    hide = "mount --bind /dev/null /proc/partitions && mount -t tmpfs none /sys"
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{hide} && exec mkfs.btrfs -q -f -U "$0" "$1"',
         ROOT_UUID, str(image)], env={**os.environ, "BLKID_FILE": "/dev/null"})  # fmt: skip
    with tempfile.TemporaryDirectory(dir=image.parent) as mnt:
        run(["mount", "-o", "loop", str(image), mnt])
        try:
            run(["btrfs", "subvolume", "create", f"{mnt}/@"])
            run(["cp", "-a", f"{tree}/.", f"{mnt}/@/"])
            for path in INITS:
                if (tree / path.lstrip("/")).exists():
                    init = Path(mnt) / "@" / inside(tree, path).lstrip("/")
                    init.unlink(missing_ok=True)
                    init.write_text(PROBE)
                    init.chmod(0o755)
        finally:
            run(["umount", mnt])


def read_probe(disk: Disk) -> str:
    """The probe's /probe-result from the disk image ('' if the boot never wrote it)."""
    if disk.probe_fs:
        proc = subprocess.run(["debugfs", "-R", "cat /probe-result", disk.probe_fs], capture_output=True, text=True)
        return proc.stdout
    with btrfs_lock(), tempfile.TemporaryDirectory(dir=disk.image.parent) as mnt:
        run(["mount", "-o", "loop,ro,subvol=@", str(disk.image), mnt])
        try:
            p = Path(mnt) / "probe-result"
            return p.read_text() if p.exists() else ""
        finally:
            run(["umount", mnt])


def boot_files(tree: Path) -> dict[str, int]:
    """Size of every file under the host's /boot (to name the initrd GRUB loaded)."""
    return {"/" + str(p.relative_to(tree)): p.stat().st_size for p in (tree / "boot").rglob("*") if p.is_file()}


def fingerprint(h: HostSpec) -> str:
    """sha256 of everything a boot reads before the root file system: the boot path, the disk
    layout and every file under /boot. Two hosts with the same fingerprint boot alike up to the
    point where the initrd looks for the root disk."""
    tree = root(h.name)
    digest = hashlib.sha256(f"{h.loader}\n{h.disk}\n".encode())
    for p in sorted((tree / "boot").rglob("*")):
        digest.update(str(p.relative_to(tree)).encode())
        if p.is_symlink():
            digest.update(os.readlink(p).encode())
        elif p.is_file():
            digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


LOADERS = {"bios": "GRUB BIOS", "uefi": "GRUB UEFI", "legacy": "legacy_configfile", "bls": "GRUB BIOS (2.14 blscfg)",
           "model": "model"}  # fmt: skip


# The busy part of a boot: SeaBIOS or OVMF, GRUB, and the kernel's start keep one emulated core
# fully busy (about 20 s of CPU under TCG). A boot starts only once it holds one of BUSY_SLOTS slots,
# machine-wide (file locks: both pytest workers share them), and gives it back once its QEMU has spent
# BUSY_CPU seconds of CPU, is idle, has ended, or BUSY_MAX seconds have passed. Idle: its threads ran
# or waited to run (schedstat) under IDLE_SHARE of IDLE_WINDOW seconds; a guest starved of CPU waits
# to run, and is not idle. Started all at once instead, 25 boots beside the deploy each had some 7 %
# of a core: their kernels stayed silent for the whole time limit and never reached the failure they
# were to show.
BUSY_SLOTS = int(os.environ.get("KVM_LAB_BUSY_SLOTS", "2"))
BUSY_CPU, BUSY_MAX = 20.0, 180.0
IDLE_WINDOW, IDLE_SHARE = 4.0, 0.1


def demand(pid: int) -> tuple[float, float]:
    """Seconds process pid's threads have run, and have run or waited to run (/proc/PID/task/*/schedstat)."""
    ran = wanted = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns, wait_ns = map(int, (task / "schedstat").read_text().split()[:2])
        except (OSError, ValueError):
            continue  # a thread that just ended
        ran, wanted = ran + run_ns, wanted + run_ns + wait_ns
    return ran / 1e9, wanted / 1e9


class BusySlot:
    """One of BUSY_SLOTS machine-wide slots, held by one QEMU in its busy part (see above)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.lock = threading.Lock()

    def acquire(self, cancelled: threading.Event) -> bool:
        """Wait for a free slot (False: cancelled meanwhile)."""
        directory = STATE / "busy-slots"
        directory.mkdir(parents=True, exist_ok=True)
        while not cancelled.is_set():
            for n in range(BUSY_SLOTS):
                fd = os.open(directory / f"slot{n}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.fd = fd
                return True
            cancelled.wait(0.5)
        return False

    def release(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def hold_while_busy(self, pid: int) -> None:
        """Give the slot back once process pid has spent BUSY_CPU, is idle or gone, or at BUSY_MAX."""
        start, samples = time.monotonic(), []
        while self.fd is not None and time.monotonic() - start < BUSY_MAX:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # ended (not reaped yet)
                ran, wanted = demand(pid)
            except (OSError, IndexError):
                break  # gone
            now = time.monotonic()
            samples = [(t, w) for t, w in samples if now - t <= IDLE_WINDOW] + [(now, wanted)]
            t0, w0 = samples[0]
            if ran >= BUSY_CPU or (now - t0 >= IDLE_WINDOW - 1 and (wanted - w0) / (now - t0) < IDLE_SHARE):
                break
            time.sleep(1.0)
        self.release()


@dataclass
class Launched:
    """A QEMU boot under way. It runs on a private disk image, so the host may change (e.g. be
    deployed to) while it runs."""

    host: HostSpec
    disk: Disk
    files: dict[str, int]
    proc: subprocess.Popen
    start: float
    timeout: int
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    ended: float | None = None  # when QEMU's console closed (the boot's own duration ends there)
    cmd: list[str] = field(default_factory=list)  # the QEMU command line, to start it again
    restarted: bool = False  # started again after EMULATOR_PANIC
    log_name: str = "boot.log"  # its console is kept in STATE/hosts/HOST/log_name
    timed_out: bool = False  # killed at its time limit
    enter: bool = True  # press Enter at GRUB's countdown (COUNTDOWN)
    watchdog: threading.Timer | None = None  # kills it at its time limit, whether anyone waits for it yet or not
    slot: BusySlot = field(default_factory=BusySlot)  # held while the boot is busy (BUSY_SLOTS)
    cancelled: threading.Event = field(default_factory=threading.Event)  # kill(): never start
    starter: threading.Thread | None = None  # start_soon()'s

    def _start(self) -> None:
        """Start QEMU once a busy slot is free (at once with none in use); its time limit runs from then."""
        if not self.slot.acquire(self.cancelled):
            return
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self.slot.hold_while_busy, args=(self.proc.pid,), daemon=True).start()
        self.start = time.monotonic()
        self.timed_out = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.watchdog = threading.Timer(self.timeout, self._time_limit)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _time_limit(self) -> None:
        if self.proc.poll() is None:
            self.timed_out = True
            self.proc.kill()

    def _read(self) -> None:
        """Collect the serial console as it comes (GRUB's menu ends no line while it counts down). Press
        Enter when GRUB's menu counts down (COUNTDOWN); stop QEMU shortly after a line that ends all hope."""
        assert self.proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        line, failed, pressed = "", False, 0  # line: the unfinished line (QEMU sends a byte at a time)
        since = ""  # the console since the last Enter: a menu drawn there gets Enter too (MENU_FOOTER)
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            text = decoder.decode(chunk)
            self.output.append(text)
            if pressed and pressed < MAX_PRESSES:
                since = (since + text)[-8192:]
                if MENU_FOOTER.search(since):
                    pressed, since = pressed + 1, ""
                    self._press_enter()
            pieces = text.split("\n")
            finished = [line + pieces[0], *pieces[1:-1]] if len(pieces) > 1 else []
            line = (pieces[-1] if finished else line + text)[-4096:]  # GRUB redraws its menu on one line
            for one in (*finished, line[-(len(text) + 100):]):  # on the unfinished line: around the new text
                if not failed and FAILED.search(one):
                    failed = True
                    threading.Timer(FAILED_GRACE, self.proc.kill).start()
                if self.enter and not pressed and COUNTDOWN.search(one):
                    pressed, since = 1, ""
                    self._press_enter()
        self.ended = time.monotonic()
        self.slot.release()

    def _press_enter(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"\r")
            self.proc.stdin.flush()
        except OSError:  # QEMU already gone
            pass

    def start_soon(self) -> None:
        """``_start`` in the background (it may wait for a busy slot); ``wait()`` waits for it."""
        self.starter = threading.Thread(target=self._start, daemon=True)
        self.starter.start()

    def kill(self) -> None:
        """End the boot, or keep it from starting (a story that failed half-way)."""
        self.cancelled.set()
        if self.proc is not None:
            self.proc.kill()

    def wait(self) -> BootResult:
        """Wait for the boot to end (power-off, failure or time limit) and read the probe's file."""
        if self.starter is not None:
            self.starter.join()
        try:
            self.proc.wait(timeout=max(1.0, self.start + self.timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.proc.kill()
            self.proc.wait()
        if self.watchdog:
            self.watchdog.cancel()
        if self.reader:
            self.reader.join(10)
        if self.timed_out:
            self.output.append("\n[time limit reached]\n")
        out = "".join(self.output)
        if EMULATOR_PANIC.search(out) and not self.restarted and self.cmd:
            log(f"{self.host.name}: the emulated kernel failed its timer check (TCG under load): booting again")
            self.restarted, self.ended, self.output = True, None, []
            self._start()
            result = self.wait()
            log_file = STATE / "hosts" / self.host.name / self.log_name  # the first attempt's console kept too
            log_file.write_text(out + "\n--- emulator timer-check panic: QEMU started again on the same disk ---\n"
                                + log_file.read_text())  # fmt: skip
            return result
        seconds = (self.ended or time.monotonic()) - self.start
        probe = read_probe(self.disk)
        for f in [self.disk.image, *self.disk.extra]:
            f.unlink(missing_ok=True)
        h = self.host
        (STATE / "hosts" / h.name / self.log_name).write_text(out + "\n--- /probe-result ---\n" + probe)
        result = parse_result(h, out, probe, self.files, seconds)
        log(result.summary())
        return result


def parse_result(h: HostSpec, out: str, probe: str, files: dict[str, int], seconds: float) -> BootResult:
    """A BootResult from the serial console and the probe's file."""
    clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", " ", out).replace("\r", "")
    result = BootResult(h.name, LOADERS[h.loader], seconds, log=out)
    result.entry = ">".join(re.findall(r"Booting `(.*?)'", clean))
    if not result.entry:  # no "Booting" line (GRUB 2.14; an entry chosen by the lab's Enter): what GRUB highlighted
        result.entry = ">".join(highlighted(clean))
    # 2.06: "Initrd, addr=0x..., size=0x..."; 2.14: "Initrd (0x...) at 0x...,\n size=0x..."
    sizes = re.findall(r"Initrd(?:, addr=0x[0-9a-f]+,| \(0x[0-9a-f]+\) at 0x[0-9a-f]+,)\s*size=0x([0-9a-f]+)", clean)
    if sizes:
        result.grub_initrd_size = int(sizes[-1], 16)
    for line in probe.splitlines():
        key, _, value = line.partition(": ")
        value = value.strip()
        if key == "root":
            result.root = value
        elif key == "root-under":
            result.under = value.split()
        elif key == "kernel":
            result.kernel = value
        elif key == "cmdline":
            result.cmdline = value
        elif key == "fstab":
            result.fstab = value
        elif key == "nics":
            result.nics = dict(w.split("=", 1) for w in value.split() if "=" in w)
        elif key == "bound":
            dev, _, drv = value.partition(" ")
            result.bound[dev] = drv
        elif key == "initrd-freed" and value and result.grub_initrd_size is None:
            kib = int(value)  # the kernel frees the initrd in whole pages
            result.initrd = " ".join(p for p, s in files.items() if -(-s // 4096) * 4 == kib and "/grub" not in p)
    if result.grub_initrd_size is not None:
        result.initrd = " ".join(p for p, s in files.items() if s == result.grub_initrd_size)
    return result


def highlighted(clean: str) -> list[str]:
    """The entry GRUB highlighted on each menu it drew (a submenu is a menu of its own), in order:
    what it boots when its countdown ends, or Enter is pressed. clean: the console, escapes removed."""
    starts = [m.start() for m in MENU_FOOTER.finditer(clean)] or [0]  # a menu seen only in part: one screen
    picks: list[str] = []
    for a, b in zip(starts, [*starts[1:], len(clean)]):
        screen = re.split(r"will be executed automatically|loader/|\[\s*\d+\.\d+\]", clean[a:b], maxsplit=1)[0]
        if (marked := re.findall(r"\*(\S.*?)\s{3,}", screen)) and (not picks or picks[-1] != marked[-1].strip()):
            picks.append(marked[-1].strip())
    return picks


def launch(h: HostSpec, timeout: int = TIMEOUT, scratch: Path | None = None, log_name: str = "boot.log") -> Launched:
    """Start booting host h's current root file system (its overlay must be mounted)."""
    launched = prepare(h, timeout, scratch, log_name)
    launched._start()
    return launched


def prepare(h: HostSpec, timeout: int = TIMEOUT, scratch: Path | None = None, log_name: str = "boot.log") -> Launched:
    """Write the boot disk of host h's current root file system (its overlay must be mounted): the boot
    is then of the host as it is now, whatever changes on it later. ``._start()`` starts QEMU on it."""
    tree = root(h.name)
    scratch = scratch or (Path("/dev/shm") if Path("/dev/shm").is_dir() else STATE / "hosts" / h.name)
    image = scratch / f"kvm-drivers-lab-{h.name}.img"
    log(f"{h.name}: boot through {LOADERS[h.loader]} in QEMU (tcg), disk layout {h.disk}, root on virtio-blk")
    files = boot_files(tree)
    if h.loader == "model":
        from tests.lab import blsmodel

        disk = blsmodel.make_disk(h, tree, image)
    else:
        disk = make_disk(h, tree, image)
    return on_disk(h, disk, files, tree, scratch, timeout, log_name)


def on_disk(h: HostSpec, disk: Disk, files: dict[str, int], tree: Path, scratch: Path, timeout: int = TIMEOUT,
            log_name: str = "boot.log") -> Launched:  # fmt: skip
    """The boot of disk (made from host h's tree, or an image of it) through h's loader; files: its /boot's
    files and sizes (to name the initrd GRUB loads). ``._start()`` starts QEMU on it."""
    cmd = ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "1024", "-smp", "1",
           "-drive", f"file={disk.image},format=raw,if=virtio",
           "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-pci,netdev=n0",
           "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]  # fmt: skip
    if wants_data_disk(tree):  # a second virtio disk (vdb): one ext4, as the host's Xen twin had xvdb
        data = scratch / f"kvm-drivers-lab-{h.name}-data.img"
        data.unlink(missing_ok=True)
        run(["truncate", "-s", "32M", str(data)])
        run(["mkfs.ext4", "-q", "-F", "-U", DATA_UUID, str(data)])
        disk.extra.append(data)
        cmd[cmd.index("-netdev"):cmd.index("-netdev")] = ["-drive", f"file={data},format=raw,if=virtio"]
    if h.loader == "uefi":
        cmd += ["-bios", str(OVMF)]
    else:
        cmd += ["-boot", "d", "-cdrom", str(rescue_iso("2.14" if h.loader == "bls" else "2.06"))]
    launched = Launched(h, disk, files, None, 0.0, timeout, cmd=cmd, log_name=log_name)  # type: ignore[arg-type]
    launched.enter = not mentions_fallback(tree)
    return launched


def wants_data_disk(tree: Path) -> bool:
    """Whether the host's fstab mounts /data (then it boots with a data disk: prepare())."""
    fstab = tree / "etc/fstab"
    return fstab.is_file() and not fstab.is_symlink() and any(
        len(f := line.split()) > 1 and f[1] == "/data" for line in fstab.read_text().splitlines())


SWAP_SIZE = 64 * MiB


def wants_swap(tree: Path) -> bool:
    """Whether the host's fstab names the lab's swap partition (then its split disk has one: make_disk)."""
    fstab = tree / "etc/fstab"
    return fstab.is_file() and not fstab.is_symlink() and f"UUID={SWAP_UUID}" in fstab.read_text()


def mentions_fallback(tree: Path) -> bool:
    """Whether any GRUB file of the tree's /boot names `fallback` (then the lab presses no key: COUNTDOWN)."""
    names = ("*.cfg", "menu.lst", "grub.conf", "grubenv")
    return any(b"fallback" in p.read_bytes() for n in names for p in (tree / "boot").rglob(n) if p.is_file())


def boot(h: HostSpec, timeout: int = TIMEOUT) -> BootResult:
    """Boot host h's current root file system in QEMU through its bootloader, and probe it."""
    return launch(h, timeout).wait()


class TwoAtATime:
    """Boots run in the background, two at a time (two cores: a booting guest keeps one busy; each waits
    for a busy slot too), each of its host as it is when its turn comes; ``start`` adds hosts,
    ``results()`` waits for them all, ``stop()`` ends them (a story that failed half-way)."""

    def __init__(self, log_name: str = "boot.log") -> None:
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.log_name = log_name
        self.running: dict[str, Future[BootResult]] = {}
        self.launched: list[Launched] = []

    def _boot(self, h: HostSpec) -> BootResult:
        launched = prepare(h, log_name=self.log_name)
        self.launched.append(launched)
        launched._start()
        return launched.wait()

    def start(self, specs: list[HostSpec]) -> None:
        for h in specs:
            self.running[h.name] = self.pool.submit(self._boot, h)

    def results(self) -> dict[str, BootResult]:
        try:
            return {name: run.result() for name, run in self.running.items()}
        finally:
            self.pool.shutdown()

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for launched in self.launched:
            launched.kill()


class AllAtOnce:
    """Boots started in the background, for boots that mostly wait (a failing boot waits for a root disk
    that never comes). Two threads write the disk images first (on disk, not in RAM; nothing else of the
    lab's is emulated meanwhile), then the QEMUs start in turn, each once it holds a busy slot: its busy
    part alone, then it waits beside the others. ``written()`` waits until every image is written: the
    hosts may change from then on. ``results()`` waits for the boots; ``same`` names, per booted host,
    the hosts whose result it gives (hosts that boot alike, e.g. the same /boot up to the root disk)."""

    def __init__(self, specs: list[HostSpec], log_name: str = "boot.log",
                 same: dict[str, list[str]] | None = None) -> None:  # fmt: skip
        pool = ThreadPoolExecutor(max_workers=2)
        self.prepared = {h.name: pool.submit(prepare, h, scratch=STATE / "hosts" / h.name, log_name=log_name)
                         for h in specs}  # fmt: skip
        pool.shutdown(wait=False)  # the disks are written meanwhile
        self.same = same or {h.name: [h.name] for h in specs}
        self.stopped = threading.Event()
        self.starter = threading.Thread(target=self._start_all, daemon=True)
        self.starter.start()

    def _start_all(self) -> None:
        launched = [f.result() for f in self.prepared.values() if not f.cancelled() and not f.exception()]
        if len(launched) == len(self.prepared):
            for one in launched:
                one.cancelled = self.stopped  # stop() keeps the rest from starting
                one._start()

    def written(self) -> None:
        for prepared in self.prepared.values():
            prepared.result()

    def results(self) -> dict[str, BootResult]:
        self.written()
        self.starter.join()
        done = {name: prepared.result().wait() for name, prepared in self.prepared.items()}
        return {other: done[name] for name, others in self.same.items() for other in others}

    def stop(self) -> None:
        self.stopped.set()
        for prepared in self.prepared.values():
            prepared.cancel()
        self.starter.join()
        for prepared in self.prepared.values():
            if prepared.done() and not prepared.cancelled() and not prepared.exception():
                prepared.result().kill()
