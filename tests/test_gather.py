"""gather.sh on root trees built here: run by sh (dash), BusyBox sh and every awk with KVM_ROOT=TREE,
the answer read by the real parser. Each of its functions is exercised; links inside the tree are
resolved inside it (never out of it); the paths reported are the host's own; nothing of this machine
is described. And with KVM_ROOT=/, in a chroot into such a tree, the answer is the one the script
gave before it was split into functions (git), and the one KVM_ROOT=TREE gives.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import QuoteString, StringCommand

from kvm_drivers import hostside
from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts import wire as p
from kvm_drivers.facts.state import FALLBACK_INITRDS, host_state
from tests.test_blacklist_host import fake_root, initrd

K = "6.1.0-kvm"
WANTED = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]
MODS = f"usr/lib/modules/{K}/kernel/drivers"
SHELLS = ["sh"] + (["busybox sh"] if shutil.which("busybox") else [])
ROOT = os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("chroot"))
as_root = pytest.mark.skipif(not ROOT, reason="needs root, unshare and chroot")


def bzimage(version: str) -> bytes:
    """A kernel image as far as gather.sh reads one: the x86 boot header's magic and version pointer."""
    data = bytearray(1024)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x100).to_bytes(2, "little")  # the version string at 0x100 + 0x200
    text = f"{version} (builder@lab) #1 SMP".encode()
    data[0x300 : 0x300 + len(text)] = text
    return bytes(data)


def write(root: Path, name: str, data: str | bytes, mode: int = 0o644) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    path.chmod(mode)
    return path


