"""An image's layout read from sfdisk's and blkid's real output (tests/fixtures/images), fstab devices
tied to its file systems, and image paths resolved inside its root whatever its links say.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvm_drivers.image import layout
from kvm_drivers.image.disk import problems
from kvm_drivers.image.paths import OutsideRoot, directory_inside, inside

FIX = Path(__file__).parent / "fixtures/images"
MiB = 1024 * 1024


def test_gpt_partitions_carry_their_partuuid_and_name():
    parts, bad = layout.partitions((FIX / "sfdisk-gpt.json").read_text(), 64 * MiB)
    assert bad == []
    assert [(p.number, p.offset, p.size) for p in parts] == [(1, MiB, 10 * MiB), (2, 11 * MiB, 106496 * 512)]
    assert parts[0].partuuid == "75f809bd-95b6-8944-92cb-9dd4d5ee321c" and parts[0].partlabel == "EFI System"


def test_dos_extended_container_is_skipped_and_logical_partitions_kept_with_the_kernel_partuuid():
    parts, _ = layout.partitions((FIX / "sfdisk-dos-logical.json").read_text(), 64 * MiB)
    assert [p.number for p in parts] == [1, 5, 6]
    assert parts[1].partuuid == "45e7a08e-05"  # as blkid and the kernel write a DOS PARTUUID


def test_partition_past_the_disk_end_is_left_out_and_said():
    parts, bad = layout.partitions((FIX / "sfdisk-gpt.json").read_text(), 32 * MiB)
    assert [p.number for p in parts] == [1] and "partition 2" in bad[0]


def test_no_partition_table_is_one_file_system_on_the_whole_disk():
    assert layout.partitions("", 5 * MiB) == ([layout.Part(0, 0, 5 * MiB)], [])


ROOT = layout.Fs(layout.Part(2, 2 * MiB, 8 * MiB, "45e7a08e-02"), "ext4", "3A5B7C9D-0000-4000-8000-000000000001")
BOOT = layout.Fs(layout.Part(1, MiB, MiB, "45e7a08e-01"), "ext4", "b0000000-0000-4000-8000-000000000002", "BOOT")
ESP = layout.Fs(layout.Part(3, 10 * MiB, MiB, "45e7a08e-03"), "vfat", "ABCD-1234", "EFI")
ALL = [ROOT, BOOT, ESP]


@pytest.mark.parametrize("spec, fs", [
    ("UUID=3a5b7c9d-0000-4000-8000-000000000001", ROOT),  # case does not matter in a UUID
    ("/dev/disk/by-uuid/b0000000-0000-4000-8000-000000000002", BOOT),
    ("LABEL=BOOT", BOOT),
    ("PARTUUID=45e7a08e-03", ESP),
    ("UUID=abcd-1234", ESP),
])  # fmt: skip
def test_fstab_identifiers_name_one_file_system(spec, fs):
    assert layout.find(spec, ALL) == (fs, "")


def test_kernel_names_are_taken_as_this_disks_partition_and_said_so():
    fs, note = layout.find("/dev/xvda1", ALL)
    assert fs == BOOT and "kernel name" in note
    assert layout.find("/dev/sdb1", ALL)[0] is None  # another disk: not this image's
    assert layout.find("LABEL=boot", ALL)[0] is None  # labels are case-sensitive
    assert layout.find("/dev/mapper/vg-root", ALL)[0] is None


def test_boot_and_esp_mounted_parents_first_a_missing_boot_is_an_error_unless_nofail():
    fstab = "UUID=abcd-1234 /boot/efi vfat umask=0077 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n"
    mounts, notes, errors = layout.extra_mounts(fstab, ALL, ROOT)
    assert [(m.target, m.fs) for m in mounts] == [("/boot", BOOT), ("/boot/efi", ESP)] and errors == []
    _, _, errors = layout.extra_mounts("UUID=0dd /boot ext4 defaults 0 2\n", ALL, ROOT)
    assert errors and "/boot" in errors[0]
    _, notes, errors = layout.extra_mounts("UUID=0dd /boot ext4 defaults,nofail 0 2\n", ALL, ROOT)
    assert errors == [] and "/boot" in notes[0]


def test_partitions_that_share_bytes_are_named():
    a, b, c = layout.Part(1, MiB, 4 * MiB), layout.Part(2, 5 * MiB, MiB), layout.Part(3, 2 * MiB, MiB)
    assert layout.overlaps([a, b]) == ""
    assert layout.overlaps([b, a, c]) == "partition 1 and partition 3 overlap"


@pytest.mark.parametrize("name, ok", [("@", True), ("@rootfs", True), ("root/@/.snapshots/1/snapshot", True),
                                      ("@,rw", False), ("@,device=/dev/sda", False), ('a"b', False),
                                      ("a\nb", False), ("../x", False), ("", False)])  # fmt: skip
def test_only_plain_subvolume_names_reach_mount_options(name, ok):
    # a name with a comma would add mount options (",rw" made a read-only check mount the input read-write)
    assert layout.plain_subvol(name) is ok


def test_fstab_root_device_is_read():
    assert layout.root_spec("# x\nUUID=ab / ext4 defaults 0 1\nLABEL=b /boot ext4 defaults 0 2\n") == "UUID=ab"
    assert layout.root_spec("LABEL=b /boot ext4 defaults 0 2\n") == ""


def test_btrfs_root_subvolume_is_read_from_fstab():
    assert layout.root_subvol("UUID=x / btrfs defaults,subvol=/@,compress=zstd 0 0\n") == "@"
    assert layout.root_subvol("UUID=x / ext4 defaults 0 1\n") == ""


# --- paths inside the root -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "run/resolvconf").mkdir(parents=True)
    (root / "etc/resolv.conf").symlink_to("/run/resolvconf/resolv.conf")  # as on Ubuntu
    (root / "etc/up").symlink_to("../../../../../etc")  # climbs out, were it followed as the host would
    (root / "loop").symlink_to("loop")
    (root / "boot/efi").symlink_to("/etc")
    (root / "file").write_text("x")
    return root


def test_absolute_links_resolve_inside_the_image(tree):
    assert inside(str(tree), "/etc/resolv.conf") == str(tree / "run/resolvconf/resolv.conf")
    assert directory_inside(str(tree), "/boot/efi") == str(tree / "etc")


def test_dotdot_stops_at_the_image_root(tree):
    assert inside(str(tree), "/etc/up/passwd") == str(tree / "etc/passwd")
    assert inside(str(tree), "/../../etc/shadow") == str(tree / "etc/shadow")


def test_loops_missing_directories_and_files_as_directories_are_refused(tree):
    for path in ("/loop", "/nothere/x", "/file/x"):
        with pytest.raises(OutsideRoot):
            inside(str(tree), path)
    with pytest.raises(OutsideRoot):
        directory_inside(str(tree), "/file")


def test_resolved_paths_hold_no_link(tree):
    for path in ("/etc/resolv.conf", "/boot/efi", "/etc/up/x"):
        real = inside(str(tree), path)
        assert os.path.realpath(real) == real and real.startswith(str(tree) + "/")


# --- what qemu-img says of the file ---------------------------------------------------------------


def test_images_that_name_other_files_are_refused():
    assert problems({"format": "qcow2"}, "/x.qcow2") == []
    assert "backing file" in problems({"format": "qcow2", "backing-filename": "/etc/shadow"}, "/x.qcow2")[0]
    data_file = {"format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}}
    assert "external data file" in problems(data_file, "/x.qcow2")[0]
    flat = {"format": "vmdk", "format-specific": {"type": "vmdk", "data": {"create-type": "monolithicFlat",
            "extents": [{"filename": "/dev/sda"}]}}}  # fmt: skip
    assert len(problems(flat, "/x.vmdk")) == 2
    sparse = {"format": "vmdk", "format-specific": {"type": "vmdk", "data": {"create-type": "monolithicSparse",
              "extents": [{"filename": "/x.vmdk"}]}}}  # fmt: skip
    assert problems(sparse, "/x.vmdk") == []
    assert "not one of" in problems({"format": "cloop"}, "/x")[0]


def test_a_qemu_write_lock_is_seen_without_being_taken(tmp_path):
    import fcntl
    import struct

    from kvm_drivers.image.disk import F_OFD_GETLK, QEMU_WRITE_LOCK, writer

    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * 4096)
    assert not writer(str(disk))
    fd = os.open(disk, os.O_RDWR)
    try:  # as QEMU holds an image it writes: a shared (read) OFD lock on byte 100 + the write bit
        fcntl.fcntl(fd, F_OFD_GETLK + 1, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, QEMU_WRITE_LOCK, 1, 0))
        assert writer(str(disk))
    finally:
        os.close(fd)
    assert not writer(str(disk))


def test_connector_names_hosts_by_path_and_runs_commands_sandboxed():
    from kvm_drivers.image.connector import ImageConnector, default_output, sandbox

    assert list(ImageConnector.make_names_data("srv/web1.vmdk")) == [
        ("@kvmimage/srv/web1.vmdk", {"kvm_image": "/srv/web1.vmdk"}, ["@kvmimage"])]
    assert default_output("/srv/web1.vmdk") == "/srv/web1.kvm.qcow2"
    args = sandbox("/run/kvm-image.x/root")
    assert args[:4] == ["bwrap", "--bind", "/run/kvm-image.x/root", "/"]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv", "--new-session"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert not {"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_DAC_READ_SEARCH"} & set(args)
    assert args[args.index("--ro-bind") + 1: args.index("--ro-bind") + 3] == ["/dev/null", "/proc/cmdline"]
