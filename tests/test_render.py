"""Unit tests of the configuration edits: every unrelated line kept, nothing duplicated."""

import fcntl
import os
import subprocess
from pathlib import Path

from facts import parsers as p
from operations import kvm_drivers as ops

VIRTIO = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]


def test_modules_file_appends_only_missing_and_keeps_lines():
    text = "# /etc/initramfs-tools/modules\n# comment\next4\nxen-blkfront\nvirtio_blk\n"
    out = ops.render_modules_file(text, ["virtio_net", "virtio"])
    assert out.startswith(text)
    assert p.parse_modules_file(out) == ["ext4", "xen_blkfront", "virtio_blk", "virtio_net", "virtio"]
    again = ops.render_modules_file(out, ["virtio_pci"])
    assert again.count(ops.MARKER) == 1


def test_modules_file_crlf_and_no_final_newline():
    text = "# comment\r\next4"
    out = ops.render_modules_file(text, ["virtio_blk"])
    assert out.startswith("# comment\r\next4\r\n")
    assert out.endswith("virtio_blk\r\n")
    assert ops.render_modules_file(None, ["virtio"]).endswith("\nvirtio\n")


def test_dracut_dropin_is_parsed_back_by_the_parser():
    text = ops.render_dracut_dropin(VIRTIO)
    conf = p.parse_dracut({"/etc/dracut.conf.d/90-kvm-drivers.conf": text})
    assert list(conf.add_drivers) == VIRTIO
    assert 'add_drivers+=" virtio_blk' in text and text.rstrip().endswith(' "')


def test_sysconfig_kernel_merges_with_ata_first_and_keeps_everything_else():
    text = (
        "## Path: System/Kernel\n## Description:\n# This variable contains the list of modules\n"
        'INITRD_MODULES="xenblk processor thermal ata_generic" # keep me\n\n'
        '## Type: string\nDOMU_INITRD_MODULES="xennet xenblk"\n'
    )
    wanted = ["ata_piix", "ata_generic"] + VIRTIO
    out = ops.render_sysconfig_kernel(text, wanted, ["ata_piix"] + VIRTIO)
    mods, _ = p.parse_initrd_modules(out)
    assert mods == ["ata_piix", "ata_generic", "xenblk", "processor", "thermal"] + VIRTIO
    assert out.count("INITRD_MODULES=") == 2  # ours and DOMU_, nothing added
    for line in text.splitlines():
        if not line.startswith("INITRD_MODULES"):
            assert line in out.splitlines()
    assert "# keep me" in out


def test_sysconfig_kernel_without_the_variable_appends_it():
    out = ops.render_sysconfig_kernel("# nothing here", ["virtio"], ["virtio"])
    assert out.startswith("# nothing here\n")
    assert p.parse_initrd_modules(out)[0] == ["virtio"]


def test_new_declaration_for_dracut_keeps_our_previous_drivers():
    info = {
        "generator": "dracut",
        "wanted": VIRTIO + ["virtio_console"],
        "to_declare": ["virtio_console"],
        "declared": {
            "path": "/etc/dracut.conf.d/90-kvm-drivers.conf",
            "drivers": VIRTIO + ["xen_blkfront"],
            "by_others": ["xen_blkfront"],
        },
    }
    path, text = ops.new_declaration(info)
    assert path.endswith("90-kvm-drivers.conf")
    conf = p.parse_dracut({path: text})
    assert list(conf.add_drivers) == VIRTIO + ["virtio_console"]
    info["to_declare"] = []
    assert ops.new_declaration(info) is None


def write(path, content: str, keep: str = "1") -> subprocess.CompletedProcess:
    """Run the operation's remote write script locally (real sh), as the host would."""
    cmd = ["sh", "-c", ops.WRITE_SCRIPT, "kvm-write", str(path), content, keep]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def test_write_script_keeps_mode_and_a_rollback_copy(tmp_path):
    f = tmp_path / "modules"
    f.write_text("ext4\n")
    f.chmod(0o600)
    write(f, "ext4\nvirtio_blk\n")
    assert f.read_text() == "ext4\nvirtio_blk\n"
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "modules.kvm-drivers.prev").read_text() == "ext4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modules", "modules.kvm-drivers.prev"]  # no temp file


def test_write_script_new_file_gets_an_absent_marker(tmp_path):
    f = tmp_path / "conf.d" / "90-kvm-drivers.conf"
    write(f, 'add_drivers+=" virtio "\n')
    assert oct(f.stat().st_mode & 0o777) == "0o644"
    assert (f.parent / "90-kvm-drivers.conf.kvm-drivers.absent").exists()


def test_write_script_leaves_a_file_that_already_has_the_content(tmp_path):
    # what a second run, racing the first, finds: it must not take the new file as the rollback copy
    f = tmp_path / "modules"
    f.write_text("ext4\nvirtio_blk\n")
    out = write(f, "ext4\nvirtio_blk\n").stdout
    assert "already has the wanted content" in out
    assert not (tmp_path / "modules.kvm-drivers.prev").exists()


def test_concurrent_writes_end_with_the_content_and_no_leftovers(tmp_path):
    f = tmp_path / "90-kvm-drivers.conf"
    cmd = ["sh", "-c", ops.WRITE_SCRIPT, "kvm-write", str(f), "x\n", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    assert [p.wait() for p in procs] == [0] * 8
    assert f.read_text() == "x\n"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["90-kvm-drivers.conf", "90-kvm-drivers.conf.kvm-drivers.absent"]


def test_write_script_waits_for_the_host_lock_then_gives_up_with_a_message(tmp_path):
    lock = Path("/var/lock" if Path("/var/lock").is_dir() else "/tmp") / "kvm-drivers.lock"
    f = tmp_path / "modules"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another kvm-drivers run holds the host
        cmd = ["sh", "-c", ops.WRITE_SCRIPT, "kvm-write", str(f), "x\n", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "KVM_DRIVERS_LOCK_WAIT": "1"})
    assert proc.returncode == 1 and "another kvm-drivers run is still changing this host" in proc.stderr
    assert not f.exists()
    write(f, "x\n")  # lock released: the write goes through
    assert f.read_text() == "x\n"
