"""LVM inside an image, read without device-mapper (kvm_drivers.image.lvm), against lvm2's own answer.

The fixture is the first MiB of a real physical volume, made here by Debian 12's lvm2 on a loop device
with activation off (``global{activation=0}``: no device-mapper needed to write metadata):

    pvcreate $L; vgcreate vg-kvm $L; lvcreate -an -Zn -L 20M -n root vg-kvm
    lvcreate -an -Zn -L 8M -n swap-1 vg-kvm; lvcreate -an -Zn -L 4M -n home vg-kvm
    lvcreate -an -Zn -L 4M -n tmp vg-kvm; lvextend -L +4M vg-kvm/home; lvremove vg-kvm/tmp

Six metadata versions sit in its circular buffer; lvm2's ``lvs --segments`` on it is kept beside it
(lvm-lvs.txt): the oracle the reader is compared with. The lab's LVM image (tests/test_lab_images.py)
is made by real lvm2 too and booted by the guest's own LVM.
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import pytest

from kvm_drivers.image import layout, lvm

FIX = Path(__file__).parent / "fixtures/images"
HEAD = gzip.decompress((FIX / "lvm-pv-head.bin.gz").read_bytes())
PV_SIZE = 64 << 20


def read(head: bytes = HEAD) -> tuple[list[lvm.Volume], list[str]]:
    uuid, areas = lvm.label(head[: lvm.LABEL_BYTES])
    start, size = areas[0]
    return lvm.volumes(uuid, lvm.parse(lvm.metadata_text(head[start : start + size])), PV_SIZE)


def lvs_oracle() -> dict[str, list[tuple[int, int]]]:
    """lvm2's segments per volume: (first extent on the PV, extent count)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for line in (FIX / "lvm-lvs.txt").read_text().splitlines():
        if m := re.fullmatch(r"\s*(\S+)\s+(\S+)\s+\d+\s+(\d+)\s+\S+:(\d+)-(\d+)", line):
            out.setdefault(f"{m.group(1)}/{m.group(2)}", []).append((int(m.group(4)), int(m.group(3))))
    return out


def test_single_segment_volumes_are_where_lvm2_puts_them_and_the_others_are_said():
    found, skipped = read()
    oracle = lvs_oracle()
    pe_start, extent = (int(x.rstrip("B")) for x in (FIX / "lvm-lvs.txt").read_text().split()[-2:])
    assert {f"{v.vg}/{v.lv}" for v in found} == {k for k, segs in oracle.items() if len(segs) == 1}
    for v in found:
        ((first, count),) = oracle[f"{v.vg}/{v.lv}"]
        assert (v.offset, v.size) == (pe_start + first * extent, count * extent), v
    assert skipped == ["LVM volume vg-kvm/home: 2 segments, which needs device-mapper: not read"]


def test_fstab_and_kernel_names_of_a_volume_find_its_file_system():
    part = layout.Part(2, 1 << 20, PV_SIZE)
    fs = layout.Fs(layout.Part(2, part.offset + 22020096, 8 << 20, lv="vg-kvm/swap-1"), "swap")
    assert lvm.mapper_names("vg-kvm", "swap-1") == ("/dev/mapper/vg--kvm-swap--1", "/dev/vg-kvm/swap-1")
    assert layout.find("/dev/mapper/vg--kvm-swap--1", [fs]) == (fs, "")
    assert layout.find("/dev/vg-kvm/swap-1", [fs]) == (fs, "")
    assert layout.find("/dev/mapper/vg-kvm-swap-1", [fs])[0] is None  # dashes not doubled: another name
    assert layout.find("/dev/vda2", [fs])[0] is None  # the partition is the PV, not this volume
    assert fs.part.name == "LVM volume vg-kvm/swap-1"


