"""rebuild.sh's backup and log, and the rollback of modprobe.d edits (issue 18), run for real (sh)
on a fake host root: each script runs in a private mount namespace where /boot, /etc/modprobe.d,
/usr/lib/modprobe.d, /var/log, /run/kvm-drivers and /usr/local/sbin are this test's temporary
directories (bind mounts seen by that script only). /usr/local/sbin comes first in the scripts'
PATH: it holds STAND-INS for the initrd generator (``dracut``: copies a prepared image) and, where
a test says so, for ``cp``. Nothing of this machine's own /boot, /etc, /var/log or /run is touched.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kvm_drivers import hostside
from tests.test_initrd_ls import newc

pytestmark = [pytest.mark.lab,  # root and mount namespaces: not in plain pytest (make test runs it)
              pytest.mark.skipif(os.geteuid() != 0, reason="the host scripts run as root, in mount namespaces")]

KVER = "6.1.0-50-amd64"
IMG = f"/boot/initrd.img-{KVER}"
MODS = f"usr/lib/modules/{KVER}/kernel/drivers"
PLACES = {"/boot": "boot", "/etc/modprobe.d": "etc-modprobe.d", "/usr/lib/modprobe.d": "usr-lib-modprobe.d",
          "/var/log": "var-log", "/run/kvm-drivers": "state", "/usr/local/sbin": "sbin"}  # fmt: skip


def image(*modules: str, filler: bytes = b"") -> bytes:
    """An uncompressed initrd holding these modules (and filler, to tell images apart)."""
    files = {"init": b"#!/bin/sh\n" + filler}
    files.update({f"{MODS}/{m}.ko": m.encode() * 40 for m in modules})
    return newc(files)


ORIGINAL = image("ext4", filler=b"# the image from before kvm-drivers\n" + os.urandom(20000))
NEW = image("ext4", "virtio_blk", filler=b"# built by kvm-drivers\n")


class Host:
    """A fake host root (see the module docstring)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        for sub in PLACES.values():
            (tmp / sub).mkdir(exist_ok=True)
        (tmp / "state").chmod(0o700)
        self.dracut(NEW)

    def __truediv__(self, path: str) -> Path:
        """This fake host's file for a host path: host / "/boot/x"."""
        for place, sub in PLACES.items():
            if path == place or path.startswith(place + "/"):
                return self.tmp / sub / path[len(place) + 1 :]
        raise ValueError(path)

    def dracut(self, built: bytes | None, fill: bool = False) -> None:
        """STAND-IN dracut: writes built as the new image (None: fails); fill: then fills /boot."""
        (self.tmp / "built.img").write_bytes(built or b"")
        body = 'echo "dracut stand-in: simulated failure" >&2; exit 1' if built is None else (
            f'cat {shlex.quote(str(self.tmp / "built.img"))} > "$2" || exit 1'
            + ("; cat /dev/zero > /boot/zz-filler 2>/dev/null; true" if fill else ""))  # fmt: skip
        self.tool("dracut", f"#!/bin/sh\n# STAND-IN for dracut -f OUT KVER (tests only)\n{body}\n")

    def tool(self, name: str, text: str) -> None:
        path = self.tmp / "sbin" / name
        path.write_text(text)
        path.chmod(0o755)

    def command(self, script: str, *args: str) -> list[str]:
        binds = [f"mount --bind {shlex.quote(str(self.tmp / sub))} {place}" for place, sub in PLACES.items()]
        inner = " && ".join(binds) + ' && s=$1 && shift && exec sh -c "$s" kvm-test "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "ns", script, *args]

    def run(self, script: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(script, *args), capture_output=True, text=True, timeout=120, **kw)

    def rebuild_command(self, run: str = "", last: bool = True, img: str = IMG) -> list[str]:
        """rebuild.sh, forced (the images here always lack nothing), requiring virtio_blk."""
        return self.command(hostside.REBUILD, hostside.LISTER, "dracut", img, KVER, run, "1" if last else "0", "1",
                            "virtio_blk")  # fmt: skip

    def rebuild(self, run: str = "", last: bool = True, img: str = IMG) -> subprocess.CompletedProcess:
        return subprocess.run(self.rebuild_command(run, last, img), capture_output=True, text=True, timeout=120)

    def unblacklist(self, path: str, run: str, *lines: str):
        return self.run(hostside.UNBLACKLIST, path, run, *lines)

    def write(self, path: str, content: str, old: str | None, run: str):
        return self.run(hostside.WRITE, path, content, "0" if old is None else "1", old or "", run)

    def boot(self) -> list[str]:
        return sorted(p.name for p in (self.tmp / "boot").iterdir())