def link(root: Path, name: str, target: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def tree(base: Path, merged: bool = False) -> Path:
    """A Debian-like root tree, with links of every kind; base/outside holds what must never be read."""
    outside = base / "outside"
    write(outside, "secret.conf", "blacklist virtio_ring  # OUTSIDE-SECRET\n")
    write(outside, "initrd.img", initrd({f"{MODS}/block/escaped_mod.ko": "x"}))
    root = base / "root"
    write(root, "usr/lib/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
          'VERSION_ID="12"\nID=debian\n')  # fmt: skip
    link(root, "etc/os-release", "../usr/lib/os-release")  # as Debian has it
    write(root, "etc/debian_version", "12.5\n")
    write(root, "etc/initramfs-tools/modules", "# modules\nvirtio_blk\n")
    write(root, "etc/initramfs-tools/initramfs.conf", "MODULES=dep\n")
    write(root, "etc/default/grub.real", 'GRUB_CMDLINE_LINUX="quiet"\n')
    link(root, "etc/default/grub", "/etc/default/grub.real")  # absolute: the tree's own file
    link(root, "etc/dracut.conf", "dracut.conf")  # a loop
    write(root, "boot/grub/custom cfg", "menuentry x {\n}\n")
    link(root, "boot/grub/custom.cfg", "custom cfg")  # a target that is not a plain name
    link(root, "boot/grub2/grub.cfg", "../../../outside/secret.conf")  # out of the tree: not followed
    write(root, "boot/grub/grub.cfg", f"""set default=0
menuentry 'Debian' {{
\tlinux\t/boot/vmlinuz-{K} root=/dev/vda1 ro quiet
\tinitrd\t/boot/initrd.img
}}
menuentry 'KIWI' {{
\tlinux\t/boot/linux.vmx root=/dev/vda1
\tinitrd\t/boot/initrd-escape
}}
menuentry 'Odd' {{
\tlinux\t/boot/vmlinuz-{K}
\tinitrd\t/boot/initrd-etc
}}
""")
    write(root, "boot/grub/grubenv", "# GRUB Environment Block\nsaved_entry=Debian, 1\n" + "#" * 60)
    write(root, "boot/efi/EFI/debian/grub.cfg", "configfile ($root)/boot/grub/grub.cfg\n")
    write(root, f"boot/vmlinuz-{K}", bzimage(K))
    link(root, "boot/linux.vmx", f"vmlinuz-{K}")
    write(root, f"boot/config-{K}.real", "CONFIG_VIRTIO=y\nCONFIG_VIRTIO_BLK=m\n# CONFIG_VIRTIO_NET is not set\n")
    link(root, f"boot/config-{K}", f"/boot/config-{K}.real")
    image = {
        f"{MODS}/block/virtio_blk.ko": "x",
        f"{MODS}/virtio/virtio_ring.ko": "x",
        f"{MODS}/net/virtio_net.ko.xz": "x",
        "etc/modprobe.d/x.conf": "install virtio_blk /bin/false\n",
    }
    write(root, f"boot/initrd.img-{K}", initrd(image))
    link(root, "boot/initrd.img", f"/boot/initrd.img-{K}")  # absolute: resolved in the tree
    link(root, "boot/initrd-escape", "../../../outside/initrd.img")  # ".." stops at the tree's root
    link(root, "boot/initrd-etc", "../../../../etc/debian_version")  # in the tree, but not in /boot
    mods = root / ("usr/lib" if merged else "lib") / "modules" / K
    write(mods, "modules.builtin", "kernel/drivers/virtio/virtio.ko\n")
    write(mods, "modules.dep", "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n"
          "kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/net/virtio_net.ko.xz: kernel/net/failover.ko\n"
          "kernel/net/failover.ko:\nkernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko\n")
    write(root, "etc/modprobe.d/virtio.conf", "blacklist virtio_blk\n")
    write(root, "etc/modprobe.d/virtio.conf.dpkg-old", "blacklist virtio_pci\n")  # a backup: read by no one
    link(root, "etc/modprobe.d/evil.conf", str(outside / "secret.conf"))  # absolute: the tree's, absent
    write(root, "usr/lib/modprobe.d/virtio.conf", "blacklist virtio_scsi\n")  # overridden by /etc's
    write(root, "usr/lib/modprobe.d/dist.conf", "install virtio_scsi /bin/false\n")
    write(root, "etc/modprobe.conf", "alias eth0 virtio_net\ninstall virtio_net :\n")
    for tool in ("update-initramfs", "mkinitramfs", "grubby"):
        write(root, f"usr/sbin/{tool}", "#!/bin/sh\necho GRUBBY-RAN\n", 0o755)
    write(root, "usr/bin/lsinitramfs", "#!/bin/sh\n", 0o644)  # not executable: not a tool
    link(root, "usr/bin/python3", "/usr/bin/python3.11")  # absent in the tree, whatever this machine has
    link(root, "sbin", "usr/sbin")
    link(root, "bin", "usr/bin")
    write(root, "proc/mounts", "/dev/vda1 / ext4 rw 0 0\n/dev/vda2 /boot ext4 ro 0 0\n")  # never read: /proc
    if merged:
        link(root, "lib", "usr/lib")
    else:
        write(root, "lib/modprobe.d/dist.conf", "blacklist virtio_pci\n")  # /usr/lib's does not hide it
    return root


def command(root: Path | str = "/", known: list[str] | None = None, seen: str = "", script: str | None = None) -> str:
    cmd = kd.gather_command(WANTED, known, seen, root=str(root)).get_raw_value()
    return cmd if script is None else cmd.replace(hostside.GATHER, script)


def run(cmd: str, shell: str = "sh", env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([*shell.split(), "-c", cmd], capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], **(env or {})})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def gather(root: Path, shell: str = "sh", **how) -> tuple[str, p.Snapshot]:
    out = run(command(root, **how), shell)
    return out, p.parse_snapshot(out.splitlines())


@pytest.fixture
def root(tmp_path):
    return tree(tmp_path)


# --- kvm_path, kvm_glob ------------------------------------------------------------------------


def functions(call: str, root: Path, shell: str = "sh") -> str:
    return run(hostside.GATHER_FUNCTIONS + f"KVM_R={shlex.quote(str(root))}\n{call}", shell)


