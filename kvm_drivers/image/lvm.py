"""LVM2 inside an image, read without device-mapper (pure): a physical volume's label and metadata
give each logical volume's place in it. A volume made of one linear segment on this physical volume
(what installers make: ``vg/root``, ``vg/swap``) is a plain run of bytes there, read like a partition;
any other kind (several segments, striped, thin, RAID, snapshots, cached) needs device-mapper and is
said, not read.

Layout (lvm2 lib/label/label.h, lib/format_text/layout.h): a label "LABELONE" in one of the first four
sectors; after it the pv_header (the PV's UUID, its data areas, then its metadata areas); each metadata
area starts with an mda_header whose first raw location is the current text metadata, written in a
circular buffer after the header. The text is lvm2's config syntax: ``name { key = value ... }``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

SECTOR = 512
LABEL_SECTORS = 4
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
METADATA_MAX = 1 << 20  # text metadata larger than this is refused (lvm2's default area is 1 MiB)
LABEL_BYTES = LABEL_SECTORS * SECTOR
AREA_MAX = 16 << 20  # the most of a metadata area read (its text is at most METADATA_MAX)
VOLUMES_MAX = 256  # logical volumes read from one volume group (each is probed, maybe mounted)
DEPTH_MAX = 16  # sections inside sections (lvm2 writes four levels)


class LvmError(Exception):
    """The physical volume cannot be read: the message says why."""


@dataclass(frozen=True)
class Volume:
    """A logical volume that is one linear run of this physical volume's bytes."""

    vg: str
    lv: str
    offset: int  # bytes from the physical volume's start
    size: int


def label(head: bytes) -> tuple[str, list[tuple[int, int]]]:
    """The PV's UUID and its metadata areas (offset, size: bytes from the PV's start), from its first
    four sectors.
    """
    for sector in range(LABEL_SECTORS):
        at = sector * SECTOR
        if head[at:at + 8] == b"LABELONE" and head[at + 24:at + 32] == b"LVM2 001":
            (offset,) = struct.unpack_from("<I", head, at + 20)
            pvh = at + offset
            if pvh + 40 > len(head):
                raise LvmError("its label points past the label sectors")
            uuid = head[pvh:pvh + 32].decode("ascii", "replace")
            pos, lists = pvh + 40, []
            for _ in range(2):  # data areas, then metadata areas: each list ends with a zero entry
                areas = []
                while True:
                    if pos + 16 > len(head):
                        raise LvmError("its label's area lists run past the label sectors")
                    start, size = struct.unpack_from("<QQ", head, pos)
                    pos += 16
                    if start == 0:
                        break
                    areas.append((start, size))
                lists.append(areas)
            return uuid, lists[1]
    raise LvmError("no LVM2 label in its first four sectors")


def metadata_text(area: bytes) -> str:
    """The current text metadata of one metadata area (its bytes from the mda_header on)."""
    if len(area) < SECTOR or area[4:20] != MDA_MAGIC:
        raise LvmError("its metadata area has no LVM2 header")
    version, start, size = struct.unpack_from("<IQQ", area, 20)
    offset, length = struct.unpack_from("<QQ", area, 40)
    (flags,) = struct.unpack_from("<I", area, 60)
    if version != 1 or not length or flags & 1:  # RAW_LOCN_IGNORED
        raise LvmError("its metadata area holds no metadata")
    if length > METADATA_MAX or offset >= len(area) or offset < SECTOR:
        raise LvmError(f"its metadata ({length} bytes at {offset}) is not inside its area")
    first = area[offset:offset + length]
    if len(first) < length:  # the circular buffer wraps to just after the header
        first += area[SECTOR:SECTOR + length - len(first)]
    return first.split(b"\0", 1)[0].decode("utf-8", "replace")


_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"?|[{}\[\]=,]|[^\s{}\[\]=,"#]+')  # '"...' unclosed: one token


