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
import subprocess
from pathlib import Path

import pytest

import hostside
from tests.test_initrd_ls import newc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the host scripts run as root, in mount namespaces")

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