@pytest.mark.parametrize("shell", SHELLS)
def test_kvm_path_resolves_inside_the_root_and_never_out_of_it(root, shell):
    cases = {
        "/etc/os-release": ("usr/lib/os-release", "/usr/lib/os-release"),  # relative link
        "/etc/default/grub": ("etc/default/grub.real", "/etc/default/grub.real"),  # absolute: the tree's
        "/boot/initrd.img": (f"boot/initrd.img-{K}", f"/boot/initrd.img-{K}"),
        "/boot/grub2/grub.cfg": ("outside/secret.conf", "/outside/secret.conf"),  # ".." stops at the root
        "/boot/initrd-etc": ("etc/debian_version", "/etc/debian_version"),
        "/etc/modprobe.d/evil.conf": (str(root.parent / "outside/secret.conf").lstrip("/"),
                                      str(root.parent / "outside/secret.conf")),  # fmt: skip
        "/boot/../../etc/./debian_version": ("etc/debian_version", "/etc/debian_version"),
        "/": ("", "/"),
    }
    for path, (where, real) in cases.items():
        out = functions(f'kvm_path {shlex.quote(path)}; echo "$?|$kp|$kr"', root, shell)
        assert out == f"0|{root}{'/' + where if where else ''}|{real}\n", path
        assert not Path(f"{root}/{where}").exists() or Path(f"{root}/{where}").resolve().is_relative_to(root)
    for refused in ("/etc/dracut.conf", "/boot/grub/custom.cfg"):  # a loop; a target with a blank
        assert functions(f'kvm_path {refused}; echo "$?|$kp|$kr"', root, shell) == "1|/dev/null/kvm-drivers-refused|\n"
    # KVM_ROOT=/: the path itself, whatever it is (the kernel resolves it)
    same = run(hostside.GATHER_FUNCTIONS + 'KVM_R=""; kvm_path /etc/../x; echo "$kp|$kr"', shell)
    assert same == "/etc/../x|/etc/../x\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_kvm_glob_under_a_root_gives_what_the_shell_gives(tmp_path, shell):
    # whole paths in the shell's order (6.1-rt/... sorts before 6.1/...), names with blanks and quotes
    root = tmp_path / "root"
    for k in ("6.1", "6.1-rt", "6.1.x", "it's a b"):
        write(root, f"lib/modules/{k}/modules.dep", "")
    write(root, "lib/modules/nodep/modules.builtin", "")
    link(root, "lib/modules/linked", "6.1")
    link(root, "lib/modules/abs", "/lib/modules/6.1")  # absolute: the tree's (this machine has none)
    write(root, "etc/modprobe.d/a b.conf", "")
    write(root, "etc/modprobe.d/x.conf", "")
    patterns = "/lib/modules/*/modules.dep /etc/modprobe.d/*.conf /etc/none/* /etc/modprobe.d/x.conf"
    got = functions(f"kvm_glob '{patterns}'; eval \"set -- $kq\"; printf '%s\\n' \"$@\"", root, shell)
    prefixed = " ".join(f"{root}{x}" for x in patterns.split())
    want = run(f"for f in {prefixed}; do printf '%s\\n' \"$f\"; done", shell, {"LC_ALL": "C"})
    got = got.splitlines()
    assert "/lib/modules/abs/modules.dep" in got and not Path("/lib/modules/6.1").exists()
    assert [x for x in got if "/abs/" not in x] == want.replace(str(root), "").splitlines()
    assert "/lib/modules/linked/modules.dep" in got
    assert got[:3] == [f"/lib/modules/{k}/modules.dep" for k in ("6.1-rt", "6.1.x", "6.1")]


# --- each function, under KVM_ROOT=TREE ---------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_the_answer_under_a_root_is_complete_and_only_names_host_paths(root, shell):
    out, snap = gather(root, shell)
    assert snap.complete and snap.problems == [], snap.problems
    assert str(root) not in out and str(root.parent) not in out  # every path is the host's own
    assert "OUTSIDE-SECRET" not in out and "escaped_mod" not in out and "GRUBBY-RAN" not in out


def test_gather_meta_under_a_root_describes_nothing_of_this_machine(root):
    out, snap = gather(root)
    assert snap.meta["uname"] == "" and snap.meta["uid"] == "" and snap.meta["image"] == "yes"
    assert snap.meta["bootmount"] == ""  # /proc is the running system's: never read under a root
    assert p.DIGITS.match(snap.meta["bootfree"])  # the file system the tree's /boot is on
    assert os.uname().release not in out
    state = host_state(snap)
    assert state.image and state.running_kernel == "" and state.boot_mount == [] and state.boot_free_kib is not None
    # an answer from a running host is not an image
    live = host_state(p.parse_snapshot(["@@KVM meta", "uname 6.1", "uid 0", *out.splitlines()[6:]]))
    assert not live.image and live.running_kernel == "6.1"