def parse(text: str) -> dict:
    """lvm2's config syntax as nested dicts: sections, and values (int, str, or lists of them)."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    pos = 0

    def value() -> object:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "[":
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        if t.startswith('"'):
            if not re.fullmatch(r'"(?:[^"\\]|\\.)*"', t):
                raise LvmError("its metadata has an unterminated string")
            return re.sub(r"\\(.)", r"\1", t[1:-1])
        return int(t) if re.fullmatch(r"-?\d{1,30}", t) else t

    def section(depth: int = 0) -> dict:
        nonlocal pos
        if depth > DEPTH_MAX:
            raise LvmError("its metadata nests too deep")
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            key = tokens[pos]
            if tokens[pos + 1] == "{":
                pos += 2
                out[key] = section(depth + 1)
                pos += 1  # "}"
            elif tokens[pos + 1] == "=":
                pos += 2
                out[key] = value()
            else:
                raise LvmError(f"its metadata does not parse near {key[:40]!r}")
        return out

    try:
        return section()
    except IndexError:
        raise LvmError("its metadata ends early") from None


def volumes(uuid: str, meta: dict, pv_size: int) -> tuple[list[Volume], list[str]]:
    """The logical volumes of PV uuid that are one linear run of its bytes, and why the others are not read."""
    vgs = [(name, vg) for name, vg in meta.items() if isinstance(vg, dict) and "physical_volumes" in vg]
    if len(vgs) != 1:
        raise LvmError(f"its metadata describes {len(vgs)} volume groups, not one")
    vg_name, vg = vgs[0]
    extent = vg.get("extent_size")
    pvs, lvs = vg["physical_volumes"], vg.get("logical_volumes") or {}
    if not isinstance(pvs, dict) or not isinstance(lvs, dict):
        raise LvmError(f"volume group {vg_name}: its volumes are not sections")
    mine = [n for n, pv in pvs.items()
            if isinstance(pv, dict) and str(pv.get("id", "")).replace("-", "") == uuid]  # fmt: skip
    if len(mine) != 1 or not isinstance(extent, int) or extent <= 0:
        raise LvmError(f"volume group {vg_name}: this physical volume is not in its metadata")
    pv = pvs[mine[0]]
    pe_start = pv.get("pe_start")
    if not isinstance(pe_start, int) or pe_start < 0:
        raise LvmError(f"volume group {vg_name}: no pe_start for this physical volume")
    found, skipped = [], []
    segment_types = {v.get("type") for lv in lvs.values() if isinstance(lv, dict)
                     for k, v in lv.items() if k.startswith("segment") and isinstance(v, dict)}  # fmt: skip
    if segment_types & {"snapshot", "thin", "thin-pool", "cache", "cache-pool", "writecache", "vdo"}:
        raise LvmError(f"volume group {vg_name} has snapshots, thin, cached or VDO volumes: not supported "
                       "(their volumes must not be written without device-mapper)")  # fmt: skip
    if len(lvs) > VOLUMES_MAX:
        raise LvmError(f"volume group {vg_name} has {len(lvs)} logical volumes: more than {VOLUMES_MAX}")
    for name, lv in lvs.items():
        status = lv.get("status") if isinstance(lv, dict) else None
        if not isinstance(status, list) or "VISIBLE" not in status:
            continue
        segments = [v for k, v in lv.items() if re.fullmatch(r"segment\d+", k) and isinstance(v, dict)]
        seg = segments[0] if len(segments) == 1 else {}
        stripes = seg.get("stripes")
        stripes = stripes if isinstance(stripes, list) else []
        if not (seg.get("type") == "striped" and seg.get("stripe_count") == 1 and seg.get("start_extent") == 0
                and len(stripes) == 2 and stripes[0] == mine[0] and isinstance(stripes[1], int) and stripes[1] >= 0
                and isinstance(seg.get("extent_count"), int)):  # fmt: skip
            kind = f"{len(segments)} segments" if len(segments) != 1 else f"a {seg.get('type')} segment" + (
                " on another physical volume" if stripes[:1] != mine else "")
            skipped.append(f"LVM volume {vg_name}/{name}: {kind}, which needs device-mapper: not read")
            continue
        offset = (pe_start + stripes[1] * extent) * SECTOR
        size = seg["extent_count"] * extent * SECTOR
        if offset < pe_start * SECTOR or size <= 0 or offset + size > pv_size:
            skipped.append(f"LVM volume {vg_name}/{name} is not inside its physical volume: not read")
            continue
        found.append(Volume(vg_name, name, offset, size))
    return found, skipped


def mapper_names(vg: str, lv: str) -> tuple[str, str]:
    """How fstab and kernel lines name a volume: /dev/mapper/VG-LV (dashes doubled) and /dev/VG/LV."""
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}", f"/dev/{vg}/{lv}"
