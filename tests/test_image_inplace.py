"""``image fix --in-place``'s own steps on directory trees (kvm_drivers.image.inplace): what a fix changed
is found by listing both trees, the input's copies go into the image and nowhere else, and a file
held open or a loop device on it refuses the image. The lab story (tests/test_lab_images.py) runs it
on a real image.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvm_drivers.image import inplace
from kvm_drivers.image.paths import OutsideRoot


def tree(root: Path) -> Path:
    (root / "etc/initramfs-tools").mkdir(parents=True)
    (root / "etc/initramfs-tools/modules").write_text("ext4\nxen-blkfront\n")
    (root / "boot").mkdir()
    (root / "boot/initrd.img-6.1").write_bytes(b"old initrd")
    (root / "etc/gone.conf").write_text("x")
    os.symlink("/etc/initramfs-tools/modules", root / "etc/modules-link")
    (root / "var/lib").mkdir(parents=True)
    return root


def fix_like_a_deploy(root: Path) -> None:
    time.sleep(0.01)  # a new mtime, as any write gives
    (root / "etc/initramfs-tools/modules.new").write_text("ext4\nxen-blkfront\nvirtio_blk\n")
    os.replace(root / "etc/initramfs-tools/modules.new", root / "etc/initramfs-tools/modules")
    (root / "boot/initrd.img-6.1").write_bytes(b"new initrd with virtio")
    (root / "etc/dracut.conf.d").mkdir()
    (root / "etc/dracut.conf.d/kvm-drivers.conf").write_text('add_drivers+=" virtio_blk "\n')
    (root / "etc/gone.conf").unlink()
    os.chmod(root / "boot", 0o700)  # a directory's mode counts; its mtime alone does not


def test_changes_name_what_the_fix_wrote_created_and_removed_and_nothing_else(tmp_path):
    root = tree(tmp_path / "img")
    before = inplace.listing(str(root))
    fix_like_a_deploy(root)
    what = inplace.changes(before, inplace.listing(str(root)))
    assert what == {"changed": ["boot", "boot/initrd.img-6.1", "etc/initramfs-tools/modules"],
                    "created": ["etc/dracut.conf.d", "etc/dracut.conf.d/kvm-drivers.conf"],
                    "removed": ["etc/gone.conf"]}  # fmt: skip


def test_a_link_is_listed_as_a_link_and_never_followed(tmp_path):
    root = tree(tmp_path / "img")
    os.symlink("/", root / "escape")
    listed = inplace.listing(str(root))
    assert listed["escape"][0] == stat.S_IFLNK and listed["escape"][-1] == "/"
    assert not any(p.startswith("escape/") for p in listed)


def test_a_change_only_of_ctime_counts_but_not_under_a_copy(tmp_path):
    root = tree(tmp_path / "img")
    before = inplace.listing(str(root))
    time.sleep(0.01)
    os.chmod(root / "etc/gone.conf", os.stat(root / "etc/gone.conf").st_mode)  # same mode: ctime only (a relabel)
    assert inplace.changes(before, inplace.listing(str(root)))["changed"] == ["etc/gone.conf"]
    assert inplace.changes(inplace.listing(str(root), ("etc",)), inplace.listing(str(root), ("etc",)))["changed"] == []


def test_the_input_copies_and_a_manifest_land_inside_the_image_whatever_its_links_say(tmp_path):
    root = tree(tmp_path / "img")
    victim = tmp_path / "control-machine"
    victim.mkdir()
    (root / "var/lib").rmdir()
    os.symlink(str(victim), root / "var/lib")  # absolute: in the image it means /<victim path>, not ours
    (root / tmp_path.relative_to("/")).mkdir(parents=True)  # that path, inside the image
    before = inplace.listing(str(root))
    keep = tmp_path / "keep"
    keep.mkdir()
    inplace.copy_out(str(root), ["etc/initramfs-tools/modules", "boot/initrd.img-6.1", "etc/modules-link"], str(keep))
    fix_like_a_deploy(root)
    what = inplace.changes(before, inplace.listing(str(root)))
    saved = inplace.save(str(root), str(keep), "20261208T000000Z", what)
    assert saved == f"{inplace.BACKUP_DIR}/20261208T000000Z"
    assert list(victim.iterdir()) == []  # nothing written on this machine through the image's link
    base = root / tmp_path.relative_to("/") / "control-machine/kvm-drivers/image-backup/20261208T000000Z"
    assert (base / "etc/initramfs-tools/modules").read_text() == "ext4\nxen-blkfront\n"
    assert (base / "boot/initrd.img-6.1").read_bytes() == b"old initrd"
    assert os.readlink(base / "etc/modules-link") == "/etc/initramfs-tools/modules"
    manifest = (base / "MANIFEST").read_text().splitlines()
    assert "changed /etc/initramfs-tools/modules" in manifest and "removed /etc/gone.conf" in manifest
    assert "created /etc/dracut.conf.d/kvm-drivers.conf" in manifest


def test_a_backup_directory_that_is_a_file_in_the_image_is_an_error(tmp_path):
    root = tree(tmp_path / "img")
    (root / "var/lib/kvm-drivers").write_text("not a directory")
    with pytest.raises(OSError, match="not a directory"):
        inplace.save(str(root), str(tmp_path), "x", {"changed": [], "created": [], "removed": []})


def test_a_link_loop_in_the_image_is_an_error_not_a_write(tmp_path):
    root = tree(tmp_path / "img")
    (root / "var/lib").rmdir()
    os.symlink("/var/lib", root / "var/lib")
    with pytest.raises(OutsideRoot):
        inplace.save(str(root), str(tmp_path), "x", {"changed": [], "created": [], "removed": []})


def test_a_process_holding_the_image_is_named(tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 4096)
    assert inplace.holders(str(disk)) == []
    holder = subprocess.Popen(["sh", "-c", "exec sleep 30 3<\"$0\"", str(disk)])
    try:
        for _ in range(50):
            if inplace.holders(str(disk)):
                break
            time.sleep(0.05)
        assert inplace.holders(str(disk)) == [f"process {holder.pid} (sleep)"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")
def test_a_loop_device_on_the_image_is_named(tmp_path):
    disk = Path(tmp_path / "disk.raw")
    disk.write_bytes(b"\0" * (1 << 20))
    loop = subprocess.run(["losetup", "--find", "--show", str(disk)], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device here: {loop.stderr.strip()}")
    try:
        assert inplace.holders(str(disk)) == [loop.stdout.strip()]
    finally:
        subprocess.run(["losetup", "-d", loop.stdout.strip()], check=True)


def test_a_stream_optimized_vmdk_is_refused_in_place_before_anything_is_written():
    from kvm_drivers.image.disk import Disk

    # qemu-img commit into one stops half-way: "Could not write to allocated cluster for streamOptimized"
    assert "streamOptimized" in Disk("/x.vmdk", "vmdk", 1, subformat="streamOptimized").in_place_problem()
    assert Disk("/x.vmdk", "vmdk", 1, subformat="monolithicSparse").in_place_problem() == ""
    assert Disk("/x.qcow2", "qcow2", 1).in_place_problem() == ""


def test_kept_links_stay_links_owners_and_set_id_bits_stay_and_odd_names_stay_one_line(tmp_path):
    root = tree(tmp_path / "img")
    os.symlink("/etc", root / "etc/ssl-link")  # a directory here too: it must come back as the link it was
    (root / "etc/su").write_bytes(b"binary")
    os.chown(root / "etc/su", 1234, 5678)
    os.chmod(root / "etc/su", 0o4755)
    odd = "x\nremoved etc-passwd"  # (no "/" can be in a name)
    (root / "etc" / odd).write_text("")
    keep = tmp_path / "keep"
    inplace.copy_out(str(root), ["etc/ssl-link", "etc/su"], str(keep))
    what = {"changed": ["etc/ssl-link", "etc/su"], "created": [f"etc/{odd}"], "removed": []}
    base = Path(inplace.inside(str(root), inplace.save(str(root), str(keep), "s", what)))
    assert os.readlink(base / "etc/ssl-link") == "/etc"
    st = os.stat(base / "etc/su")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    manifest = (base / "MANIFEST").read_text().splitlines()
    assert not [m for m in manifest if m.startswith("removed")] and 'created "/etc/x\\nremoved etc-passwd"' in manifest


def test_backups_are_refused_where_the_image_mounts_var_of_its_own_or_the_directory_is_planted(tmp_path):
    root = tree(tmp_path / "img")
    (root / "etc/fstab").write_text("UUID=1 / ext4 defaults 0 1\nUUID=2 /var xfs defaults 0 2\n")
    with pytest.raises(OSError, match="fstab mounts /var .* hidden at boot"):
        inplace.save(str(root), str(tmp_path), "s", {"changed": [], "created": [], "removed": []})
    (root / "etc/fstab").write_text("UUID=1 / ext4 defaults 0 1\n")
    (root / "var/lib/kvm-drivers/image-backup/s").mkdir(parents=True)  # made beforehand by the image's own code
    with pytest.raises(FileExistsError):
        inplace.save(str(root), str(tmp_path), "s", {"changed": [], "created": [], "removed": []})


def test_what_the_copies_cost_is_counted_before_they_are_made(tmp_path):
    root = tree(tmp_path / "img")
    with open(root / "boot/initrd.img-6.1", "r+b") as f:
        f.truncate(1 << 40)  # sparse: 1 TiB said, nothing used
    before = inplace.listing(str(root))
    assert inplace.copy_size(before, ["boot/initrd.img-6.1", "etc/modules-link"]) == 1 << 40


def image_fix(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (importing pyinfra here would patch this process's I/O: gevent)."""
    return subprocess.run([sys.executable, "-m", "kvm_drivers", "image", "fix", *args], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=120)  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="image commands need root")
def test_in_place_with_an_output_or_a_copy_is_a_usage_error_and_touches_nothing(tmp_path):
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"not even an image")
    for extra in (["--output", str(tmp_path / "new.qcow2")], ["--flatten"]):
        proc = image_fix(str(disk), "--in-place", *extra)
        assert proc.returncode == 1 and "--in-place writes DISK itself" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.qcow2"]
    assert disk.read_bytes() == b"not even an image"


@pytest.mark.skipif(os.geteuid() != 0, reason="image commands need root")
def test_in_place_beside_an_overlay_over_the_input_is_refused(tmp_path):
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    (tmp_path / "disk.kvm.qcow2").write_bytes(b"an overlay image fix wrote earlier")
    report = tmp_path / "r.json"
    proc = image_fix(str(disk), "--in-place", "--report", str(report))
    assert proc.returncode == 4 and "may be an overlay over it" in report.read_text(), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.kvm.qcow2", "disk.raw", "r.json"]