def test_gather_files_sends_the_trees_files_by_their_host_paths(root):
    _, snap = gather(root)
    files = snap.files
    assert files["/etc/os-release"] == files["/usr/lib/os-release"] and "bookworm" in files["/etc/os-release"]
    assert files["/etc/default/grub"] == 'GRUB_CMDLINE_LINUX="quiet"\n'  # absolute link, inside the tree
    assert files["/etc/dracut.conf"] is None  # a loop: unreadable, as the host itself would find it
    assert files["/boot/grub/custom.cfg"] is None  # a target that is not a plain name: refused
    assert files["/boot/grub2/grub.cfg"] is None  # out of the tree: the tree's /outside/..., absent
    assert files["/boot/efi/EFI/debian/grub.cfg"].startswith("configfile")
    assert "/etc/initramfs-tools/modules" in files and "/boot/grub/grubenv" in files
    assert host_state(snap).distro.id == "debian" and host_state(snap).generator == "initramfs-tools"


@pytest.mark.parametrize("merged", [False, True], ids=["lib", "merged-usr"])
def test_gather_modprobe_and_blacklist_read_the_files_in_effect(tmp_path, merged):
    root = tree(tmp_path, merged=merged)
    _, snap = gather(root)
    got = {(b["file"], b["driver"], b["text"]) for b in snap.blacklists}
    want = {
        ("/etc/modprobe.d/virtio.conf", "virtio_blk", "blacklist virtio_blk"),
        ("/usr/lib/modprobe.d/dist.conf", "virtio_scsi", "install virtio_scsi /bin/false"),
        ("/etc/modprobe.conf", "virtio_net", "install virtio_net :"),
    }
    if not merged:  # /lib and /usr/lib are two directories: both are read
        want.add(("/lib/modprobe.d/dist.conf", "virtio_pci", "blacklist virtio_pci"))
    assert got == want  # not /usr/lib's virtio.conf (overridden), the backup, nor the link out of the tree


def test_gather_tools_looks_in_the_trees_directories(root):
    _, snap = gather(root)
    assert snap.tools == {"update-initramfs": "/usr/sbin/update-initramfs", "mkinitramfs": "/usr/sbin/mkinitramfs",
                          "grubby": "/usr/sbin/grubby"}  # fmt: skip
    # not lsinitramfs (not executable), not python3 (its link leads to this machine's, not the tree's)


def test_gather_fingerprint_names_host_paths_and_answers_unchanged(root):
    out, snap = gather(root)
    fp = snap.fingerprint
    assert fp and f",/boot/vmlinuz-{K}|1024|" in fp and f"/lib/modules/{K}/modules.dep|" in fp
    assert ",/boot/grub/grubenv:saved_entry=Debian%2C%201" in fp  # grubenv by its content
    assert re.search(r",[0-9]+,[0-9]+,/boot/efi/EFI/debian/grub.cfg(,|$)", fp)  # EFI files by cksum
    keys = [line[4:] for line in out.splitlines() if line.startswith("key ")]
    again, snap = gather(root, known=keys, seen=fp)
    assert again.splitlines()[-2:] == [f"@@KVM unchanged {fp}", "@@KVM end"]
    (root / f"boot/config-{K}.real").write_text("CONFIG_VIRTIO=m\n")
    _, snap = gather(root, known=keys, seen=fp)
    assert snap.fingerprint not in ("", fp) and snap.complete


def test_gather_settings_never_runs_the_trees_grubby(root):
    out, snap = gather(root)
    assert snap.drivers == WANTED and "grubby" not in snap.meta and "GRUBBY-RAN" not in out


def test_gather_dump_sends_bytes_and_refuses_what_is_not_utf8(root):
    (root / "etc/default/grub.real").write_bytes(b"GRUB_TIMEOUT=5\n\xff\xfe\n")
    (root / "etc/initramfs-tools/modules").write_bytes(b"virtio_blk\n\x01odd\x01\nno newline")
    out, snap = gather(root)
    assert "@@KVM unreadable /etc/default/grub" in out.splitlines() and snap.files["/etc/default/grub"] is None
    assert snap.files["/etc/initramfs-tools/modules"] == "virtio_blk\n\x01odd\x01\nno newline"


