"""Unit tests of the configuration edits: every unrelated line kept, nothing duplicated."""


from kvm_drivers.facts.config_files import parse_dracut, parse_initrd_modules, parse_modules_file
from kvm_drivers.facts.state import HostState
from kvm_drivers.operations import kvm_drivers as ops

VIRTIO = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]


def test_modules_file_appends_only_missing_and_keeps_lines():
    text = "# /etc/initramfs-tools/modules\n# comment\next4\nxen-blkfront\nvirtio_blk\n"
    out = ops.render_modules_file(text, ["virtio_net", "virtio"])
    assert out.startswith(text)
    assert parse_modules_file(out) == ["ext4", "xen_blkfront", "virtio_blk", "virtio_net", "virtio"]
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
    conf = parse_dracut({"/etc/dracut.conf.d/90-kvm-drivers.conf": text})
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
    mods, _ = parse_initrd_modules(out)
    assert mods == ["ata_piix", "ata_generic", "xenblk", "processor", "thermal"] + VIRTIO
    assert out.count("INITRD_MODULES=") == 2  # ours and DOMU_, nothing added
    for line in text.splitlines():
        if not line.startswith("INITRD_MODULES"):
            assert line in out.splitlines()
    assert "# keep me" in out


def test_sysconfig_kernel_without_the_variable_appends_it():
    out = ops.render_sysconfig_kernel("# nothing here", ["virtio"], ["virtio"])
    assert out.startswith("# nothing here\n")
    assert parse_initrd_modules(out)[0] == ["virtio"]


def test_new_declaration_for_dracut_keeps_our_previous_drivers():
    state = HostState.from_dict({
        "generator": "dracut",
        "declared": {
            "path": "/etc/dracut.conf.d/90-kvm-drivers.conf",
            "drivers": VIRTIO + ["xen_blkfront"],
            "by_others": ["xen_blkfront"],
        },
    })
    path, text = ops.declaration(state, VIRTIO + ["virtio_console"])
    assert path.endswith("90-kvm-drivers.conf")
    conf = parse_dracut({path: text})
    assert list(conf.add_drivers) == VIRTIO + ["virtio_console"]
    assert ops.declaration(state, VIRTIO) is None
