"""
Which entries does the bootloader configuration in use offer, and which one boots by default?
GRUB 2 grub.cfg (run by grub_script.py), BLS /boot/loader/entries in blscfg's order, GRUB
legacy menu.lst, and which of them a host boots with (``parse_boot()``).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from kvm_drivers.facts.boot_entries import (
    MAX_BOOT_ENTRIES,
    BootConfig,
    BootConfigTooLarge,
    BootEntry,
    _Item,
    choose_initrd,
    extra_initrds,
    kernel_from_path,
    strip_device,
)
from kvm_drivers.facts.grub_default import _flatten, _grub_strtoul, _grub_variant, _index_of, _resolve, _resolve_default
from kvm_drivers.facts.grub_script import _GrubScript, parse_grubenv
from kvm_drivers.facts.grub_words import _VAR, GRUB_RUNTIME, ExpansionBudget
from kvm_drivers.facts.rpmvercmp import split_key
from kvm_drivers.facts.wire import Snapshot
from kvm_drivers.hostside import OTHER_LOADERS  # defined once, sent to gather.sh


def parse_grub2(
    text: str, env: dict[str, str], source: str, bls: list[BootEntry] | None = None, variant: str = "upstream",
    budget: ExpansionBudget | None = None, files: dict[str, str | None] | None = None, path: str = "",
) -> BootConfig:  # fmt: skip
    """Entries and default of a GRUB 2 grub.cfg, evaluated as GRUB does (see grub_default.py).

    Blocks opened and closed on one line, if/elif/else/fi (a 'set default' runs only when its
    condition holds for the grubenv given), variables, submenus, 'source' of the files given
    (``files``, the host's; ``path``: this file's own, for ${config_directory}). ``bls``: the
    entries that a 'blscfg' command in the file adds, in their menu order; when not given and
    ``files`` holds /boot/loader/entries, they are read from there, their variables expanded
    as GRUB expands them at boot (with what grub.cfg and grubenv set). ``budget``: shared with
    the other files read for the same host (default: this file's own).
    """
    cfg = BootConfig(source)
    script = _GrubScript(env, variant == "fedora", variant != "upstream", budget, files, path)
    script.run(text)
    cfg.warnings += script.warnings
    cfg.doubts += script.doubts
    top = script.top
    if bls is None and files is not None and any(i.bls for i in top):
        found = parse_bls(files, env, variant if variant != "upstream" else "fedora", script.vars)
        bls = found.entries
        cfg.warnings += found.warnings
    if bls is not None:  # blscfg puts the BLS entries where it is called
        calls = sum(1 for item in top if item.bls)
        if script.items + calls * (len(bls) - 1) > MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"grub.cfg and its BLS entries: more than {MAX_BOOT_ENTRIES} menu entries")
        spliced: list[_Item] = []
        for item in top:
            spliced += [_Item(e.title, e.ident, None, e) for e in bls] if item.bls else [item]
        top = spliced
    top = [i for i in top if not i.bls]
    _flatten(top, "", cfg.entries)
    if not cfg.entries:
        return cfg
    value = script.vars.get("default")
    if script.default_doubt or value is None and "default" in script.vars:
        cfg.doubts.append(f"{path or source}: cannot tell which entry GRUB boots: "
                          f"{script.default_doubt or 'default cannot be evaluated'}")  # fmt: skip
        value = None
    if env.get("next_entry") and value == env.get("next_entry"):
        cfg.warnings.append(f"next_entry={value!r} in grubenv: the next boot only boots it")
    fedora = variant != "upstream"
    item, _ = _resolve(top, value, fedora, variant == "fedora", cfg.warnings)
    index = _index_of(cfg.entries, item.entry) if item is not None else None
    if index is not None:
        cfg.default = index
    else:
        cfg.warnings.append("the default is an empty submenu")
    return cfg


def bls_sort_key(variant: str = "fedora", use_version: bool = True) -> Callable[[tuple[str, str]], Any]:
    """Sort key of (file name without '.conf', version field) that puts BLS entries in the
    menu order of GRUB's blscfg when sorted with ``reverse=True`` (newest first).

    rhboot/grub2 grub-core/commands/blscfg.c: on RHEL 8 (branch rhel-8-main) bls_cmp() compares
    the 'version' fields with split_cmp() (version, then release, by vercmp()) when every entry
    has one, then the file names (name-version-release without '.conf'); the sorted array is
    added to the menu from its end. From Fedora 30 and RHEL 9 on (commit 5b463a17e, "store the
    BLS entries in a sorted linked list"; branches rhel-9-main, fedora-44) only the file name
    is compared (split_cmp(), name first: the machine-id), newest first, and a second entry that
    compares equal is dropped.

    The key orders as those comparisons do (see split_key()), so a stable sort on it gives the
    order a stable sort with split_cmp() would, in O(n log n) tuple comparisons.
    """
    caret = None if variant == "rhel8" else "+"

    def key(x: tuple[str, str]) -> tuple:
        name, version = x
        if variant == "rhel8" and use_version:
            return split_key(version, False, caret), split_key(name, True, caret)
        return (split_key(name, True, caret),)

    return key


def _expand_bls(value: str, variables: dict[str, str | None]) -> tuple[str, str]:
    """A BLS value with its $variables expanded as GRUB does at boot, and the first one only
    GRUB knows ('' when none): blscfg.c makes each key a line of a menuentry's script.
    """
    unknown = ""

    def one(m: re.Match) -> str:
        nonlocal unknown
        name = m.group(1) or m.group(2)
        if variables.get(name) is None and (name in variables or name in GRUB_RUNTIME):
            unknown = unknown or f"${name}"
            return ""
        return variables.get(name) or ""

    return _VAR.sub(one, value), unknown


def parse_bls(
    files: dict[str, str | None], env: dict[str, str], variant: str = "fedora",
    variables: dict[str, str | None] | None = None,
) -> BootConfig:
    """Entries of /boot/loader/entries/*.conf (Boot Loader Specification) in blscfg's menu order.

    ``variables``: what grub.cfg set (its $kernelopts, $tuned_initrd...); grubenv's when not given.
    """
    variables = dict(env) if variables is None else variables
    cfg = BootConfig("/boot/loader/entries")
    found: list[tuple[str, str, BootEntry]] = []
    for path, text in sorted(files.items()):
        if not path.startswith("/boot/loader/entries/") or not path.endswith(".conf") or text is None:
            continue
        if len(found) >= MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"/boot/loader/entries: more than {MAX_BOOT_ENTRIES} entries")
        keys: dict[str, list[str]] = {}
        for line in text.splitlines():  # blscfg.c read_entry(): key, blanks, value
            parts = line.strip(" \t").split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                keys.setdefault(parts[0], []).append(parts[1].strip())
        ident = path.rsplit("/", 1)[-1][: -len(".conf")]
        linux = keys.get("linux", [""])[0]
        version = keys.get("version", [""])[0]
        # ostree (Fedora CoreOS): 'version 2' is a deployment serial; the kernel is in the path.
        kernel = kernel_from_path(linux) or (version if re.match(r"^\d+\.\d+", version) else "")
        initrd_line, unknown_i = _expand_bls(" ".join(keys.get("initrd", [])), variables)
        options, unknown_o = _expand_bls(" ".join(keys.get("options", [])), variables)
        initrds = initrd_line.split()
        title = keys.get("title", [linux])[0]
        entry = BootEntry(title, kernel, choose_initrd(initrds), ident, "", linux, " ".join(options.split()))
        entry.origin = path
        entry.extra_initrds = extra_initrds(initrds, entry.initrd)
        if unknown_i or unknown_o:
            entry.unknown = f"its {'initrd' if unknown_i else 'options'} line uses {unknown_i or unknown_o}, " \
                            "which only GRUB knows"
        found.append((ident, version if "version" in keys else "", entry))
    use_version = all(v for _, v, _ in found)  # blscfg.c: sort by version only if every entry has one
    key = bls_sort_key(variant, use_version)
    found.sort(key=lambda f: key((f[0], f[1])), reverse=True)
    # "compares equal" (split_cmp() == 0) is "has the same split_key()": a set finds it
    seen: set[tuple] = set()
    for ident, _, entry in found:
        if variant != "rhel8":
            same = split_key(ident, True, "+")
            if same in seen:
                cfg.warnings.append(f"BLS entry {ident} compares equal to another one: blscfg drops it")
                continue
            seen.add(same)
        if not entry.linux_path:  # blscfg.c create_entry(): "Skipping file ... with no 'linux' key"
            continue
        cfg.entries.append(entry)
    for i, entry in enumerate(cfg.entries):
        entry.path = str(i)
    if cfg.entries:
        cfg.default = _resolve_default(cfg.entries, env.get("saved_entry", ""), cfg.warnings, variant)
    return cfg


def parse_grub_legacy(text: str, saved: str | None, source: str) -> BootConfig:
    """Entries and default of a GRUB legacy menu.lst / grub.conf.

    GRUB 0.97 stage2/cmdline.c and builtins.c: 'default N' counts titles from 0, 'default saved'
    takes the number stored by savedefault/grub-set-default (the file /boot/grub/default);
    a default past the last entry boots entry 0.
    """
    cfg = BootConfig(source)
    default = "0"
    current: BootEntry | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[\s=]+", line, maxsplit=1)
        key, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
        if key == "default" and current is None:
            default = rest.strip()
        elif key == "title":
            if len(cfg.entries) >= MAX_BOOT_ENTRIES:
                raise BootConfigTooLarge(f"{source}: more than {MAX_BOOT_ENTRIES} entries")
            current = BootEntry(rest.strip(), "", "", "", str(len(cfg.entries)), origin=source)
            cfg.entries.append(current)
        elif current is not None and key == "kernel" and rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            if words:
                current.linux_path = strip_device(words[0])
                current.kernel = kernel_from_path(current.linux_path)
                current.options = " ".join(words[1:])
        elif current is not None and key == "initrd" and rest:
            current.initrd = choose_initrd(rest.split())
    if cfg.entries:
        if default == "saved":
            default = (saved or "0").strip().split()[0] if (saved or "").strip() else "0"
        number = _grub_strtoul(default)
        index = number[0] if number is not None else -1
        if not 0 <= index < len(cfg.entries):
            cfg.warnings.append(f"default {default!r} is not an entry number: GRUB boots the first entry")
            index = 0
        cfg.default = index
    return cfg


# Configurations of boot loaders kvm-drivers does not read: on a host that has one, which loader
# really boots (and what) cannot be told from GRUB's files alone.


def parse_boot(files: dict[str, str | None]) -> BootConfig | None:
    """The bootloader configuration in use, read (never regenerated): BLS, GRUB 2 or GRUB legacy.

    Its ``doubts`` say what keeps the boot path from being known (another loader's configuration
    on the host, a file GRUB would read that was not sent...).
    """
    cfg = _parse_boot(files)
    others = [f"{path} exists: this host may boot with {name}, which kvm-drivers does not read"
              for path, name in OTHER_LOADERS.items() if path in files]  # fmt: skip
    if others:
        cfg = cfg or BootConfig(", ".join(p for p in OTHER_LOADERS if p in files))
        cfg.doubts = others + cfg.doubts
    return cfg


def _parse_boot(files: dict[str, str | None]) -> BootConfig | None:
    env: dict[str, str] = {}
    for p in ("/boot/grub2/grubenv", "/boot/grub/grubenv"):
        env = env or parse_grubenv(files.get(p))
    variant = _grub_variant(files)
    grub2 = [(p, files.get(p)) for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")]
    grub2 += sorted((p, t) for p, t in files.items() if p.startswith("/boot/efi/EFI/"))
    has_bls = any(p.startswith("/boot/loader/entries/") for p in files)
    warnings = [f"{p}: unreadable" for p, t in grub2 if p in files and t is None]
    read: list[BootConfig] = []  # the BLS entries, read once (not once per EFI grub.cfg calling blscfg)
    budget = ExpansionBudget()

    def bls_entries() -> BootConfig:
        if not read:
            read.append(parse_bls(files, env, variant if variant != "upstream" else "fedora"))
        return read[0]

    for path, text in grub2:
        if not text:
            continue
        if re.search(r"^[^\S\n]*blscfg\b", text, re.M):  # = ^\s*blscfg, without its quadratic backtracking
            # the BLS entries are read with this file's variables only when there are any (read
            # once to know): a file that yields none moves on without reading them again
            bls = bls_entries()
            cfg = parse_grub2(text, env, f"{path} (blscfg) + /boot/loader/entries", None if bls.entries else [],
                              variant, budget, files, path)  # fmt: skip
            if cfg.entries:
                cfg.warnings = warnings + bls.warnings + cfg.warnings
                return cfg
            continue
        cfg = parse_grub2(text, env, path, None, variant, budget, files, path)
        if cfg.entries:
            cfg.warnings = warnings + cfg.warnings
            return cfg
    if has_bls:
        cfg = bls_entries()
        cfg.warnings = warnings + cfg.warnings
        return cfg
    for path in ("/boot/grub/menu.lst", "/boot/grub/grub.conf"):
        text = files.get(path)
        if text:
            cfg = parse_grub_legacy(text, files.get("/boot/grub/default"), path)
            if cfg.entries:
                cfg.warnings = warnings + cfg.warnings
                return cfg
    if warnings:
        return BootConfig(", ".join(p for p, _ in grub2 if p in files), warnings=warnings)
    return None


def tie_unversioned_entries(boot: BootConfig, snap: Snapshot) -> list[str]:
    """Give entries that boot an image without a version in its name (/boot/linux.vmx) their kernel.

    Through the image itself, never its name: the version in its bzImage header when that kernel
    is installed (/lib/modules/<version>), else a versioned image that is the same file.
    """
    notes = []
    owners: dict[str, str] = {}  # image -> the first kernel (in the answer's order) that has it
    for k in snap.kernels.values():
        for image in k.images:
            owners.setdefault(image, k.version)
    order = {version: i for i, version in enumerate(snap.kernels)}
    tied: dict[str, tuple[str, str]] = {}  # image as written -> (kernel, how): once per image
    for entry in boot.entries:
        img = snap.kimages.get(entry.linux_path) if not entry.kernel and entry.linux_path else None
        if img is None:
            continue
        if img.version and img.version in snap.kernels:
            entry.kernel, how = img.version, "its header's version string"
        else:
            if entry.linux_path not in tied:
                found = [owners[x] for x in img.same if x in owners]
                owner = min(found, key=order.__getitem__) if found else ""
                tied[entry.linux_path] = (owner, f"the same file as {' '.join(img.same):.300}")
            owner, how = tied[entry.linux_path]
            if not owner:
                notes.append(f"bootloader entry '{entry.title}' boots {entry.linux_path}, which is not tied to "
                             f"an installed kernel (header version {img.version or 'unreadable'})")  # fmt: skip
                continue
            entry.kernel = owner
        notes.append(f"bootloader entry '{entry.title}' boots {entry.linux_path}: kernel {entry.kernel} ({how})")
    return notes