def test_gather_kernels_reads_modules_and_config_through_links(tmp_path):
    root = tree(tmp_path, merged=True)  # /lib -> usr/lib; /boot/config-K -> /boot/config-K.real
    _, snap = gather(root)
    kernel = snap.kernels[K]
    assert kernel.images == [f"/boot/vmlinuz-{K}"] and kernel.has_builtin and kernel.has_dep and kernel.has_config
    assert kernel.closures["virtio_net"] == ["virtio_net", "failover"] and "virtio" in kernel.builtin
    assert "virtio_scsi" in kernel.absent and kernel.config["VIRTIO_BLK"] == "m" and kernel.config["VIRTIO_NET"] == "n"


def test_gather_initrds_follows_links_inside_the_root_only(root):
    out, snap = gather(root)
    assert snap.refs["/boot/initrd.img"] == f"/boot/initrd.img-{K}"  # absolute link, resolved in the tree
    assert snap.refs["/boot/initrd-escape"] == ""  # the tree's /outside/initrd.img: none
    assert snap.refs["/boot/initrd-etc"] == "/etc/debian_version"  # resolved, never listed: not in /boot
    assert list(snap.initrds) == [f"/boot/initrd.img-{K}"]
    image = snap.initrds[f"/boot/initrd.img-{K}"]
    assert image.magic.startswith("1f8b") and len(image.magic) == 2 * hostside.MAGIC_BYTES
    assert image.modules == {"virtio_blk", "virtio_ring", "virtio_net"}
    assert image.kernel_dirs == {K} and image.conf_read == 1
    assert [(b["file"], b["driver"]) for b in image.blocks] == [("etc/modprobe.d/x.conf", "virtio_blk")]
    st = (root / f"boot/initrd.img-{K}").stat()
    assert f"key /boot/initrd.img-{K}|{st.st_size}|{int(st.st_mtime)}|{int(st.st_ctime)}" in out.splitlines()


def test_gather_kimages_ties_an_unversioned_image_by_its_header(root):
    _, snap = gather(root)
    image = snap.kimages["/boot/linux.vmx"]
    assert image.resolved == "/boot/linux.vmx" and image.version == K and image.same == [f"/boot/vmlinuz-{K}"]


def test_gather_main_refuses_a_root_it_cannot_use(tmp_path):
    (tmp_path / "file").write_text("")
    for bad in ("relative/dir", str(tmp_path / "none"), str(tmp_path / "file"), str(tmp_path / "a b")):
        proc = subprocess.run(["sh", "-c", command(bad)], capture_output=True, text=True)
        assert proc.returncode == 2 and "KVM_ROOT" in proc.stderr and proc.stdout == "", bad
    proc = subprocess.run(["sh", "-c", hostside.GATHER, "gather", "a", "b"], capture_output=True, text=True)
    assert proc.returncode == 2 and "5 or more expected" in proc.stderr
    # the command always sets KVM_ROOT: one in the host's environment changes nothing
    out = subprocess.run(["sh", "-c", command()], capture_output=True, text=True, env={**os.environ, "KVM_ROOT": "/x"})
    assert out.returncode == 0 and "\nimage yes\n" not in out.stdout


VARIANTS = [a for a in ("mawk", "gawk", "original-awk", "busybox") if shutil.which(a)]


@as_root
@pytest.mark.parametrize("awk", VARIANTS)
def test_every_awk_gives_the_same_answer_under_a_root(root, awk, tmp_path):
    # lib.sh puts /usr/local/bin before /usr/bin: there, in a mount namespace of our own, "awk" is this one
    local = tmp_path / "local"
    local.mkdir()
    (local / "awk").symlink_to(shutil.which(awk) or awk)
    setup = 'mount --bind "$L" /usr/local/bin && exec sh -c "$S"'
    env = {"PATH": os.environ["PATH"], "L": str(local), "S": command(root)}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, want = gather(root)
    got = p.parse_snapshot(proc.stdout.splitlines())
    assert (got.files, got.blacklists, got.tools, got.refs) == (want.files, want.blacklists, want.tools, want.refs)
    assert {k: v.modules for k, v in got.initrds.items()} == {k: v.modules for k, v in want.initrds.items()}
    assert got.kernels[K].closures == want.kernels[K].closures and got.fingerprint == want.fingerprint


