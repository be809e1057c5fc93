"""Lab hosts: an overlay over a base tree per host, served by its own sshd on 127.0.x.y in
its own mount/UTS/PID namespace. Loopback only: no other address is ever used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab import bases, variants
from tests.lab.bases import log, run

STATE = Path(os.environ.get("KVM_LAB_STATE", "/var/tmp/kvm-drivers-lab"))
KEY = STATE / "id_ed25519"


@dataclass(frozen=True)
class HostSpec:
    """One lab host: name, loopback address, base tree, and what it should show users."""

    name: str
    address: str
    base: str
    setup: Callable[[Path], None] | None = None  # turns the fresh overlay into the wanted state
    expect: str = "fixed"  # fixed: deploy makes it boot; compliant; fails: deploy must refuse it
    note: str = ""
    data: tuple[tuple[str, object], ...] = ()  # extra inventory data for this host
    loader: str = "bios"  # boot path: bios, uefi, legacy (menu.lst), bls (GRUB 2.14 blscfg), model
    disk: str = "whole"  # boot disk layout (tests/lab/boot.py make_disk): whole, split, part, esp, btrfs


def _hosts() -> list[HostSpec]:
    v = variants
    table = [
        # name, base, setup, expect, note
        ("deb12-itools", "bookworm-itools", v.debian, "fixed", "Debian 12, initramfs-tools MODULES=list as on Xen"),
        ("deb12-dracut", "bookworm-dracut", v.debian, "fixed", "Debian 12 with dracut, initrd built without virtio"),
        ("deb11-itools", "bullseye-itools", v.debian, "fixed", "Debian 11, initramfs-tools MODULES=list"),
        ("deb13-itools", "trixie-itools", v.debian, "fixed", "Debian 13, initramfs-tools MODULES=list, .ko.xz modules"),
        ("ubuntu2204", "bookworm-itools", v.ubuntu2204, "fixed", "Ubuntu 22.04 release files, initramfs-tools"),
        ("centos7", "bookworm-dracut", v.centos7, "fixed", "CentOS 7 release files, grub2 linux16, dracut"),
        ("euleros2", "bookworm-dracut", v.euleros2, "fixed", "EulerOS 2.0 SP8 release files, dracut"),
        ("openeuler2203", "bookworm-dracut", v.openeuler2203, "fixed", "openEuler 22.03 release files, dracut"),
        ("sles12sp1", "bookworm-dracut", v.sles12sp1, "fixed", "SLES 12 SP1 release files, dracut, initrd-K"),
        ("sles15sp5", "bookworm-dracut", v.sles15sp5, "fixed", "SLES 15 SP5 release files, dracut"),
        ("leap15", "bookworm-dracut", v.leap15, "fixed", "openSUSE Leap 15.5 release files, dracut"),
        ("rocky9-bls", "bookworm-dracut", v.rocky9_bls, "fixed", "Rocky 9 release files, BLS entries, dracut"),
        ("centos6", "bookworm-dracut", v.centos6, "fixed", "CentOS 6: no os-release, GRUB legacy grub.conf"),
        ("sles11", "bookworm-itools", v.sles11, "fixed",
         "SLES 11 SP4: SuSE-release only, INITRD_MODULES, menu.lst boots /boot/initrd.vmx (mkinitrd stand-in)"),
        ("deb12-2kernels", "bookworm-2k-itools", v.two_kernels_default_older, "fixed",
         "two kernels, GRUB default is the older one"),
        ("deb12-custom-initrd", "bookworm-itools", v.custom_initrd_name, "fixed",
         "GRUB boots /boot/initrd-kvm-custom.img"),
        ("deb12-compliant", "bookworm-most", v.declared_already, "compliant",
         "MODULES=most initrd with virtio, drivers declared: nothing to do"),
        ("arch-unsupported", "bookworm-itools", v.unsupported, "fails", "Arch Linux release files: unsupported"),
        ("centos5-2.6.18", "bookworm-itools", v.kernel_2_6_18, "fails", "only kernel is 2.6.18: refused"),
        ("deb12-itools-b", "bookworm-itools", v.debian_uefi, "fixed",
         "plain Debian 12 booted through UEFI; after the deploy its kernel hook rebuilds the initrd: virtio must stay"),
        ("deb12-blacklist", "bookworm-itools", v.blacklisted, "fixed",
         "'install virtio_blk /bin/false' in modprobe.d; kvm_remove_blacklists on"),
        ("deb12-sudo", "bookworm-sudo", v.debian, "fixed", "reached as the non-root user 'ops' with sudo"),
        ("deb12-builtin", "bookworm-builtin", v.builtin, "compliant",
         "only kernel has every virtio driver built in, boots without an initrd: nothing to do"),
        # issue 10: bootloader configurations where GRUB's choice is easy to get wrong
        ("sles15-snapshot", "bookworm-2k-dracut", v.suse_snapshot_header, "fixed",
         "SLES 15 on btrfs: snapshot block in 00_header; default boots the older kernel"),
        ("sles11-vmx", "bookworm-itools", v.sles11_vmx, "fixed",
         "SLES 11 SP4: menu.lst boots /boot/linux.vmx + /boot/initrd.vmx (no version in the names)"),
        ("deb12-saved-title", "bookworm-2k-itools", v.saved_title_in_submenu, "fixed",
         "saved_entry is the bare title of a submenu entry: GRUB falls back to entry 0"),
        ("deb12-default-submenu", "bookworm-2k-itools", v.default_names_submenu, "fixed",
         "set default=1 names the 'Advanced options' submenu: GRUB boots its first entry"),
        ("rocky8-bls-rpm", "bookworm-2k-dracut", v.bls_rpm_order, "fixed",
         "Rocky 8 BLS without saved_entry: rpm version order decides (240.1.1.el8_3 > 240.el8)"),
        ("ubuntu2204-btrfs", "bookworm-itools", v.btrfs_subvolume, "fixed",
         "Ubuntu on btrfs: grub.cfg names /@/boot/vmlinuz-K and /@/boot/initrd.img-K"),
        ("rocky9-counting", "bookworm-2k-dracut", v.rhel_counting, "fixed",
         "Rocky 9 BLS with the boot-success counting block (set default=1 inside its conditions)"),
    ]
    default_kernel = (("kvm_kernels", "default"),)  # only the bootloader's default kernel is fixed
    data = {
        "deb12-blacklist": (("kvm_remove_blacklists", True),),
        "deb12-sudo": (("ssh_user", "ops"), ("_sudo", True)),
        **{n: default_kernel for n in ("sles15-snapshot", "deb12-saved-title", "deb12-default-submenu",
                                       "rocky8-bls-rpm", "rocky9-counting")},
    }
    boot = {  # name -> (loader, disk); the rest boot through GRUB BIOS from one unpartitioned ext4
        "centos7": ("bios", "split"), "euleros2": ("bios", "split"), "openeuler2203": ("bios", "split"),
        "rocky9-bls": ("bls", "split"), "rocky9-counting": ("bls", "split"), "rocky8-bls-rpm": ("model", "split"),
        "centos6": ("legacy", "part"), "sles11": ("legacy", "part"), "sles11-vmx": ("legacy", "part"),
        "deb12-itools-b": ("uefi", "esp"), "ubuntu2204-btrfs": ("bios", "btrfs"),
    }
    return [HostSpec(n, f"127.0.10.{i}", b, s, e, note, data.get(n, ()), *boot.get(n, ("bios", "whole")))
            for i, (n, b, s, e, note) in enumerate(table, start=1)]  # fmt: skip


HOSTS: list[HostSpec] = _hosts()


def spec(name: str) -> HostSpec:
    """The HostSpec called name."""
    for h in HOSTS:
        if h.name == name:
            return h
    raise KeyError(f"no lab host {name!r}; known: {', '.join(h.name for h in HOSTS)}")


def root(name: str) -> Path:
    """The merged root of a host's overlay."""
    return STATE / "hosts" / name / "root"


