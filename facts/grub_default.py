"""
Which entry of a menu does GRUB boot by default? Its lookup of the "default" value
(grub-core/normal/menu.c, upstream and Fedora/RHEL), and which of those a host's GRUB is.
"""

from __future__ import annotations

import re

from kvm_drivers.facts.boot_entries import BootEntry, _Item
from kvm_drivers.facts.distro import _version_tuple

# The default entry is worked out the way GRUB itself does it; the sources read (rhboot/grub2,
# whose branches carry upstream GRUB plus the Fedora/RHEL patches) are cited where used:
# - upstream grub-core/normal/menu.c (branch master, rhel-7.9): get_entry_number() parses the
#   "default" variable with grub_strtoul(); only when it does not start with a number is it
#   compared, with menuentry_eq(), to the title or id of the entries of the CURRENT menu (the
#   top level first). menuentry_eq() compares one '>'-separated component ('>>' is a literal
#   '>'). Not found or out of range: entry 0. grub_menu_execute_entry(): a submenu that is
#   booted gets as its own "default" what follows the first '>' (else "default" is unset:
#   its entry 0).
# - Fedora/RHEL menu.c (rhel-8-main, rhel-9-main, fedora-44; patch "Fix menu entry selection
#   based on ID and title", 2018): get_entry_number_helper() tries the ids first, then the
#   titles, and only then a number that must be the whole value ("1>2" is not a number there).
#   rhel-9-main and fedora-44 no longer unset "default" when entering a submenu (the new
#   environment context copies it, normal/context.c grub_env_context_open()).
# - grub-core/commands/menuentry.c: an entry without --id has its title as its id.
# - grub-core/commands/blscfg.c: see boot_menus.py parse_bls().


_DIGITS_OF = {10: re.compile("[0-9]*"), 8: re.compile("[0-7]*"), 16: re.compile("[0-9a-fA-F]*")}


def _grub_strtoul(value: str) -> tuple[int, str] | None:
    """grub_strtoul(value, &tail, 0) (kern/misc.c): (number, tail), None for GRUB_ERR_BAD_NUMBER."""
    s = value.lstrip(" \t\n\r\f\v")
    base = 10
    if s[:2].lower() == "0x":
        base, s = 16, s[2:]
    elif len(s) > 1 and s[0] == "0" and s[1] in "01234567":
        base = 8
    k = _DIGITS_OF[base].match(s).end()  # type: ignore[union-attr]
    if k == 0:
        return None
    return int(s[:k], base), s[k:]


_GT_RUN = re.compile(">+")


def _first_component(spec: str) -> tuple[str, str | None]:
    """('a>b' -> 'a', 'b'): the first '>'-separated component ('>>' is a '>'), and the rest.

    Read left to right, '>>' is a '>' and a single '>' ends the component: in a run of '>', pairs
    are literal, and an odd run's last '>' is the separator.
    """
    for m in _GT_RUN.finditer(spec):
        if (m.end() - m.start()) % 2:
            return spec[: m.end() - 1].replace(">>", ">"), spec[m.end() :]
    return spec.replace(">>", ">"), None


def _entry_number(items: list[_Item], spec: str, fedora: bool) -> int:
    """GRUB's get_entry_number() for one menu level; -1 when nothing matches."""
    first, _ = _first_component(spec)
    if not fedora:  # upstream: a leading number wins, else title or id, entry by entry
        number = _grub_strtoul(spec)
        if number is not None:
            return number[0]
        return next((i for i, it in enumerate(items) if first in (it.title, it.ident)), -1)
    # Fedora/RHEL: ids (the value up to the first blank), then titles, then a whole number.
    if not re.search(r"\s", spec):
        for i, it in enumerate(items):
            if it.ident and it.ident == first:
                return i
    for i, it in enumerate(items):
        if it.title == first:
            return i
    number = _grub_strtoul(spec)
    return number[0] if number is not None and number[1] == "" else -1


def _resolve(
    items: list[_Item], value: str | None, fedora: bool, keep: bool, warnings: list[str]
) -> tuple[_Item | None, str]:
    """The item GRUB boots by default, and its index path ('1>0')."""
    path: list[str] = []
    spec = value
    while True:
        if not items:
            return None, ">".join(path)
        idx = _entry_number(items, spec, fedora) if spec else -1
        if spec and not 0 <= idx < len(items):
            where = "the top level" if not path else f"submenu {'>'.join(path)}"
            warnings.append(f"default entry {spec!r} not found at {where} of the menu (GRUB looks titles and ids "
                            "up there only; an entry inside a submenu needs the 'submenu>entry' form): "
                            "GRUB falls back to its first entry")  # fmt: skip
        if not 0 <= idx < len(items):
            idx = 0
        item = items[idx]
        path.append(str(idx))
        if item.children is None:
            return item, ">".join(path)
        _, rest = _first_component(spec or "")
        spec = rest if rest else (spec if keep else None)  # a submenu named itself: its first entry
        items = item.children


def _flatten(items: list[_Item], prefix: str, out: list[BootEntry]) -> None:
    for i, item in enumerate(items):
        path = f"{prefix}{i}"
        if item.children is not None:
            _flatten(item.children, path + ">", out)
        elif item.entry is not None:
            item.entry.path = path
            out.append(item.entry)


def _grub_variant(files: dict[str, str | None]) -> str:
    """Which GRUB reads the menu, from os-release: 'upstream', 'rhel8' or 'fedora'.

    'rhel8': Fedora's entry lookups, RHEL 8's blscfg order; 'fedora': Fedora's lookups, BLS
    order by file name (Fedora >= 30, RHEL >= 9 and its rebuilds).
    """
    text = files.get("/etc/os-release") or files.get("/usr/lib/os-release") or ""
    fields = {k: v.strip("\"'") for k, v in re.findall(r"^([A-Z_]+)=(.*)$", text, re.M)}
    ids = {fields.get("ID", "")} | set(fields.get("ID_LIKE", "").split())
    major = (_version_tuple(fields.get("VERSION_ID", "")) or (0,))[0]
    if fields.get("ID") == "fedora":
        return "fedora" if major >= 30 or not major else "rhel8"
    if ids & {"rhel", "centos", "fedora"}:
        return "upstream" if 0 < major <= 7 else "rhel8" if major == 8 else "fedora"
    return "upstream"


def _index_of(entries: list[BootEntry], entry: BootEntry | None) -> int | None:
    """Where entry (the object itself) is in entries (None: not there)."""
    return next((i for i, e in enumerate(entries) if e is entry), None)


def _resolve_default(entries: list[BootEntry], value: str, warnings: list[str], variant: str = "upstream") -> int:
    """Index into a flat menu (BLS, GRUB legacy) of the entry GRUB boots for ``value``."""
    items = [_Item(e.title, e.ident, None, e) for e in entries]
    item, _ = _resolve(items, value, variant != "upstream", variant == "fedora", warnings)
    index = _index_of(entries, item.entry) if item is not None else None
    return index if index is not None else 0