# --- the lists and limits are Python's ----------------------------------------------------------


def test_the_scripts_get_pythons_lists_and_limits():
    got = dict(line.split("=", 1) for line in hostside.SHELL_CONSTANTS.splitlines())
    got = {k: shlex.split(v)[0] for k, v in got.items()}
    h = hostside
    assert got == {"KVM_DUMPS": " ".join(h.DUMPED), "KVM_MODPROBE_DIRS": " ".join(h.MODPROBE_DIRS),
                   "KVM_MODPROBE_CONFS": " ".join(h.MODPROBE_CONFS),
                   "KVM_DECLARATIONS": " ".join(h.CONFIG_PATHS.values()), "KVM_MAGIC_BYTES": str(h.MAGIC_BYTES),
                   "KVM_FP_MAX": str(h.FINGERPRINT_MAX), "KVM_NETGEN": " ".join(h.NET_GENERATORS)}  # fmt: skip
    for script in (hostside.GATHER, hostside.REBUILD, hostside.WRITE, hostside.UNBLACKLIST, hostside.LIB):
        assert script.startswith(hostside.SHELL_CONSTANTS)
    assert p.FINGERPRINT_MAX == hostside.FINGERPRINT_MAX and p.DUMPED_FILES is hostside.DUMPED_FILES
    assert all(p.DUMPED_FILES.match(f) for f in hostside.CONFIG_PATHS.values())  # every declaration is sent
    assert all(p.DUMPED_FILES.match(f) for f in [*hostside.RELEASE_FILES, *hostside.REPORTED_BOOT_FILES,
                                                  *hostside.OTHER_LOADERS])  # fmt: skip
    assert all(p.MODPROBE_FILE.match(f"{d}/x.conf") for d in hostside.MODPROBE_DIRS)
    assert max(map(len, hostside.INITRD_MAGIC)) == 2 * hostside.MAGIC_BYTES


def test_the_changes_forget_old_copies_beside_the_declarations_python_names(tmp_path):
    # lock.sh kvm_stale: older versions kept FILE.kvm-drivers.prev beside each declaration (KVM_DECLARATIONS)
    decl = [tmp_path / "modules", tmp_path / "90-kvm-drivers.conf"]
    for f in decl:
        (tmp_path / f"{f.name}.kvm-drivers.prev").write_text("old\n")
    (tmp_path / "other.kvm-drivers.prev").write_text("not ours\n")
    (tmp_path / "rollback.aaaa").mkdir()
    script = hostside.LIB + 'KVM_STATE=$1; KVM_DECLARATIONS="$2 $3"; kvm_stale aaaa'
    subprocess.run(["sh", "-c", script, "t", str(tmp_path), *map(str, decl)], check=True)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["other.kvm-drivers.prev", "rollback.aaaa"]


def answer_with(root: Path, **values: str) -> p.Snapshot:
    """The answer of gather.sh given other lists or limits than Python's."""
    text = hostside.SHELL_CONSTANTS
    for name, value in values.items():
        text = re.sub(f"^{name}=.*$", f"{name}={shlex.quote(value)}", text, flags=re.M)
    script = text + hostside.GATHER[len(hostside.SHELL_CONSTANTS) :]
    return p.parse_snapshot(run(command(root, script=script)).splitlines())


def test_gather_uses_the_limits_and_lists_it_is_given(root):
    out, snap = gather(root)
    assert snap.fingerprint and "/boot/grub/grubenv" in snap.files
    short = answer_with(root, KVM_FP_MAX=str(len(snap.fingerprint) - 1))
    assert short.fingerprint == "" and short.complete
    few = answer_with(root, KVM_DUMPS="/etc/debian_version /boot/efi/EFI/*/grub.cfg")
    assert list(few.files) == ["/etc/debian_version", "/boot/efi/EFI/debian/grub.cfg"]
    assert answer_with(root, KVM_MAGIC_BYTES="2").initrds[f"/boot/initrd.img-{K}"].magic == "1f8b"
    # the directories' order is the precedence, on the host and in its initrds (lib.sh KVM_CONF_FILES)
    (root / "usr/lib/modprobe.d/x.conf").write_text("blacklist virtio_ring\n")  # hidden by the initrd's etc/...x.conf
    order = " ".join(reversed(hostside.MODPROBE_DIRS))
    back = answer_with(root, KVM_MODPROBE_DIRS=order)
    files = {b["file"] for b in back.blacklists}
    assert "/usr/lib/modprobe.d/virtio.conf" in files and "/etc/modprobe.d/virtio.conf" not in files
    image = back.initrds[f"/boot/initrd.img-{K}"]
    assert image.conf_read == 1 and image.blocks  # the image's etc/modprobe.d/x.conf is still read
    assert "/usr/lib/modprobe.d/x.conf" in files
    none = answer_with(root, KVM_MODPROBE_DIRS="", KVM_MODPROBE_CONFS="")
    assert none.blacklists == [] and none.initrds[f"/boot/initrd.img-{K}"].conf_read == 0