def test_a_volume_said_to_lie_past_its_physical_volume_is_not_read():
    uuid, areas = lvm.label(HEAD[: lvm.LABEL_BYTES])
    start, size = areas[0]
    found, skipped = lvm.volumes(uuid, lvm.parse(lvm.metadata_text(HEAD[start : start + size])), 8 << 20)
    assert found == [] and all("not inside its physical volume" in s for s in skipped[:2]), skipped


@pytest.mark.parametrize("damage, why", [
    (lambda h: h[:512] + b"\0" * 512 + h[1024:], "no LVM2 label"),
    (lambda h: h[:4096 + 4] + b"X" * 16 + h[4096 + 20:], "no LVM2 header"),
    (lambda h: h[:4096 + 40] + struct.pack("<Q", 1 << 40) + h[4096 + 48:], "not inside its area"),
    (lambda h: h[:4096 + 60] + struct.pack("<I", 1) + h[4096 + 64:], "holds no metadata"),  # RAW_LOCN_IGNORED
])  # fmt: skip
def test_a_damaged_or_crafted_physical_volume_is_an_error_that_says_why(damage, why):
    with pytest.raises(lvm.LvmError, match=why):
        read(damage(HEAD))


def test_metadata_that_names_another_physical_volume_or_ends_early_is_an_error():
    text = 'vg { id = "x" extent_size = 8192 physical_volumes { pv0 { id = "other" pe_start = 2048 } } }'
    with pytest.raises(lvm.LvmError, match="not in its metadata"):
        lvm.volumes("mine", lvm.parse(text), PV_SIZE)
    with pytest.raises(lvm.LvmError, match="ends early"):
        lvm.parse('vg { id = "x" physical_volumes { pv0 { id = ')
    with pytest.raises(lvm.LvmError, match="does not parse"):
        lvm.parse("vg { id }")


def vg_text(lvs: str, pvs: str = 'pv0 { id = "mine" pe_start = 2048 }') -> str:
    return f'vg {{ id = "x" extent_size = 8192 physical_volumes {{ {pvs} }} logical_volumes {{ {lvs} }} }}'


def linear(name: str, first: int, count: int = 1, kind: str = "striped") -> str:
    return (f'{name} {{ status = ["READ", "WRITE", "VISIBLE"] segment_count = 1 segment1 {{ start_extent = 0 '
            f'extent_count = {count} type = "{kind}" stripe_count = 1 stripes = ["pv0", {first}] }} }}')


@pytest.mark.parametrize("text, why", [
    ("a { " * 100_000, "nests too deep"),  # not a RecursionError
    ('x = "' + '\\"' * 200_000, "unterminated string"),  # linear, not seconds per kilobyte
    ('vg { extent_size = 8192 physical_volumes = 1 }', "not sections"),
    (vg_text("").replace("logical_volumes {  }", "logical_volumes = 5"), "not sections"),
    (vg_text(linear("root", 0) + " " + linear("snap", 1, kind="snapshot")), "snapshots"),
    (vg_text(" ".join(linear(f"lv{i}", i) for i in range(300))), "more than 256"),
])  # fmt: skip
def test_crafted_metadata_is_an_error_that_says_why_and_costs_little(text, why):
    with pytest.raises(lvm.LvmError, match=why):
        lvm.volumes("mine", lvm.parse(text), PV_SIZE)


def test_odd_values_and_places_are_not_read():
    lvs = " ".join([linear("neg", -1), linear("past", 100), 'odd { status = 5 }',
                    'bad { status = ["VISIBLE"] segment1 { type = "striped" stripe_count = 1 start_extent = 0 '
                    'extent_count = 1 stripes = 7 } }', linear("ok", 2)])  # fmt: skip
    found, skipped = lvm.volumes("mine", lvm.parse(vg_text(lvs)), PV_SIZE)
    assert [v.lv for v in found] == ["ok"] and found[0].offset == 2048 * 512 + 2 * 8192 * 512
    assert len(skipped) == 3 and any("vg/neg" in s for s in skipped) and any("vg/past" in s for s in skipped)