def ensure_key() -> Path:
    """The lab's SSH key pair (made once)."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvm-drivers-lab", "-f", str(KEY)])
    return KEY


def listening(address: str) -> bool:
    """True if something accepts connections on address:22."""
    try:
        with socket.create_connection((address, 22), timeout=0.5):
            return True
    except OSError:
        return False


def sshd_pid(address: str) -> int | None:
    """PID of the sshd listening on address:22 (the host namespace's PID 1)."""
    out = subprocess.run(["ss", "-ltnpH", f"src {address}:22"], capture_output=True, text=True).stdout
    for part in out.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


def mounted(path: Path) -> bool:
    """True if path is a mount point."""
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


def start(h: HostSpec, fresh: bool = True, sshd_options: list[str] | None = None) -> None:
    """Mount the host's overlay (fresh: discard earlier changes) and start its sshd."""
    stop(h)
    base = bases.ensure(h.base)
    top = STATE / "hosts" / h.name
    if fresh and top.exists():
        run(["rm", "-rf", "--one-file-system", str(top)])
    for d in ("upper", "work", "root"):
        (top / d).mkdir(parents=True, exist_ok=True)
    r = root(h.name)
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={base},upperdir={top / 'upper'},workdir={top / 'work'}",
            str(r),
        ]
    )
    key = Path(f"{ensure_key()}.pub").read_text()
    for home, uid in (("root", 0), ("home/ops", 1000)):
        if (r / home).is_dir():
            ssh = r / home / ".ssh"
            ssh.mkdir(mode=0o700, exist_ok=True)
            (ssh / "authorized_keys").write_text(key)
            for p in (ssh, ssh / "authorized_keys"):
                os.chown(p, uid, uid)
    (r / "etc/hostname").write_text(h.name + "\n")
    etc_hosts = r / "etc/hosts"  # sudo resolves its own host name
    known = etc_hosts.read_text() if etc_hosts.exists() else "127.0.0.1 localhost\n"
    if f" {h.name}\n" not in known:
        etc_hosts.write_text(known + f"127.0.1.1 {h.name}\n")
    if fresh and h.setup:
        h.setup(r)
    # STAND-IN for the firmware's word (marked as such): a host the lab boots through UEFI says so
    # where Linux does, /sys/firmware/efi, on a small tmpfs over the namespace's /sys/firmware
    # (this machine booted by BIOS, and its sysfs is every host's).
    efi = f" mount -t tmpfs -o size=16k,mode=0755 kvm-lab-efi {r}/sys/firmware && mkdir {r}/sys/firmware/efi;"
    # A lab host has no block device of its own: an empty /proc/partitions keeps its blkid from probing
    # this machine's (an image test's loop device, its daemon killed, once hung every blkid that did).
    parts = f" mount --bind /dev/null {r}/proc/partitions;"
    inner = (
        f"hostname {h.name}; mount --bind /dev {r}/dev; mount -t sysfs sys {r}/sys;{efi if h.loader == 'uefi' else ''}"
        f"{parts}"
        f" exec chroot {r} /usr/sbin/sshd -D -e -o ListenAddress={h.address}"
        " -o PermitRootLogin=prohibit-password -o UsePAM=no -o UseDNS=no " + " ".join(sshd_options or [])
    )
    logf = open(top / "sshd.log", "ab")
    subprocess.Popen(
        ["unshare", "--mount", "--uts", "--pid", "--fork", f"--mount-proc={r}/proc", "sh", "-c", inner],
        stdout=logf,
        stderr=logf,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not listening(h.address):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{h.name}: sshd did not start on {h.address}:22; see {top / 'sshd.log'}")
        time.sleep(0.1)


def stop(h: HostSpec) -> None:
    """Stop the host's sshd (its namespace's PID 1) and unmount its overlay."""
    pid = sshd_pid(h.address)
    if pid:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while listening(h.address) and time.monotonic() < deadline:
            time.sleep(0.1)
    r = root(h.name)
    if mounted(r):
        subprocess.run(["umount", "-l", str(r)], check=False)


def up(names: list[str] | None = None, fresh: bool = True) -> list[HostSpec]:
    """Build what is missing and start the hosts (all by default); write the lab state file."""
    hosts = [spec(n) for n in names] if names else HOSTS
    bases.build_all(sorted({h.base for h in hosts}))
    start_time = time.monotonic()
    for h in hosts:
        start(h, fresh=fresh)
    log(
        f"{len(hosts)} hosts up in {time.monotonic() - start_time:.1f}s: "
        + ", ".join(f"{h.name}={h.address}" for h in hosts)
    )
    write_known_hosts(hosts, STATE / "known_hosts")  # the lab inventory checks host keys against it
    shared_kernel_note(hosts)
    (STATE / "lab.json").write_text(json.dumps({"key": str(KEY), "hosts": [h.name for h in hosts]}))
    return hosts


def host_keys(h: HostSpec) -> str:
    """known_hosts lines for a started host: the public keys its sshd serves (from its own root tree), under its
    address. ed25519 first: paramiko asks the server for the type of the first key it knows."""
    pubs = sorted((root(h.name) / "etc/ssh").glob("ssh_host_*_key.pub"), key=lambda p: "ed25519" not in p.name)
    return "".join(f"{h.address} {' '.join(p.read_text().split()[:2])}\n" for p in pubs
                   if p.with_suffix("").exists())  # fmt: skip


def write_known_hosts(specs: list[HostSpec], path: Path) -> Path:
    """Write path: the host keys of the given started hosts (we start them, so we know their keys: an inventory
    can check them strictly, with no "No host key ... found in known_hosts" line per host)."""
    path.write_text("".join(host_keys(h) for h in specs))
    return path


def shared_kernel_note(specs: list[HostSpec]) -> None:
    """Say once what every lab host would otherwise report on its own: they all run this machine's kernel,
    which is not installed in their trees (kvm-drivers handles the installed kernels; nothing is wrong)."""
    running = os.uname().release
    if any(not (root(h.name) / "lib/modules" / running).is_dir() for h in specs):
        log(f"lab hosts share this machine's kernel ({running}): each reports it as running but not installed "
            "in its own tree; expected in the lab")


def down(names: list[str] | None = None) -> None:
    """Stop the hosts (all by default)."""
    for h in [spec(n) for n in names] if names else HOSTS:
        stop(h)


def ssh_args(h: HostSpec) -> list[str]:
    """ssh command line prefix for a lab host."""
    return [
        "ssh",
        "-i",
        str(KEY),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        f"root@{h.address}",
    ]


def write_inventory(specs: list[HostSpec], name: str) -> Path:
    """A pyinfra inventory file (group NAME) for ad-hoc host sets: benchmarks, fault tests. The hosts must be
    up: their host keys go into the inventory's own known_hosts file, checked strictly."""
    path = STATE / f"{name}_inventory.py"
    known = write_known_hosts(specs, STATE / f"{name}_known_hosts")
    rows = ",\n".join(
        f"    ({s.name!r}, {{'ssh_hostname': {s.address!r}, 'ssh_user': 'root', 'ssh_key': {str(KEY)!r},"
        f" 'ssh_strict_host_key_checking': 'yes', 'ssh_known_hosts_file': {str(known)!r}, **{dict(s.data)!r}}})"
        for s in specs
    )
    path.write_text(f"{name} = [\n{rows},\n]\n")
    return path


def variant(base_host: str, name: str, address: str, setup: Callable[[Path], None] | None = None,
            **data: object) -> HostSpec:
    """A copy of a lab host under another name and address: its own setup (e.g. its bootloader
    configuration), then setup's change; data replaces its inventory data."""
    base = spec(base_host)

    def both(root: Path) -> None:
        if base.setup:
            base.setup(root)
        setup(root)

    return dataclasses.replace(base, name=name, address=address, setup=both if setup else base.setup,
                               data=tuple(data.items()) if data else base.data)  # fmt: skip


def in_sh(cmd: str) -> str:
    """cmd as pyinfra sends a fact's command: to sh -c, whatever the login shell."""
    return "sh -c " + shlex.quote(cmd)


def ssh(h: HostSpec, cmd: str, check: bool = True, inp: str | None = None, timeout: int = 300) -> str:
    """Run cmd on lab host h as root over SSH; its stdout (check: fail on a non-zero exit)."""
    proc = subprocess.run(ssh_args(h) + [cmd], capture_output=True, text=True, timeout=timeout, input=inp)
    if check and proc.returncode != 0:
        raise AssertionError(f"{h.name}: {cmd[:200]}: {proc.stderr}")
    return proc.stdout