# --- KVM_ROOT=/: the answer it always was ------------------------------------------------------

BEFORE = "3386e35"  # the last commit of gather.sh before it was split into functions (issue 19)


def before_command(known: list[str] | None = None, seen: str = "") -> str | None:
    """The gather command as it was at BEFORE (None without that commit's text at hand)."""
    top = Path(__file__).parent.parent
    texts = []
    for name in ("lib.sh", "gather.sh"):
        proc = subprocess.run(["git", "-C", str(top), "show", f"{BEFORE}:hostside/{name}"], capture_output=True,
                              text=True)  # fmt: skip
        if proc.returncode:
            return None
        texts.append(proc.stdout)
    script = hostside._compact("".join(texts))
    return StringCommand("set", "--", QuoteString(hostside.LISTER), QuoteString(" ".join(known or [])),
                         QuoteString(seen), QuoteString(" ".join(FALLBACK_INITRDS)), str(kd.OUTPUT_CAP),
                         *[QuoteString(d) for d in WANTED], ";", script).get_raw_value()  # fmt: skip


ISSUE_20 = re.compile("^(?:" + "|".join(re.escape(f).replace(r"\*", "[^/]*") for f in hostside.BOOT_PATH_FILES) + ")$")


# what only a running system says (a chroot is one), and which lister ran
LIVE_ONLY = r"^(uname|uid|bootmount|bootfree|mount|swap|uuid|efi) .*\n|^image yes\n|^lister python\n"


def steady(out: str) -> str:
    """The answer but for /boot's free space (other programs write meanwhile), and without what was
    added to it after BEFORE (issue 20: the disks section, the boot-path files, Xen kernel options).
    """
    kept, skip = [], False
    for line in out.splitlines(keepends=True):
        if line.startswith("@@KVM "):
            words = line.split()
            skip = words[1] == "disks" or (words[1] in ("file", "unreadable") and len(words) == 3
                                           and bool(ISSUE_20.match(words[2])))  # fmt: skip
        if not skip and not re.match(r"^(?:# )?CONFIG_X86(?:_64)?_XEN[= ]", line):
            kept.append(line)
    out = re.sub(r"^bootfree [0-9]*$", "bootfree N", "".join(kept), flags=re.M)
    return re.sub(r"^@@KVM (fingerprint|unchanged) .*$", r"@@KVM \1 FP", out, flags=re.M)  # it stats the new files too


@pytest.mark.skipif(not shutil.which("git") or before_command() is None, reason=f"no git history ({BEFORE})")
@pytest.mark.parametrize("shell", SHELLS)
def test_default_root_answer_on_this_machine_is_the_one_before_the_split(shell):
    now = run(command(), shell)
    assert steady(now) == steady(run(before_command(), shell))  # type: ignore[arg-type]
    snap = p.parse_snapshot(now.splitlines())
    assert snap.complete and not snap.problems and snap.disks["mounts"]  # "mount / /dev/vda" is well formed


# This machine's /usr bound on the tree's, read-only, but for its os-release: the tree's own (the
# image's has no nanoseconds in its times: no fingerprint then).
USR = ('mount --bind /usr "$R/usr" && mount -o remount,bind,ro "$R/usr"'
       ' && mount --bind "$R/.os-release" "$R/usr/lib/os-release"')  # fmt: skip


