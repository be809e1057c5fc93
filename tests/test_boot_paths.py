"""Classes 2 and 7 of issue 10: kernel images without a version, btrfs subvolume paths.

The gather outputs are the captured Debian 12 one (tests/fixtures) with the bootloader lines a
btrfs @ install or a SLES 11 KIWI image writes; the shell side is checked on a real kernel.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from kvm_drivers import hostside
from kvm_drivers.facts.boot_entries import system_path
from kvm_drivers.facts.wire import parse_snapshot
from tests.planning import analyse

FIX = Path(__file__).parent / "fixtures"
K = "6.1.0-50-amd64"


def lines(edit) -> list[str]:
    return edit((FIX / "gather-bookworm-itools.txt").read_text()).splitlines()


def test_system_path():
    assert system_path("/@/boot/initrd.img-6.1") == "/boot/initrd.img-6.1"
    assert system_path("/@boot/initrd.img-6.1") == "/boot/initrd.img-6.1"
    assert system_path("/initramfs-6.1.img") == "/boot/initramfs-6.1.img"
    assert system_path("/boot/initrd.vmx") == "/boot/initrd.vmx"


def test_btrfs_at_subvolume_paths_map_to_boot():
    def edit(text: str) -> str:
        text = text.replace(f"linux\t/boot/vmlinuz-{K}", f"linux\t/@/boot/vmlinuz-{K}")
        text = text.replace(f"initrd\t/boot/initrd.img-{K}", f"initrd\t/@/boot/initrd.img-{K}")
        # what gather.sh's refs loop prints for it (it strips /@ when the file is not found)
        return text.replace("@@KVM end", f"@@KVM ref /@/boot/initrd.img-{K} /boot/initrd.img-{K}\n@@KVM end")

    info = analyse(parse_snapshot(lines(edit)))
    (kernel,) = info.kernels
    assert kernel.initrd == f"/boot/initrd.img-{K}" and kernel.initrd_source.startswith("bootloader entry")
    assert kernel.initrd_error == "" and info.status == "drifted"
    # Without gather.sh's answer (an old script), the path is still mapped, never /boot/@/boot/...
    old_script = lines(lambda t: edit(t).replace(f"@@KVM ref /@/boot/initrd.img-{K} /boot/initrd.img-{K}\n", ""))
    info = analyse(parse_snapshot(old_script))
    assert info.kernels[0].initrd == f"/boot/initrd.img-{K}"


def vmx(kimage: str):
    def edit(text: str) -> str:
        text = text.replace(f"linux\t/boot/vmlinuz-{K}", "linux\t/boot/linux.vmx")
        text = text.replace(f"initrd\t/boot/initrd.img-{K}", "initrd\t/boot/initrd.vmx")
        refs = f"@@KVM ref /boot/initrd.vmx /boot/initrd.img-{K}\n"  # KIWI: initrd.vmx -> initrd-K
        return text.replace("@@KVM end", refs + kimage + "@@KVM end")

    return edit


def test_unversioned_image_tied_by_its_header_version():
    snap = parse_snapshot(lines(vmx(f"@@KVM kimage /boot/linux.vmx /boot/linux.vmx\nversion {K}\n")))
    assert snap.kimages["/boot/linux.vmx"].version == K and not snap.problems
    info = analyse(snap)
    (kernel,) = info.kernels
    assert kernel.default and kernel.initrd_source.startswith("bootloader entry")
    assert kernel.initrd == f"/boot/initrd.img-{K}"  # what /boot/initrd.vmx is
    assert any("linux.vmx: kernel" in w and "header" in w for w in info.warnings)


def test_unversioned_image_tied_by_being_the_same_file():
    snap = parse_snapshot(lines(vmx(f"@@KVM kimage /boot/linux.vmx /boot/linux.vmx\nsame /boot/vmlinuz-{K}\n")))
    info = analyse(snap)
    assert info.kernels[0].default and info.state.boot.default_kernel == K
    assert any("the same file as" in w for w in info.warnings)


def test_unversioned_image_never_tied_by_name_alone():
    # header of another kernel, no same file: the entry stays untied, the conventional name is used
    snap = parse_snapshot(lines(vmx("@@KVM kimage /boot/linux.vmx /boot/linux.vmx\nversion 3.0.101-63-default\n")))
    info = analyse(snap)
    (kernel,) = info.kernels
    assert not kernel.default and kernel.initrd_source == "distribution naming convention"
    assert any("not tied to an installed kernel" in w for w in info.warnings)


def test_malformed_kimage_lines_are_refused():
    snap = parse_snapshot(lines(vmx("@@KVM kimage /boot/linux.vmx /boot/linux.vmx\nversion $(reboot)\n")))
    assert snap.kimages["/boot/linux.vmx"].version == "" and snap.problems


def _kernels() -> list[Path]:
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    found += sorted(Path("/var/cache/kvm-drivers-lab").glob("*/boot/vmlinuz-*"))
    return [f for f in found if f.is_file() and os.access(f, os.R_OK)][:3]


@pytest.mark.skipif(not _kernels(), reason="no kernel image readable here")
@pytest.mark.parametrize("image", _kernels(), ids=lambda f: str(f))
def test_gather_block_reads_the_version_from_a_real_kernel(image, tmp_path):
    """gather.sh's kernel-image function, run by sh on a real bzImage behind an unversioned name."""
    (tmp_path / "linux.vmx").symlink_to(image)
    menu = tmp_path / "menu.lst"
    menu.write_text(f"default 0\ntitle x\n kernel (hd0,0){tmp_path}/linux.vmx vga=0x314\n initrd /boot/initrd.vmx\n")
    script = hostside.GATHER_FUNCTIONS + f"KVM_R=''; boot_confs={menu}; gather_kimages"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False).stdout
    snap = parse_snapshot(out.splitlines())
    img = snap.kimages[f"{tmp_path}/linux.vmx"]
    assert img.resolved == f"{tmp_path}/linux.vmx"
    assert img.version == re.sub(r"^vmlinuz-", "", image.name)  # the file's own name, read from its header
