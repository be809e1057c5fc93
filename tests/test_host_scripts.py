"""The host-side write, rollback and lock scripts, run for real (sh) on this machine as root,
as they run on a host: compare-then-swap, run-tagged rollback, a lock nobody else can reach.

Each test has its own /run/kvm-drivers (root only, as on a host): a directory of its own bound there in
a private mount namespace, so tests running at the same time never see each other's lock or rollback state,
and this machine's own is never touched.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_drivers import hostside
from kvm_drivers.facts.config_files import norm
from kvm_drivers.facts.wire import RawKernel, _parse_kernel_line

pytestmark = [pytest.mark.lab,  # root: not in plain pytest (make test runs it)
              pytest.mark.skipif(os.geteuid() != 0, reason="the host scripts run as root")]
STATE = Path("/run/kvm-drivers")  # the test's own directory while it runs (own_state)
LIB = hostside.LIB


@pytest.fixture(autouse=True)
def own_state(tmp_path_factory, monkeypatch):
    state = tmp_path_factory.mktemp("state")
    state.chmod(0o700)
    monkeypatch.setattr(sys.modules[__name__], "STATE", state)
    Path("/run/kvm-drivers").mkdir(mode=0o700, exist_ok=True)  # the mount point


def on_host(cmd: list[str]) -> list[str]:
    """cmd run in a private mount namespace whose /run/kvm-drivers is this test's STATE."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /run/kvm-drivers && exec "$@"', str(STATE), *cmd]  # fmt: skip


def write(path: Path, content: str, old: str | None = None, run: str = "", check: bool = True, **env: str):
    """Run the declaration write locally: OLD is what the state gathered (None: no file)."""
    cmd = ["sh", "-c", hostside.WRITE, "kvm-write", str(path), content, "0" if old is None else "1", old or "", run]
    return subprocess.run(on_host(cmd), capture_output=True, text=True, check=check, env={**os.environ, **env})


def kept(run: str) -> dict[str, str | None]:
    """The rollback state of one run on this machine: {path: what it held before (None: no file)}."""
    out = {}
    for entry in sorted((STATE / f"rollback.{run}").glob("*/")):
        if (entry / "written").exists():
            prev = entry / "prev"
            out[(entry / "path").read_text()] = prev.read_text() if prev.exists() else None
    return out