def chrooted(root: Path, cmd: str) -> str:
    """cmd run by sh chrooted into root (USR), in a mount namespace of its own."""
    setup = USR + ' && mount --bind /dev/null "$R/dev/null" && mount -t proc proc "$R/proc"'
    setup += ' && exec chroot "$R" sh -c "$S"'
    env = {"R": str(root), "S": cmd, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rooted(root: Path, cmd: str) -> str:
    """cmd (KVM_ROOT=root) run by sh, with USR as chrooted() has it."""
    setup = USR + ' && exec sh -c "$S"'
    env = {"R": str(root), "S": cmd, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def lay_tree(tmp_path: Path) -> Path:
    """tree() laid over a root a chroot can run sh, awk, stat and python3 in (this machine's /usr)."""
    base = fake_root(tmp_path)  # its /lib/modules/K, /boot/vmlinuz-K are kept
    built = tree(tmp_path / "t")
    for path in sorted(built.rglob("*")):
        rel = path.relative_to(built)
        if rel.parts[0] in ("usr", "bin", "sbin", "proc") or (base / rel).is_symlink():
            continue
        if str(rel) == "boot/grub/custom.cfg":  # KVM_ROOT refuses its target (not a plain name): a chroot reads it
            continue
        if path.is_symlink():
            (base / rel).unlink(missing_ok=True)
            (base / rel).symlink_to(os.readlink(path))
        elif path.is_dir():
            (base / rel).mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy(path, base / rel)
    shutil.copy(built / "usr/lib/os-release", base / ".os-release")
    return base


@pytest.fixture
def chroot_tree(tmp_path):
    return lay_tree(tmp_path)


@as_root
def test_default_root_answer_in_a_chroot_is_the_one_before_the_split_and_the_one_kvm_root_gives(chroot_tree):
    now = chrooted(chroot_tree, command())
    snap = p.parse_snapshot(now.splitlines())
    assert snap.complete and snap.fingerprint and snap.initrds and snap.kimages and snap.blacklists
    if before_command() is not None:
        assert steady(now) == steady(chrooted(chroot_tree, before_command()))  # type: ignore[arg-type]
    keys = [line[4:] for line in now.splitlines() if line.startswith("key ")]
    warm = chrooted(chroot_tree, command(known=keys, seen=snap.fingerprint))
    assert warm.endswith(f"@@KVM unchanged {snap.fingerprint}\n@@KVM end\n")
    if before_command() is not None:  # each script warm with its own cold answer's keys and fingerprint
        was = p.parse_snapshot(chrooted(chroot_tree, before_command()).splitlines())  # type: ignore[arg-type]
        was_keys = [line[4:] for line in chrooted(chroot_tree, before_command()).splitlines()  # type: ignore
                    if line.startswith("key ")]  # fmt: skip
        assert steady(warm) == steady(chrooted(chroot_tree, before_command(was_keys, was.fingerprint)))  # type: ignore

    def same(out: str) -> str:  # but what only a running system says (a chroot is one), and which lister ran
        out = re.sub(LIVE_ONLY, "", out, flags=re.M)
        return out

    under = rooted(chroot_tree, command(chroot_tree))
    assert same(under) == same(now)  # fingerprint included: the same files, by the same names


def _lab_tree() -> Path | None:
    """A Debian tree the lab keeps (tests/lab/bases.py), with kernels and initrds, if one is there."""
    for name in ("bookworm-2k-itools", "bookworm-itools", "bookworm-2k-dracut"):
        found = Path("/var/cache/kvm-drivers-lab", name)
        if (found / "bin/sh").exists() and list(found.glob("boot/initrd.img-*")):
            return found
    return None


@as_root
@pytest.mark.skipif(_lab_tree() is None, reason="no lab base tree here")
def test_kvm_root_on_a_real_debian_tree_answers_as_a_chroot_into_it():
    # read only: the tree's own programs in the chroot (no mount), this machine's under KVM_ROOT
    lab = _lab_tree()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    inside = subprocess.run(["chroot", str(lab), "sh", "-c", command()], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    outside = run(command(lab))

    def same(out: str) -> str:  # but what only a running system says, and which lister ran
        return re.sub(LIVE_ONLY, "", out, flags=re.M)

    assert same(outside) == same(inside.stdout)
    snap = p.parse_snapshot(outside.splitlines())
    assert snap.complete and snap.fingerprint and snap.initrds and all(i.modules for i in snap.initrds.values())