@pytest.fixture
def host(tmp_path):
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here")
    return Host(tmp_path)


def bak(h: Host) -> Path:
    return h / (IMG + ".kvm-drivers.bak")


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# --- 1. backups: written complete, trusted only when verified ---------------------------------


def test_backup_is_complete_and_vouched_for(host):
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    assert (host / IMG).read_bytes() == NEW
    assert bak(host).read_bytes() == ORIGINAL
    assert host.boot() == ["initrd.img-6.1.0-50-amd64", "initrd.img-6.1.0-50-amd64.kvm-drivers.bak",
                           "initrd.img-6.1.0-50-amd64.kvm-drivers.bak.sum"]  # fmt: skip
    cksum = subprocess.run(["cksum"], input=ORIGINAL, capture_output=True).stdout.decode().strip()
    assert (host / (IMG + ".kvm-drivers.bak.sum")).read_text().splitlines()[0] == f"bak {cksum}"


def test_truncated_backup_left_by_a_cut_copy_is_replaced_before_the_image(host):
    # Issue 18: a backup cp cut short left a truncated .bak; the next run took no new backup and
    # replaced the original: the only copy left was the truncated one.
    (host / IMG).write_bytes(ORIGINAL)
    bak(host).write_bytes(ORIGINAL[: len(ORIGINAL) // 2])  # as an older version's cut cp left it
    out = ok(host.rebuild())
    assert bak(host).read_bytes() == ORIGINAL, out.stderr
    assert (host / IMG).read_bytes() == NEW


def test_backup_whose_recorded_checksum_no_longer_matches_is_not_trusted(host):
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    damaged = bytearray(ORIGINAL)
    damaged[1000] ^= 0xFF  # same size, one byte off
    bak(host).write_bytes(bytes(damaged))
    second = image("ext4", "virtio_blk", filler=b"# a second build\n")
    host.dracut(second)
    ok(host.rebuild())
    assert bak(host).read_bytes() == NEW  # a complete copy of the image it replaced, not the damaged one
    assert (host / IMG).read_bytes() == second


def test_verified_backup_of_the_image_from_before_kvm_drivers_is_kept_through_its_rebuilds(host):
    # "An old .bak stops every later backup": now the .bak is the last image kvm-drivers did not
    # build. kvm-drivers' own rebuilds keep it; an image rebuilt by anything else is backed up anew.
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    host.dracut(image("ext4", "virtio_blk", filler=b"# a second build\n"))
    ok(host.rebuild())
    assert bak(host).read_bytes() == ORIGINAL  # the image was ours: the pre-kvm-drivers copy stays
    foreign = image("ext4", "virtio_blk", filler=b"# update-initramfs after a package update\n")
    (host / IMG).write_bytes(foreign)
    ok(host.rebuild())
    assert bak(host).read_bytes() == foreign  # rebuilt by something else since: that is the original now


def test_no_room_for_a_complete_backup_leaves_the_image_untouched(host, tmp_path):
    # ENOSPC for real: /boot is a 12 MiB tmpfs that the (stand-in) generator fills after writing
    # its image, as another writer would between the free-space check and the backup.
    boot = tmp_path / "boot"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=755", "tmpfs", str(boot)], check=True)
    try:
        (host / IMG).write_bytes(ORIGINAL)
        stale = bak(host)
        stale.write_bytes(b"\x1f\x8b truncated")  # an untrusted backup: it must be replaced first
        host.dracut(NEW, fill=True)
        proc = host.rebuild()
        assert proc.returncode == 1
        assert f"cannot back up {IMG}" in proc.stderr and "No space left on device" in proc.stderr, proc.stderr
        assert f"{IMG} left unchanged" in proc.stderr
        assert (host / IMG).read_bytes() == ORIGINAL
        assert stale.read_bytes() == b"\x1f\x8b truncated"  # nothing replaced without a complete copy
        (host / "/boot/zz-filler").unlink()
        assert host.boot() == ["initrd.img-6.1.0-50-amd64", "initrd.img-6.1.0-50-amd64.kvm-drivers.bak"]
        host.dracut(NEW)
        ok(host.rebuild())  # room again: the next run backs up, then replaces
        assert bak(host).read_bytes() == ORIGINAL and (host / IMG).read_bytes() == NEW
    finally:
        subprocess.run(["umount", "-l", str(boot)], check=False)


def test_run_killed_mid_backup_leaves_the_original_and_the_next_run_backs_it_up(host):
    # A STAND-IN cp: for the backup only, it copies half the image, says so, and hangs until killed.
    flag = host.tmp / "half-copied"
    host.tool("cp", f"""#!/bin/sh
# STAND-IN for cp (tests only): the backup copy is cut off half way; anything else is the real cp
case "$3" in
    *.kvm-drivers.bak|*.kvm-drivers.bak.part) head -c {len(ORIGINAL) // 2} "$2" > "$3"; touch {flag}; exec sleep 60 ;;
esac
exec /bin/cp "$@"
""")
    (host / IMG).write_bytes(ORIGINAL)
    proc = subprocess.Popen(host.rebuild_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run, cut off mid-backup
    proc.wait()
    assert (host / IMG).read_bytes() == ORIGINAL
    assert not bak(host).exists()  # the half copy only ever had a temporary name
    (host.tmp / "sbin/cp").unlink()
    ok(host.rebuild())
    assert bak(host).read_bytes() == ORIGINAL and (host / IMG).read_bytes() == NEW
    assert not [n for n in host.boot() if n.endswith((".part", ".new"))]


def test_backup_and_sidecar_of_a_removed_initrd_are_removed(host):
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    gone = "/boot/initrd.img-5.10.0-9-amd64"
    (host / gone).write_bytes(ORIGINAL)
    ok(host.rebuild(img=gone))
    (host / gone).unlink()
    ok(host.rebuild())
    assert not [n for n in host.boot() if "5.10.0-9" in n]


# --- 2. the log: in the root-only state directory, no link followed ---------------------------


def test_log_is_in_the_state_directory_and_planted_links_are_never_followed(host):
    # Issue 18: rebuild.sh tested /var/log/kvm-drivers.log, then appended to it: whoever may write
    # /var/log (Ubuntu: root:syslog 0775) could swap in a link in that gap.
    victim = host.tmp / "victim"
    victim.write_text("root:secret\n")
    (host / "/var/log/kvm-drivers.log").symlink_to(victim)
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    log = host / "/run/kvm-drivers/log"
    assert not log.is_symlink() and len(log.read_text().splitlines()) == 1
    assert f"rebuilt {IMG} for kernel {KVER}" in log.read_text()
    assert victim.read_text() == "root:secret\n"
    # a link in the state directory itself (only root could plant it): removed, not followed
    log.unlink()
    log.symlink_to(victim)
    host.dracut(image("ext4", "virtio_blk", filler=b"# a second build\n"))
    ok(host.rebuild())
    assert victim.read_text() == "root:secret\n"
    assert not log.is_symlink() and f"rebuilt {IMG}" in log.read_text()
    assert (host / "/var/log/kvm-drivers.log").is_symlink()  # the old path: never opened at all
    assert sorted(p.name for p in (host / "/run/kvm-drivers").iterdir()) == ["lock", "log"]


def test_rebuilds_append_to_the_log_one_line_each(host):
    (host / IMG).write_bytes(ORIGINAL)
    ok(host.rebuild())
    (host / "/run/kvm-drivers/log.out.abcdef").write_text("left by a killed run\n")
    ok(host.rebuild())
    assert len((host / "/run/kvm-drivers/log").read_text().splitlines()) == 2
    assert not (host / "/run/kvm-drivers/log.out.abcdef").exists()


# --- 4. modprobe.d edits roll back with the run -----------------------------------------------

BLACKLIST = "# site policy\nblacklist virtio_blk\noptions loop max_loop=8\n"
VENDOR = "# vendor defaults\nblacklist virtio_blk\ninstall virtio_net /bin/false\n"


def test_failed_rebuild_restores_the_modprobe_d_edit_and_removes_the_override(host):
    # Issue 18: unblacklist.sh kept no rollback state: a forced rebuild that failed left the
    # modprobe.d edit (and the old initrd).
    site, vendor = host / "/etc/modprobe.d/site.conf", host / "/usr/lib/modprobe.d/vendor.conf"
    site.write_text(BLACKLIST)
    site.chmod(0o640)
    vendor.write_text(VENDOR)
    (host / IMG).write_bytes(ORIGINAL)
    run = "0123abcd"
    ok(host.unblacklist("/etc/modprobe.d/site.conf", run, "2", "blacklist virtio_blk"))
    ok(host.unblacklist("/usr/lib/modprobe.d/vendor.conf", run, "2", "blacklist virtio_blk",
                        "3", "install virtio_net /bin/false"))  # fmt: skip
    override = host / "/etc/modprobe.d/vendor.conf"
    assert site.read_text().startswith("# site policy\n# disabled by kvm-drivers") and override.exists()
    host.dracut(None)
    proc = host.rebuild(run=run)
    assert proc.returncode == 1 and "dracut stand-in: simulated failure" in proc.stderr
    assert site.read_bytes() == BLACKLIST.encode() and oct(site.stat().st_mode & 0o777) == "0o640"
    assert not override.exists() and vendor.read_text() == VENDOR
    assert f"restored {'/etc/modprobe.d/site.conf'}" in proc.stderr
    assert "removed /etc/modprobe.d/vendor.conf again" in proc.stderr
    assert sorted(p.name for p in (host / "/etc/modprobe.d").iterdir()) == ["site.conf"]
    assert (host / IMG).read_bytes() == ORIGINAL
    assert not (host / f"/run/kvm-drivers/rollback.{run}").exists()


def test_admin_edit_after_the_unblacklist_is_never_rolled_back(host):
    site = host / "/etc/modprobe.d/site.conf"
    site.write_text(BLACKLIST)
    (host / IMG).write_bytes(ORIGINAL)
    run = "4567cdef"
    ok(host.unblacklist("/etc/modprobe.d/site.conf", run, "2", "blacklist virtio_blk"))
    edited = site.read_text() + "blacklist floppy\n"  # the admin edits it meanwhile
    site.write_text(edited)
    host.dracut(None)
    proc = host.rebuild(run=run)
    assert proc.returncode == 1
    assert site.read_text() == edited
    assert "/etc/modprobe.d/site.conf changed since this run wrote it: not rolled back" in proc.stderr


def test_declaration_and_modprobe_d_edits_of_one_run_roll_back_together(host):
    site = host / "/etc/modprobe.d/site.conf"
    site.write_text(BLACKLIST)
    modules = host.tmp / "modules"  # the declaration (any path: write.sh takes it as given)
    modules.write_text("ext4\n")
    (host / IMG).write_bytes(ORIGINAL)
    run = "89ab0123"
    ok(host.unblacklist("/etc/modprobe.d/site.conf", run, "2", "blacklist virtio_blk"))
    ok(host.write(str(modules), "ext4\nvirtio_blk\n", "ext4\n", run))
    entries = list((host / f"/run/kvm-drivers/rollback.{run}").iterdir())
    assert len(entries) == 2  # one per file
    host.dracut(None)
    assert host.rebuild(run=run).returncode == 1
    assert site.read_text() == BLACKLIST and modules.read_text() == "ext4\n"


def test_state_is_kept_until_the_runs_last_rebuild_succeeds(host):
    site = host / "/etc/modprobe.d/site.conf"
    site.write_text(BLACKLIST)
    other = "/boot/initrd.img-6.1.0-49-amd64"
    (host / IMG).write_bytes(ORIGINAL)
    (host / other).write_bytes(ORIGINAL)
    run = "cdef4567"
    ok(host.unblacklist("/etc/modprobe.d/site.conf", run, "2", "blacklist virtio_blk"))
    ok(host.rebuild(run=run, last=False, img=other))  # the first of two kernels
    assert (host / f"/run/kvm-drivers/rollback.{run}").exists()
    host.dracut(None)
    assert host.rebuild(run=run, last=True).returncode == 1  # the last one fails: all undone
    assert site.read_text() == BLACKLIST
    # a run whose last rebuild succeeds keeps its edits and forgets its rollback state
    run = "0a1b2c3d"
    ok(host.unblacklist("/etc/modprobe.d/site.conf", run, "2", "blacklist virtio_blk"))
    host.dracut(NEW)
    ok(host.rebuild(run=run, last=True))
    assert "# disabled by kvm-drivers" in site.read_text()
    assert not (host / f"/run/kvm-drivers/rollback.{run}").exists()


def test_unblacklist_refuses_a_run_id_that_is_not_plain(host):
    site = host / "/etc/modprobe.d/site.conf"
    site.write_text(BLACKLIST)
    proc = host.unblacklist("/etc/modprobe.d/site.conf", "../../etc", "2", "blacklist virtio_blk")
    assert proc.returncode == 1 and "bad run id" in proc.stderr and site.read_text() == BLACKLIST


def test_backup_names_that_are_not_plain_files_are_never_written_through(host):
    (host / IMG).write_bytes(ORIGINAL)
    victim = host.tmp / "victim"
    victim.write_text("keep\n")
    bak(host).symlink_to(victim)  # a link: removed, the backup written in its place
    ok(host.rebuild())
    assert victim.read_text() == "keep\n" and bak(host).read_bytes() == ORIGINAL and not bak(host).is_symlink()
    bak(host).unlink()
    bak(host).mkdir()  # a directory: mv would move the backup into it
    host.dracut(image("ext4", "virtio_blk", filler=b"# a second build\n"))
    proc = host.rebuild()
    assert proc.returncode == 1 and "is not a regular file" in proc.stderr
    assert (host / IMG).read_bytes() == NEW and list(bak(host).iterdir()) == []
