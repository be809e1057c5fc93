"""Crafted gather answers at the full answer cap (facts/kvm_drivers.py OUTPUT_CAP), one per shape
that used to cost the control side super-linear time to read (issue 18, item 6 "Stall").

Each is a real gather answer (the captured Debian 12 one of tests/fixtures, or the same dressed
as RHEL 9 / RHEL 8) grown to just under the cap in one bad shape. ``answer(shape)`` builds it;
``python3 -m tests.crafted [SHAPE...] [--fraction F] [--limit S]`` times reading each one
(the fact's own read_answer, inline or not) and prints the figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

FIX = Path(__file__).parent / "fixtures"
ITOOLS = (FIX / "gather-bookworm-itools.txt").read_text().splitlines()
CAP = 32 * 1024 * 1024  # facts/kvm_drivers.py OUTPUT_CAP (checked in tests/test_parse_bounds.py)
KERNEL = "6.1.0-50-amd64"
RHEL9 = 'NAME="Red Hat Enterprise Linux"\nVERSION="9.4 (Plow)"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n'
RHEL8 = 'NAME="Red Hat Enterprise Linux"\nVERSION="8.10 (Ootpa)"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="8.10"\n'
MID = "6a9857a393724b7a981ebb5b8495b9ea"  # a machine-id, as BLS file names start


def _section_bounds(lines: list[str], header: str) -> tuple[int, int]:
    start = lines.index(header)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("@@KVM "))
    return start, end


def base(os_release: str | None = None, grub: list[str] | None = None, files: dict[str, list[str]] | None = None,
         sections: list[str] | None = None) -> list[str]:  # fmt: skip
    """The captured Debian 12 answer, with another os-release, grub.cfg body, more file sections
    (inserted before the kernel section) and more sections (before 'end').
    """
    lines = list(ITOOLS)
    if os_release is not None:
        for name in ("/etc/os-release", "/usr/lib/os-release"):
            s, e = _section_bounds(lines, f"@@KVM file {name}")
            lines[s + 1 : e] = os_release.splitlines() + [""]
        s, e = _section_bounds(lines, "@@KVM file /etc/debian_version")
        del lines[s:e]
        lines.insert(lines.index("@@KVM meta") + 1, "tool dracut /usr/bin/dracut")
    if grub is not None:
        s, e = _section_bounds(lines, "@@KVM file /boot/grub/grub.cfg")
        lines[s + 1 : e] = grub + [""]
    at = lines.index(f"@@KVM kernel {KERNEL}")
    extra: list[str] = []
    for path, body in (files or {}).items():
        extra += [f"@@KVM file {path}", *body, ""]
    lines[at:at] = extra
    if sections:
        lines[-1:-1] = sections
    return lines


def size(lines: list[str]) -> int:
    return sum(map(len, lines)) + len(lines)


def fill(unit: Callable[[int], list[str]], budget: int) -> list[str]:
    """unit(0), unit(1)... until they take budget bytes."""
    out: list[str] = []
    used, i = 0, 0
    while True:
        more = unit(i)
        cost = size(more)
        if used + cost > budget:
            return out
        out += more
        used += cost
        i += 1


def nested(opening: str, middle: list[str], closing: str, budget: int) -> list[str]:
    """opening x N, middle, closing x N within budget bytes."""
    n = (budget - size(middle)) // (len(opening) + len(closing) + 2)
    return [opening] * n + middle + [closing] * n


ENTRY = [
    f"menuentry 'Debian GNU/Linux' --class debian --id 'gnulinux-{KERNEL}' {{",
    f"\tlinux\t/boot/vmlinuz-{KERNEL} root=/dev/vda ro quiet",
    f"\tinitrd\t/boot/initrd.img-{KERNEL}",
    "}",
]


def _bls_unit(i: int) -> list[str]:
    v = f"5.14.0-{i}.el9.x86_64"
    return [f"@@KVM file /boot/loader/entries/{MID}-{v}.conf", f"title Red Hat Enterprise Linux ({v}) 9.4",
            f"version {v}", f"linux /vmlinuz-{v}", f"initrd /initramfs-{v}.img", "options ro", ""]  # fmt: skip


def _kernel_unit(i: int) -> list[str]:
    k = f"6.1.0-{i}-amd64"
    return [f"@@KVM kernel {k}", f"image /boot/vmlinuz-{k}", "has builtin", "has dep",
            f"module virtio_blk k/{i}", "closure virtio_blk virtio_blk"]  # fmt: skip


def _entry_unit(i: int) -> list[str]:
    k = f"6.1.0-{i}-amd64"
    return [f"menuentry 'k{i}' {{", f"linux /boot/vmlinuz-{k}", f"initrd /boot/initrd.img-{k}", "}"]


def _shapes() -> dict[str, Callable[[int], list[str]]]:
    """shape name -> a function of the byte budget giving the whole answer."""
    room = CAP - 64 - size(ITOOLS) - 1024  # what a shape may add to the base answer

    def bls(os_release: str) -> Callable[[int], list[str]]:
        return lambda b: base(os_release, grub=["set default=\"${saved_entry}\"", "blscfg"],
                              sections=fill(_bls_unit, b))  # fmt: skip

    # What grows with a product of counts is bounded by the answer's caps (facts/wire.py
    # MAX_KERNELS, MAX_DRIVERS, MAX_CLOSURE, MAX_KERNEL_DIRS, MAX_SAME): these stay just under them.
    kernels = [line for i in range(1000) for line in _kernel_unit(i)]

    def kernels_and_entries(b: int) -> list[str]:
        # 1,000 kernels and as many boot entries as fit, spread over them
        return base(grub=fill(lambda i: _entry_unit(i % 1000), b - size(kernels)), sections=kernels)

    def unversioned_images(b: int) -> list[str]:
        # entries booting 64 images without a version, each the same file as 64 others (no kernel's)
        kimages = [f"@@KVM kimage /boot/linux{j}.vmx /boot/linux{j}.vmx" for j in range(64)]
        kimages = [x for j in range(64) for x in [kimages[j]] + [f"same /boot/vmlinux-{j}-{k}" for k in range(64)]]
        entries = fill(lambda i: [f"menuentry 'v{i}' {{", f"linux /boot/linux{i % 64}.vmx", "}"],
                       b - size(kernels) - size(kimages))  # fmt: skip
        return base(grub=entries, sections=kernels + kimages)

    def shared_initrd(b: int) -> list[str]:
        # 1,000 kernels whose entries all name one initrd, which holds the modules of 64 other kernels
        initrd = [
            "@@KVM ref /boot/initrd.img-shared /boot/initrd.img-shared",
            "@@KVM initrd /boot/initrd.img-shared 1000",
            "magic 1f8b",
        ] + [f"kver 9.{j}" for j in range(64)]
        entries = fill(
            lambda i: [
                f"menuentry 'k{i}' {{",
                f"linux /boot/vmlinuz-6.1.0-{i % 1000}-amd64",
                "initrd /boot/initrd.img-shared",
                "}",
            ],
            b - size(kernels) - size(initrd),
        )
        return base(grub=entries, sections=kernels + initrd)  # fmt: skip

    def too_many_kernels(b: int) -> list[str]:
        return base(sections=fill(_kernel_unit, b))

    def big_closure(b: int) -> list[str]:
        # one closure of a million modules (refused: MAX_CLOSURE), and an initrd listing them
        n = b // 19  # a name in the closure line and a line of the initrd listing for each
        lines = base()
        at = lines.index("closure virtio_blk virtio_blk,virtio_ring,virtio")
        lines[at] = "closure virtio_blk " + ",".join(["virtio_blk"] + [f"m{j}" for j in range(n)])
        i = lines.index("m xen_netfront")
        lines[i + 1 : i + 1] = [f"m m{j}" for j in range(n)]
        return lines

    def many_drivers(b: int) -> list[str]:
        # 256 drivers looked up, each a module in as many kernels as fit
        names = [f"d{j}" for j in range(256)]
        per = [f"module {d} k/{d}.ko" for d in names] + [f"closure {d} {d}" for d in names]
        lines = base(sections=fill(lambda i: [f"@@KVM kernel 6.1.0-{i}-amd64", f"image /boot/vmlinuz-6.1.0-{i}-amd64",
                                              "has dep", *per], b - 3000))  # fmt: skip
        lines[1] = "drivers " + " ".join(names)
        return lines

    def big_closures(b: int) -> list[str]:
        # 256 drivers whose closures hold 256 modules each, in as many kernels as fit, and one
        # initrd (every kernel's, by its name) listing all those modules
        names = [f"d{j}" for j in range(256)]
        closures = [f"closure {d} {d}," + ",".join(f"m{j}x{k}" for k in range(255)) for j, d in enumerate(names)]
        per = [f"module {d} k/{d}.ko" for d in names] + closures
        listing = ["@@KVM initrd /boot/initrd.img-all 1000", "magic 1f8b"]
        listing += [f"m {d}" for d in names] + [f"m m{j}x{k}" for j in range(256) for k in range(255)]
        grub = fill(lambda i: [f"menuentry 'k{i}' {{", f"linux /boot/vmlinuz-6.1.0-{i}-amd64",
                               "initrd /boot/initrd.img-all", "}"], 100_000)  # fmt: skip
        count = (b - size(listing) - 104_000) // (size(per) + 80)
        lines = base(grub=grub, sections=[x for i in range(count) for x in [f"@@KVM kernel 6.1.0-{i}-amd64",
                     f"image /boot/vmlinuz-6.1.0-{i}-amd64", "has dep", *per]] + listing)  # fmt: skip
        lines[1] = "drivers " + " ".join(names)
        return lines

    def submenu_vars(b: int) -> list[str]:
        # many exported variables, then many submenus: each one's context copied them all
        half = b // 2
        exported = fill(lambda i: [f"set v{i}=x", f"export v{i}"], half)
        subs = fill(lambda i: [f"submenu 's{i}' {{", "}"], half)
        return base(grub=exported + subs + ENTRY)

    def doubling(b: int) -> list[str]:
        # each 'set' doubles a value: 2^N bytes from N lines
        return base(grub=["set a=xxxxxxxx"] + fill(lambda i: ["set a=$a$a"], b) + ENTRY)

    def long_default(b: int) -> list[str]:
        depth = 200
        spec = ">".join(["s"] * ((b - 40 * depth) // 2))
        subs = nested("submenu 's' {", [*ENTRY], "}", 40 * depth)
        return base(grub=[f"set default='{spec}'", *subs])

    def digits_default(b: int) -> list[str]:
        return base(grub=["set default=" + "0x" + "1" * (b - 40), *ENTRY])

    def dracut_open_quote(b: int) -> list[str]:
        per = b // 200
        body = ['add_drivers+=" virtio_blk'] + ["x" * per] * 199
        return base(RHEL9, files={"/etc/dracut.conf.d/50-crafted.conf": body})

    def dracut_continued(b: int) -> list[str]:
        body = ['add_drivers+=" \\'] + ["a \\"] * (b // 4)  # one statement of 8 million continued lines
        return base(RHEL9, files={"/etc/dracut.conf.d/50-crafted.conf": body})

    def efi_blscfg(b: int) -> list[str]:
        # a grub.cfg calling blscfg on the EFI partition of every vendor name, and no BLS entry to add:
        # each one read the BLS entries (all the files) again
        def unit(i: int) -> list[str]:
            return [f"@@KVM file /boot/efi/EFI/v{i}/grub.cfg", "blscfg", ""]

        return base(RHEL9, grub=["blscfg"], sections=fill(unit, b))

    def efi_grubenv(b: int) -> list[str]:
        # a grubenv of many variables, and many grub.cfg files that each started with a copy of them
        env = ["# GRUB Environment Block"] + fill(lambda i: [f"v{i}=x"], b // 2)
        files = fill(lambda i: [f"@@KVM file /boot/efi/EFI/v{i}/grub.cfg", "true", ""], b // 2)
        return base(RHEL9, grub=["true"], files={"/boot/grub2/grubenv": env}, sections=files)

    def efi_expansions(b: int) -> list[str]:
        # a grubenv value of 1 MiB, expanded by each of many grub.cfg files (each within its own budget)
        env = ["# GRUB Environment Block", "v=" + "x" * (1 << 20)]
        files = fill(lambda i: [f"@@KVM file /boot/efi/EFI/v{i}/grub.cfg", "set a=$v", ""], b - (1 << 20))
        return base(RHEL9, grub=["true"], files={"/boot/grub2/grubenv": env}, sections=files)

    def efi_unreadable(b: int) -> list[str]:
        # many unreadable grub.cfg files (a warning each), and many that call blscfg with no entry
        # to add: each one built the list of warnings again
        bad = fill(lambda i: [f"@@KVM unreadable /boot/efi/EFI/u{i}/grub.cfg"], b // 2)
        files = fill(lambda i: [f"@@KVM file /boot/efi/EFI/v{i}/grub.cfg", "blscfg", ""], b // 2)
        return base(RHEL9, grub=["blscfg"], sections=bad + files)

    def legacy(b: int) -> list[str]:
        lines = base(grub=[])
        s, e = _section_bounds(lines, "@@KVM file /boot/grub/grub.cfg")
        del lines[s:e]
        body = ["default saved"] + fill(lambda i: [f"title t{i}", f"kernel /vmlinuz-{KERNEL}",
                                                   f"initrd /initrd.img-{KERNEL}"], b)  # fmt: skip
        return _with_file(lines, "/boot/grub/menu.lst", body)

    return {
        "bls-rhel9": bls(RHEL9),
        "bls-rhel8": bls(RHEL8),
        "nested-if": lambda b: base(grub=nested("if true; then", ENTRY, "fi", b)),
        "nested-if-statements": lambda b: base(grub=nested("if true; then set x=1", ENTRY, "fi", b)),
        "nested-submenus": lambda b: base(grub=nested("submenu 's' {", ENTRY, "}", b)),
        "submenu-vars": submenu_vars,
        "many-sets": lambda b: base(grub=fill(lambda i: [f"set default={i}"], b) + ENTRY),
        "doubling": doubling,
        "long-default": long_default,
        "digits-default": digits_default,
        "huge-grub-cfg": lambda b: base(grub=fill(_entry_unit, b)),
        "long-line": lambda b: base(grub=["menuentry '" + "t" * (b - 200) + "' {", *ENTRY[1:]]),
        "long-quoted": lambda b: base(grub=['menuentry "' + "t" * (b - 200) + '" {', *ENTRY[1:]]),
        "spaces": lambda b: base(grub=["set x=a" + " " * (b - 100) + "b", *ENTRY]),
        "semicolons": lambda b: base(grub=[";" * (b - 100), *ENTRY]),
        "newlines": lambda b: base(grub=[""] * (b - 200) + ENTRY),
        "then-heads": lambda b: base(grub=["if true; " + "then " * (b // 5 - 100), *ENTRY, "fi"]),
        "not-operators": lambda b: base(grub=["if [ " + "! " * (b // 2 - 100) + "x ]; then", *ENTRY, "fi"]),
        "kernels-x-entries": kernels_and_entries,
        "unversioned-images": unversioned_images,
        "shared-initrd": shared_initrd,
        "too-many-kernels": too_many_kernels,
        "big-closure": big_closure,
        "many-drivers": many_drivers,
        "big-closures": big_closures,
        "dracut-open-quote": dracut_open_quote,
        "dracut-continued": dracut_continued,
        "efi-blscfg": efi_blscfg,
        "efi-grubenv": efi_grubenv,
        "efi-expansions": efi_expansions,
        "efi-unreadable": efi_unreadable,
        "system-release-spaces": lambda b: base(
            os_release="", files={"/etc/system-release": ["Amazon" + " " * (b - 100) + "x"]}
        ),
        "legacy-titles": legacy,
    } | {"_room": lambda b: [str(room)]}  # type: ignore[dict-item]


def _with_file(lines: list[str], path: str, body: list[str]) -> list[str]:
    at = lines.index(f"@@KVM kernel {KERNEL}")
    return lines[:at] + [f"@@KVM file {path}", *body, ""] + lines[at:]


SHAPES = [s for s in _shapes() if not s.startswith("_")]


def answer(shape: str, fraction: float = 1.0) -> list[str]:
    """The crafted answer of this shape, fraction of the way to the cap (1.0: just under it)."""
    shapes = _shapes()
    room = int(shapes["_room"](0)[0])
    lines = shapes[shape](int(room * fraction))
    assert size(lines) < CAP, (shape, size(lines))
    return lines


def _time(shape: str, fraction: float, limit: float) -> Iterator[str]:
    import resource

    from kvm_drivers.facts import kvm_drivers as kd

    lines = answer(shape, fraction)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.monotonic(), time.process_time()
    state = kd.read_answer(lines, limit=limit)
    took, cpu = time.monotonic() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    yield (f"{shape:22} {size(lines) / 2**20:5.1f} MiB {len(lines):>9} lines  wall {took:6.2f} s  "
           f"cpu here {cpu:5.2f} s, in child {child:6.2f} s  {state.errors[:1]!s:.100}")  # fmt: skip


def main(argv: list[str]) -> None:
    fraction, limit, names = 1.0, 60.0, []
    it = iter(argv)
    for a in it:
        if a == "--fraction":
            fraction = float(next(it))
        elif a == "--limit":
            limit = float(next(it))
        else:
            names.append(a)
    for shape in names or SHAPES:
        for line in _time(shape, fraction, limit):
            print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