def lib(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(on_host(["sh", "-c", LIB + script, "kvm-test", *args]), capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip


def test_write_keeps_mode_and_a_rollback_copy_tied_to_its_run(tmp_path):
    f = tmp_path / "modules"
    f.write_text("ext4\n")
    f.chmod(0o600)
    write(f, "ext4\nvirtio_blk\n", old="ext4\n", run="aaaa1111")
    assert f.read_text() == "ext4\nvirtio_blk\n"
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert kept("aaaa1111") == {str(f): "ext4\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modules"]  # no temp file, no copy in /etc
    assert oct(STATE.stat().st_mode & 0o777) == "0o700" and STATE.stat().st_uid == 0


def test_edit_made_after_gathering_is_never_overwritten(tmp_path):
    # Medium: an admin edit made while pyinfra waited at its prompt used to be overwritten.
    f = tmp_path / "modules"
    f.write_text("ext4\nadmin_line\n")  # the state was gathered when it held only "ext4"
    proc = write(f, "ext4\nvirtio_blk\n", old="ext4\n", run="bbbb2222", check=False)
    assert proc.returncode == 1 and "changed since its state was gathered" in proc.stderr
    assert f.read_text() == "ext4\nadmin_line\n"
    f.unlink()
    f.write_text("new\n")  # created after a gather that saw no file
    assert write(f, "virtio\n", old=None, check=False).returncode == 1 and f.read_text() == "new\n"


def test_symlinked_config_is_written_through_to_its_target(tmp_path):
    # Low: a symlinked config file used to be replaced by a plain file.
    target = tmp_path / "real-modules"
    target.write_text("ext4\n")
    link = tmp_path / "modules"
    link.symlink_to(target)
    write(link, "ext4\nvirtio\n", old="ext4\n")
    assert link.is_symlink() and target.read_text() == "ext4\nvirtio\n"


def test_rollback_restores_only_what_its_own_run_wrote(tmp_path):
    f = tmp_path / "modules"
    f.write_text("ext4\n")
    write(f, "ext4\nvirtio\n", old="ext4\n", run="cccc3333")
    assert "restored" in lib('kvm_lock && kvm_rollback "$1"', "cccc3333").stderr
    assert f.read_text() == "ext4\n" and not (STATE / "rollback.cccc3333").exists()
    # another run's id: nothing happens
    write(f, "ext4\nvirtio\n", old="ext4\n", run="dddd4444")
    lib('kvm_lock && kvm_rollback "$1"', "eeee5555")
    assert f.read_text() == "ext4\nvirtio\n"


def test_interrupted_run_copy_is_never_restored_over_a_later_edit(tmp_path):
    # High: a copy left by a run killed between write and rebuild was later "restored" over
    # the admin's newer edits by any failed rebuild.
    f = tmp_path / "modules"
    f.write_text("ext4\n")
    write(f, "ext4\nvirtio\n", old="ext4\n", run="ffff6666")  # ...then the run is SIGKILLed
    f.write_text("ext4\nvirtio\nadmin_line\n")  # the admin edits
    out = lib('kvm_lock && kvm_rollback "$1"', "ffff6666")  # even its own rollback keeps the edit
    assert "changed since this run wrote it: not rolled back" in out.stderr
    assert f.read_text() == "ext4\nvirtio\nadmin_line\n"
    write(f, "ext4\nvirtio\nadmin_line\n", old="ext4\nvirtio\nadmin_line\n", run="abab7777")
    # a later run starts by forgetting every other run's state
    write(f, "x\n", old="ext4\nvirtio\nadmin_line\n", run="cdcd8888")
    assert not (STATE / "rollback.abab7777").exists() and (STATE / "rollback.cdcd8888").exists()


def test_run_waiting_for_the_lock_never_rolls_back_the_holder(tmp_path):
    # High: a run that timed out waiting for the lock rolled back the declaration of the run holding it.
    f = tmp_path / "modules"
    f.write_text("ext4\n")
    write(f, "ext4\nvirtio\n", old="ext4\n", run="1234abcd")
    with open(STATE / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # run 1234abcd is between its write and its rebuild
        cmd = ["sh", "-c", hostside.REBUILD, "kvm-rebuild", "", "dracut", "/boot/x.img", "6.1", "1234abcd", "1", "0"]
        env = {**os.environ, "KVM_DRIVERS_LOCK_WAIT": "1"}
        proc = subprocess.run(on_host(cmd), capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "another kvm-drivers run is still changing this host" in proc.stderr
    assert f.read_text() == "ext4\nvirtio\n" and kept("1234abcd") == {str(f): "ext4\n"}


def test_concurrent_writes_end_with_the_content_and_no_leftovers(tmp_path):
    f = tmp_path / "90-kvm-drivers.conf"
    cmd = ["sh", "-c", hostside.WRITE, "kvm-write", str(f), "x\n", "0", "", "9999aaaa"]
    procs = [subprocess.Popen(on_host(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    assert [p.wait() for p in procs] == [0] * 8
    assert f.read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["90-kvm-drivers.conf"]


def test_lock_waits_then_gives_up_with_a_message(tmp_path):
    f = tmp_path / "modules"
    with open(STATE / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another kvm-drivers run holds the host
        proc = write(f, "x\n", check=False, KVM_DRIVERS_LOCK_WAIT="1")
    assert proc.returncode == 1 and "another kvm-drivers run is still changing this host" in proc.stderr
    assert not f.exists()
    write(f, "x\n")  # lock released: the write goes through
    assert f.read_text() == "x\n"


def test_world_writable_lock_places_are_not_used(tmp_path):
    # High: the lock was /var/lock/kvm-drivers.lock (mode 1777 directory): a planted symlink
    # got its target truncated by root, and any user could hold the lock forever.
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    old_lock = Path("/var/lock/kvm-drivers.lock")
    old_lock.unlink(missing_ok=True)
    old_lock.symlink_to(victim)
    try:
        with open(victim) as held:  # read-only descriptor, as any user could open it
            fcntl.flock(held, fcntl.LOCK_EX)
            write(tmp_path / "modules", "x\n", KVM_DRIVERS_LOCK_WAIT="1")
    finally:
        old_lock.unlink()
    assert victim.read_text() == "root:secret\n"
    assert (tmp_path / "modules").read_text() == "x\n"


def test_state_directory_others_can_reach_is_refused(tmp_path):
    STATE.mkdir(mode=0o700, exist_ok=True)
    STATE.chmod(0o777)
    try:
        proc = write(tmp_path / "modules", "x\n", check=False)
    finally:
        STATE.chmod(0o700)
    assert proc.returncode == 1 and "not a directory that only root can use" in proc.stderr
    assert not (tmp_path / "modules").exists()


def test_python_lister_ignores_modules_in_the_working_directory(tmp_path):
    # Low: python3 -c put the working directory on the lister's module path.
    (tmp_path / "subprocess.py").write_text("raise SystemExit('hijacked')\n")
    img = tmp_path / "img"
    img.write_bytes(b"070701" + b"0" * 104 + b"TRAILER!!!\0")
    proc = subprocess.run(["sh", "-c", LIB + 'PYLIST=$1; list_initrd "$2"', "t", hostside.LISTER, str(img)],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert "hijacked" not in proc.stdout + proc.stderr


def test_unblacklist_takes_only_the_module_configuration_files_python_names(tmp_path):
    # the directories and files are hostside's MODPROBE_DIRS and MODPROBE_CONFS (checked before the lock)
    for path in ("/etc/modprobe.d/a/b.conf", "/etc/modprobe.d/", "/etc/modprobe.d/../shadow", "/etc/shadow",
                 "/usr/lib64/modprobe.d/x.conf", "/etc/modprobe.confx", str(tmp_path / "x.conf")):  # fmt: skip
        proc = subprocess.run(["sh", "-c", hostside.UNBLACKLIST, "kvm-unblacklist", path, "", "1", "x"],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 1 and f"refusing {path}" in proc.stderr, path
    accepted = hostside.UNBLACKLIST.replace("\nkvm_lock ||", "\nexit 7\nkvm_lock ||")  # stop before the lock
    for path in [*(f"{d}/x.conf" for d in hostside.MODPROBE_DIRS), *hostside.MODPROBE_CONFS]:
        proc = subprocess.run(["sh", "-c", accepted, "kvm-unblacklist", path, "", "1", "x"], capture_output=True)
        assert proc.returncode == 7, path


def test_host_scripts_create_nothing_in_world_writable_places():
    # Medium/High: the lock was in /var/lock (1777) and the log fell back to /tmp/kvm-drivers.$$.log.

    for name in ("GATHER", "REBUILD", "WRITE", "UNBLACKLIST"):
        script = getattr(hostside, name)
        code = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
        for place in ("/tmp", "/var/lock", "/var/tmp", "/dev/shm"):
            assert place not in code, (name, place)


def test_new_initrd_is_flushed_before_it_takes_the_old_ones_name():
    # Low (by reading): the new initrd was not flushed before the rename.
    lines = [ln.strip() for ln in hostside.REBUILD.splitlines()]
    flush = next(i for i, ln in enumerate(lines) if ln.startswith('sync "$tmp"'))
    rename = next(i for i, ln in enumerate(lines) if ln.startswith('mv -f "$tmp" "$img"'))
    assert flush < rename


NAMES = ["virtio_blk.ko", "kernel/drivers/net/virtio-net.ko.xz", "/lib/modules/6.1/x/ata_piix.ko.zst", "a-b_c.ko.gz",
         "nvme-core.ko.bz2", "dm-mod.ko.lz4", "plain"]  # fmt: skip


def test_shell_and_python_normalise_module_names_alike():
    # One normalisation per language (lib.sh KVM_NORM for every awk program, config_files.norm for inventory
    # names): they must agree, or a declared driver would never be found in an initrd.
    out = lib('printf "%s\\n" "$@" | awk "$KVM_NORM"\' { print norm($0) "|" (ko($0) ? 1 : 0) }\'', *NAMES)
    assert out.returncode == 0, out.stderr
    got = [line.split("|") for line in out.stdout.splitlines()]
    assert [n for n, _ in got] == [norm(x) for x in NAMES]
    assert [k for _, k in got] == ["1", "1", "1", "1", "1", "1", "0"]


def test_closure_is_computed_on_the_host_breadth_first_itself_first(tmp_path):
    d = tmp_path / "6.1"
    d.mkdir()
    (d / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    (d / "modules.dep").write_text(
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/net/virtio-net.ko.xz: kernel/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/net/net_failover.ko: kernel/net/core/failover.ko\n"
        "kernel/net/core/failover.ko:\n"
    )
    # gather.sh's per-kernel awk program (the one place the closure is computed), as run there
    call = 'want="$*"; gather_kernel_awk 1 kvm_k=builtin "$D/modules.builtin" kvm_k=dep "$D/modules.dep"'
    script = hostside.GATHER_FUNCTIONS + call
    out = subprocess.run(["sh", "-c", script, "kvm-test", "virtio_net", "virtio_blk", "virtio", "virtio_scsi"],
                         capture_output=True, text=True, env={**os.environ, "D": str(d)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "closure virtio_net virtio_net,net_failover,virtio_ring,failover" in lines
    assert "closure virtio_blk virtio_blk,virtio_ring" in lines
    assert "builtin virtio" in lines and "absent virtio_scsi" in lines
    assert lines.count("module virtio_ring kernel/drivers/virtio/virtio_ring.ko") == 1  # once, shared
    kernel = RawKernel("6.1")
    assert all(_parse_kernel_line(kernel, line) for line in lines)  # what the parser accepts
    assert kernel.closures["virtio_net"] == ["virtio_net", "net_failover", "virtio_ring", "failover"]
