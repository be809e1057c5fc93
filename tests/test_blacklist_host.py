"""Blacklists on a host, for real: gather.sh, unblacklist.sh and rebuild.sh run by sh in a fake root
(a private mount namespace: this machine's /usr, read-only, and a root of our own for /etc, /boot,
/lib/modules...), on initrds built here with cpio (newc) and gzip. Nothing of this machine's
/etc, /boot or /run is read or written.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_drivers import hostside
from kvm_drivers.facts import blacklist as bl
from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.wire import Snapshot, parse_snapshot

KVER = "6.1.0-kvm"
WANTED = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]


def _can_fake_root() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("chroot"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = [pytest.mark.lab,  # root and mount namespaces: not in plain pytest (make test runs it)
              pytest.mark.skipif(not _can_fake_root(), reason="needs root and mount namespaces (unshare -m)")]


def fake_root(base: Path) -> Path:
    """A root of our own: /usr is this machine's (bound read-only when run), the rest is ours."""
    root = base / "root"
    for d in ("usr", "etc/modprobe.d", "boot", f"lib/modules/{KVER}", "lib/modprobe.d", "dev", "proc", "run",
              "tmp", "var/log", "fakebin"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib32", "lib64", "libx32"):
        if Path("/", name).is_symlink():
            (root / name).symlink_to(os.readlink(Path("/", name)).lstrip("/"))
    for arch in Path("/usr/lib").glob("*-linux-gnu*"):  # the dynamic loader looks in /lib/<triplet>
        (root / "lib" / arch.name).symlink_to(f"../usr/lib/{arch.name}")
    (root / "dev/null").touch()
    (root / "tmp").chmod(0o1777)
    if Path("/etc/ld.so.cache").exists():
        shutil.copy("/etc/ld.so.cache", root / "etc/ld.so.cache")
    if Path("/etc/alternatives").is_dir():  # Debian's /usr/bin/awk -> /etc/alternatives/awk -> mawk
        shutil.copytree("/etc/alternatives", root / "etc/alternatives", symlinks=True)
    d = root / "lib/modules" / KVER
    (d / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    (d / "modules.dep").write_text(
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
        "kernel/net/core/failover.ko:\n"
    )
    (root / f"boot/vmlinuz-{KVER}").write_bytes(b"\0" * 1024)
    return root


def run(root: Path, script: str, *args: str, path: str = "", awk: str = "", shell: str = "/bin/sh"
        ) -> subprocess.CompletedProcess:  # fmt: skip
    """script run by shell (as sh -c SCRIPT sh ARGS...) chrooted into root, in a mount namespace of its
    own; with awk (a program of this machine), "awk" is that one (first in the PATH lib.sh sets).
    """
    local = ""
    if awk:
        (root / "fakelocal").mkdir(exist_ok=True)
        (root / "fakelocal/awk").unlink(missing_ok=True)
        (root / "fakelocal/awk").symlink_to(shutil.which(awk) or awk)
        local = ' && mount --bind "$R/fakelocal" "$R/usr/local/bin"'
    setup = ('mount --bind /usr "$R/usr" && mount -o remount,bind,ro "$R/usr" && mount --bind /dev/null "$R/dev/null"'
             f' && mount -t proc proc "$R/proc"{local} && exec chroot "$R" {shell} -c "$S" sh "$@"')  # fmt: skip
    env = {"R": str(root), "S": script, "PATH": f"{path}:/usr/sbin:/usr/bin:/sbin:/bin".lstrip(":"), "LC_ALL": "C"}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup, "sh", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def initrd(files: dict[str, str | bytes], links: dict[str, str] | None = None) -> bytes:
    """A gzip-compressed newc initrd, archived by cpio itself when it is installed."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        for name, data in files.items():
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        for name, target in (links or {}).items():
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).symlink_to(target)
        names = sorted(str(x.relative_to(top)) for x in top.rglob("*"))
        if shutil.which("cpio"):
            archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=("\n".join(names) + "\n").encode(),
                                     cwd=top, capture_output=True, check=True).stdout  # fmt: skip
        else:  # pragma: no cover - cpio is on every machine the suite runs on
            from tests.test_initrd_ls import newc

            archive = newc({n: (top / n).read_bytes() for n in names if (top / n).is_file()})
    return gzip.compress(archive)


MODS = f"usr/lib/modules/{KVER}/kernel/drivers"
IMAGE_FILES = {
    f"{MODS}/block/virtio_blk.ko": "x",
    f"{MODS}/virtio/virtio_ring.ko": "x",
    f"{MODS}/virtio/virtio_pci.ko": "x",
    f"{MODS}/net/virtio_net.ko": "x",
    f"{MODS}/net/net_failover.ko": "x",
    "etc/modprobe.d/x.conf": "# made by an image builder\ninstall virtio_blk /bin/false\n",
    "usr/lib/modprobe.d/x.conf": "blacklist virtio_blk\n",  # overridden by etc/modprobe.d/x.conf
    "usr/lib/modprobe.d/net.conf": "install virtio_net \\\n    /bin/true\ninstall net_failover :\n",
    "usr/lib/modprobe.d/ok.conf": "install virtio_pci /sbin/modprobe --ignore-install virtio_pci $CMDLINE_OPTS\n",
    "etc/modprobe.d/old.conf.rpmsave": "blacklist virtio_pci\n",  # a backup: read by no one
    "etc/cmdline.d/10.conf": "rd.driver.blacklist=virtio_pci rd.retry=10\n",
    "etc/cmdline": "quiet\n",
}
HOST_FILES = {
    "etc/modprobe.conf": "alias eth0 virtio_net\ninstall virtio_pci :\n",  # CentOS 6 / SLES 11
    "etc/modprobe.d/virtio.conf": "# keep virtio off\ninstall virtio_blk \\\n    /bin/false\nblacklist virtio-net\n"
                                  "install net_failover /bin/true\n",  # fmt: skip
    "etc/modprobe.d/legacy": "alias virtio_scsi off\n",  # no .conf: module-init-tools reads it
    "etc/modprobe.d/virtio.conf.rpmnew": "blacklist virtio_pci\n",
    "lib/modprobe.d/virtio.conf": "blacklist virtio_ring\n",  # overridden by /etc/modprobe.d/virtio.conf
    "lib/modprobe.d/dist.conf": "install virtio_scsi /sbin/modprobe --ignore-install virtio_scsi $CMDLINE_OPTS\n",
}


def gather(root: Path, path: str = "", **how: str) -> Snapshot:
    proc = run(root, kd.gather_command(WANTED).get_raw_value(), path=path, **how)
    assert proc.returncode == 0, proc.stderr
    snap = parse_snapshot(proc.stdout.splitlines())
    assert snap.complete and not snap.problems, (snap.problems, proc.stdout[-2000:])
    return snap


@pytest.fixture
def root(tmp_path):
    root = fake_root(tmp_path)
    for name, text in HOST_FILES.items():
        (root / name).write_text(text)
    (root / f"boot/initrd.img-{KVER}").write_bytes(initrd(IMAGE_FILES, {"etc/modprobe.d/masked.conf": "/dev/null"}))
    return root


def test_gather_sends_every_blacklist_of_the_host_and_of_the_initrd(root):
    snap = gather(root)
    host = {(b["file"], b["line"], b["driver"], b["text"]) for b in snap.blacklists}
    assert ("/etc/modprobe.conf", "2", "virtio_pci", "install virtio_pci :") in host
    assert ("/etc/modprobe.d/virtio.conf", "2", "virtio_blk", "install virtio_blk     /bin/false") in host
    assert ("/etc/modprobe.d/virtio.conf", "4", "virtio_net", "blacklist virtio-net") in host
    # a module virtio_net needs (its closure, from modules.dep) counts too
    assert ("/etc/modprobe.d/virtio.conf", "5", "net_failover", "install net_failover /bin/true") in host
    assert ("/etc/modprobe.d/legacy", "1", "virtio_scsi", "alias virtio_scsi off") in host
    assert not any("rpmnew" in f or f == "/lib/modprobe.d/virtio.conf" for f, *_ in host)
    # sent, and judged harmless: a pass-through install command
    assert ("/lib/modprobe.d/dist.conf", "1", "virtio_scsi",
            "install virtio_scsi /sbin/modprobe --ignore-install virtio_scsi $CMDLINE_OPTS") in host  # fmt: skip
    stopped = {d for d, _ in bl.stops([b["text"] for b in snap.blacklists], WANTED + ["net_failover"])}
    assert stopped == {"virtio_pci", "virtio_blk", "virtio_net", "net_failover", "virtio_scsi"}

    image = snap.initrds[f"/boot/initrd.img-{KVER}"]
    assert image.conf_error == "" and image.conf_read == 6, image  # x, net, ok, masked, cmdline.d/10, cmdline
    blocks = {(b["file"], b["line"], b["driver"], b["text"]) for b in image.blocks}
    assert ("etc/modprobe.d/x.conf", "2", "virtio_blk", "install virtio_blk /bin/false") in blocks
    assert ("usr/lib/modprobe.d/net.conf", "1", "virtio_net", "install virtio_net     /bin/true") in blocks
    assert ("usr/lib/modprobe.d/net.conf", "3", "net_failover", "install net_failover :") in blocks
    assert not any(f == "usr/lib/modprobe.d/x.conf" or "rpmsave" in f for f, *_ in blocks)
    assert image.cmdline == [{"file": "etc/cmdline.d/10.conf", "word": "rd.driver.blacklist=virtio_pci"}]
    assert {d for d, _ in bl.stops([b["text"] for b in image.blocks], WANTED)} == {"virtio_blk", "virtio_net"}
    assert bl.cmdline_stops([c["word"] for c in image.cmdline], WANTED) == [
        ("virtio_pci", "rd.driver.blacklist=virtio_pci")]  # fmt: skip


VARIANTS = [{"awk": a} for a in ("mawk", "gawk", "original-awk") if shutil.which(a)]
if shutil.which("busybox"):
    VARIANTS += [{"awk": "busybox"}, {"shell": "/usr/bin/busybox sh"}]


@pytest.mark.parametrize("how", VARIANTS, ids=lambda how: " ".join(how.values()))
def test_every_awk_and_busybox_sh_give_the_same_answer(root, how):
    def seen(snap: Snapshot) -> tuple:
        image = snap.initrds[f"/boot/initrd.img-{KVER}"]
        key = lambda d: sorted(d.items())  # noqa: E731
        return (sorted(map(key, snap.blacklists)), sorted(map(key, image.blocks)), image.cmdline, image.conf_read,
                image.conf_error, sorted(image.modules))  # fmt: skip

    assert seen(gather(root, **how)) == seen(gather(root))


def test_initrd_whose_files_cannot_be_read_says_so(root):
    # A lister that lists (as lsinitramfs does) an image nothing here can read files from.
    image = root / f"boot/initrd.img-{KVER}"
    image.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    (root / "fakebin/lsinitramfs").write_text(
        "#!/bin/sh\n# stand-in for lsinitramfs: lists what the image would hold\n"
        f"echo {MODS}/block/virtio_blk.ko\necho etc/modprobe.d/x.conf\necho etc/cmdline.d/10.conf\n"
    )
    (root / "fakebin/lsinitramfs").chmod(0o755)
    if shutil.which("lsinitrd"):
        pytest.skip("lsinitrd is installed here: it would be used before the stand-in")
    snap = gather(root, path="/fakebin")
    got = snap.initrds[str(image).replace(str(root), "")]
    assert got.error is None and "virtio_blk" in got.modules
    assert got.conf_read is None and "unreadable initrd" in got.conf_error, got
    assert got.blocks == [] and got.cmdline == []


def test_answer_without_the_initrd_files_is_not_a_clean_bill():
    lines = (Path(__file__).parent / "fixtures/gather-bookworm-itools.txt").read_text().splitlines()
    # as recorded before gather.sh read an initrd's own files (tests/fixtures/README.md)
    snap = parse_snapshot([ln for ln in lines if not ln.startswith("confread ")])
    (image,) = snap.initrds.values()
    assert image.conf_read is None and "does not say" in image.conf_error


def test_unblacklist_comments_out_modprobe_conf_and_continuation_lines(root):
    snap = gather(root)
    for path in ("/etc/modprobe.conf", "/etc/modprobe.d/virtio.conf", "/etc/modprobe.d/legacy"):
        args = [x for b in snap.blacklists if b["file"] == path for x in (b["line"], b["text"])]
        proc = run(root, hostside.UNBLACKLIST, path, "aaaa1111", *args)
        assert proc.returncode == 0, proc.stderr
    text = (root / "etc/modprobe.d/virtio.conf").read_text().splitlines()
    assert text[0] == "# keep virtio off"
    assert all(line.startswith("# disabled by kvm-drivers") for line in text[1:])
    assert text[2] == "# disabled by kvm-drivers (needed to boot on KVM):     /bin/false"
    conf = (root / "etc/modprobe.conf").read_text().splitlines()
    assert conf[0] == "alias eth0 virtio_net" and conf[1].startswith("# disabled by kvm-drivers")
    again = gather(root)
    assert bl.stops([b["text"] for b in again.blacklists], WANTED + ["net_failover"]) == []
    # a line that changed since it was read is not touched
    (root / "etc/modprobe.conf").write_text("install virtio_pci /bin/true\n")
    proc = run(root, hostside.UNBLACKLIST, "/etc/modprobe.conf", "bbbb2222", "1", "install virtio_pci :")
    assert proc.returncode == 1 and "changed since it was read" in proc.stderr
    # nor a line that is the continuation of another
    (root / "etc/modprobe.conf").write_text("alias \\\ninstall virtio_pci :\n")
    proc = run(root, hostside.UNBLACKLIST, "/etc/modprobe.conf", "cccc3333", "2", "install virtio_pci :")
    assert proc.returncode == 1 and (root / "etc/modprobe.conf").read_text() == "alias \\\ninstall virtio_pci :\n"


def rebuild(root: Path, new_image: bytes, *required: str) -> subprocess.CompletedProcess:
    """rebuild.sh with a stand-in mkinitramfs whose image is new_image."""
    (root / "boot/prepared.img").write_bytes(new_image)
    (root / "fakebin/mkinitramfs").write_text(
        "#!/bin/sh\n# stand-in for mkinitramfs -o IMAGE KVER: writes the prepared image\ncp /boot/prepared.img \"$2\"\n"
    )
    (root / "fakebin/mkinitramfs").chmod(0o755)
    args = [hostside.LISTER, "initramfs-tools", f"/boot/initrd.img-{KVER}", KVER, "dddd4444", "1", "1",
            *required]  # fmt: skip
    return run(root, hostside.REBUILD, *args, path="/fakebin")


@pytest.mark.skipif(bool(shutil.which("mkinitramfs")), reason="a real mkinitramfs would be used before the stand-in")
def test_rebuilt_image_that_still_carries_a_blacklist_is_refused(root):
    old = (root / f"boot/initrd.img-{KVER}").read_bytes()
    required = ["virtio_blk", "virtio_ring", "virtio_pci"]
    clean = {k: v for k, v in IMAGE_FILES.items() if "modprobe.d" not in k and "cmdline" not in k}
    for files, why in (
        ({**clean, "etc/modprobe.d/x.conf": "install virtio_blk /bin/false\n"}, "install virtio_blk /bin/false"),
        ({**clean, "etc/modprobe.conf": "install virtio_pci :\n"}, "install virtio_pci :"),
        ({**clean, "lib/modprobe.d/y.conf": "alias virtio_ring off\n"}, "alias virtio_ring off"),
        ({**clean, "etc/cmdline.d/10.conf": "rd.driver.blacklist=virtio_pci\n"}, "rd.driver.blacklist=virtio_pci"),
        ({**clean, "etc/modprobe.d/z.conf": "install virtio_blk \\\n  /bin/true\n"}, "install virtio_blk   /bin/true"),
    ):
        proc = rebuild(root, initrd(files), *required)
        assert proc.returncode == 1, proc.stdout
        assert "still stops a required module" in proc.stderr and why in proc.stderr, proc.stderr
        assert (root / f"boot/initrd.img-{KVER}").read_bytes() == old  # left unchanged
        assert not (root / f"boot/initrd.img-{KVER}.kvm-drivers.new").exists()
    # a harmless install line, a blacklist of another module: the new image goes in
    fine = {**clean, "etc/modprobe.d/x.conf": "install virtio_pci /sbin/modprobe --ignore-install virtio_pci\n"
            "blacklist floppy\n"}  # fmt: skip
    proc = rebuild(root, initrd(fine), *required)
    assert proc.returncode == 0, proc.stderr
    assert (root / f"boot/initrd.img-{KVER}").read_bytes() == (root / "boot/prepared.img").read_bytes()


@pytest.mark.skipif(bool(shutil.which("mkinitramfs")), reason="a real mkinitramfs would be used before the stand-in")
def test_rebuilt_image_whose_files_cannot_be_read_is_refused(root):
    old = (root / f"boot/initrd.img-{KVER}").read_bytes()
    image = initrd({f"{MODS}/block/virtio_blk.ko": "x", "etc/modprobe.d/x.conf": "x" * (2 * 1024 * 1024)})
    proc = rebuild(root, image, "virtio_blk")  # the Python lister prints no file over 1 MiB
    if shutil.which("lsinitrd"):
        pytest.skip("lsinitrd is installed here: it reads the file the lister leaves out")
    assert proc.returncode == 1 and "cannot read the module configuration" in proc.stderr, proc.stderr
    assert (root / f"boot/initrd.img-{KVER}").read_bytes() == old
