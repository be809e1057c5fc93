"""The parsers on real configurations from public sources (tests/fixtures/real, see SOURCES.md).

Every expected answer below was worked out by hand from GRUB's own rules (grub-core/normal/menu.c
get_entry_number and grub_menu_execute_entry, blscfg.c bls_cmp, GRUB 0.97's default/savedefault;
see facts/grub_default.py) and the procedure's family table, reading the fixture itself: the comment
on each row says why. They were not copied from the parser's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvm_drivers.facts.boot_menus import parse_bls, parse_boot, parse_grub2, parse_grub_legacy
from kvm_drivers.facts.distro import parse_distro
from kvm_drivers.facts.grub_script import parse_grubenv

REAL = Path(__file__).parent / "fixtures" / "real"
F17 = "fe7b6773-70ed-4eac-b323-16ed459c7f86"
RHEL8_ID = "8e15296c9cc14deb9e3f8548d49fd6fc"
U2204, K2204 = "e8328184-226c-4e5e-9635-8142cc114051", "5.15.0-100-generic"


def _env(name: str | None) -> dict[str, str]:
    return parse_grubenv((REAL / "grubenv" / name).read_text()) if name else {}


# (fixture, grubenv (file name or dict), variant) -> (index path, kernel, initrd as written)
GRUB_CASES = [
    # Ubuntu 22.04 cloud image: 'set default="0"' unless next_entry is set...
    ("ubuntu-22.04-cloudimg.cfg", None, "upstream", ("0", K2204, f"/boot/initrd.img-{K2204}")),
    # ... and next_entry is what 00_header's initrdfail branch takes from prev_entry after a boot
    # without initrd failed (initrdfail=1).
    ("ubuntu-22.04-cloudimg.cfg", {"initrdfail": "1", "prev_entry": "1>1"}, "upstream",
     ("1>1", K2204, f"/boot/initrd.img-{K2204}")),
    ("ubuntu-22.04-cloudimg.cfg", {"next_entry": f"gnulinux-advanced-{U2204}>gnulinux-{K2204}-recovery-{U2204}"},
     "upstream", ("1>1", K2204, f"/boot/initrd.img-{K2204}")),
    # No saved_entry in the grubenv: default "" -> entry 0.
    ("grubby-fedora17-submenu.cfg", "grubby-grubenv.0", "upstream",
     ("0", "3.3.0-0.rc4.git1.4.fc17.x86_64", "/initramfs-3.3.0-0.rc4.git1.4.fc17.x86_64.img")),
    # 'set default="0"' at the top level: the first entry.
    ("petitboot-kubuntu-13.04.cfg", None, "upstream", ("0", "3.8.0-19-generic", "/boot/initrd.img-3.8.0-19-generic")),
    ("petitboot-fedora18-ppc64.cfg", None, "upstream",
     ("0", "3.6.10-4.fc18.ppc64p7", "/initramfs-3.6.10-4.fc18.ppc64p7.img")),
    # saved_entry is the title of the first top-level entry.
    ("grubby-fedora15.cfg", "grubby-grubenv.1", "upstream",
     ("0", "2.6.38.8-32.fc15.x86_64", "/initramfs-2.6.38.8-32.fc15.x86_64.img")),
    # saved_entry=title: no entry has that title or id -> entry 0.
    ("grubby-fedora15.cfg", "grubby-grubenv.2", "upstream",
     ("0", "2.6.38.8-32.fc15.x86_64", "/initramfs-2.6.38.8-32.fc15.x86_64.img")),
    # A bare title of an entry inside the submenu is not looked up there (class 3): entry 0.
    ("grubby-fedora17-submenu.cfg", {"saved_entry": "Fedora Linux, with Linux 3.2.9-1.fc16.x86_64"}, "upstream",
     ("0", "3.3.0-0.rc4.git1.4.fc17.x86_64", "/initramfs-3.3.0-0.rc4.git1.4.fc17.x86_64.img")),
    # The submenu>entry form finds it.
    ("grubby-fedora17-submenu.cfg",
     {"saved_entry": f"gnulinux-advanced-{F17}>gnulinux-3.2.9-1.fc16.x86_64-advanced-{F17}"}, "upstream",
     ("1>1", "3.2.9-1.fc16.x86_64", "/initramfs-3.2.9-1.fc16.x86_64.img")),
    # A default naming the submenu (number or id) boots the submenu's first entry (class 4).
    ("grubby-fedora17-submenu.cfg", {"saved_entry": "1"}, "upstream",
     ("1>0", "3.3.0-0.rc4.git1.4.fc17.x86_64", "/initramfs-3.3.0-0.rc4.git1.4.fc17.x86_64.img")),
    ("grubby-fedora17-submenu.cfg", {"saved_entry": f"gnulinux-advanced-{F17}"}, "upstream",
     ("1>0", "3.3.0-0.rc4.git1.4.fc17.x86_64", "/initramfs-3.3.0-0.rc4.git1.4.fc17.x86_64.img")),
    # "1>2": entry 2 of submenu 1.
    ("grubby-fedora17-submenu.cfg", {"saved_entry": "1>2"}, "upstream",
     ("1>2", "3.2.7-1.fc16.x86_64", "/initramfs-3.2.7-1.fc16.x86_64.img")),
    # RHEL 7.2, linux16/initrd16; saved_entry names a debug kernel that is not in the menu ->
    # entry 0, whose stanza has no initrd16 line.
    ("grubby-rhel7.2-linux16.cfg", "grubby-grubenv.3", "upstream", ("0", "3.10.0-297.el7.x86_64", "")),
    # saved_entry = title of entry 1. 10_linux's compatibility line compares "x$default" with the
    # bare title (no "x"), so it never fires and the title is found at the top level.
    ("grubby-rhel7.2-linux16.cfg",
     {"saved_entry": "Red Hat Enterprise Linux Server (3.10.0-296.el7.x86_64) 7.2 (Maipo)"}, "upstream",
     ("1", "3.10.0-296.el7.x86_64", "/initramfs-3.10.0-296.el7.x86_64.img")),
    # btrfs with /boot in subvolume 'boot6': the path as written.
    ("grubby-fedora21-btrfs-subvol.cfg", None, "upstream",
     ("0", "3.15.0-0.rc7.git2.1.fc21.x86_64", "/boot6/initramfs-3.15.0-0.rc7.git2.1.fc21.x86_64.img")),
    # RHEL 8 (static BLS entries, '--users $grub_users': see test_rhel8_static_entries_need_grub_users).
    # The ids start with a hex digit. The Fedora/RHEL lookup finds the id...
    ("petitboot-rhel8-ppc64le.cfg", {"grub_users": "root", "saved_entry": f"{RHEL8_ID}-4.18.0-80.el8.ppc64le"}, "rhel8",
     ("1", "4.18.0-80.el8.ppc64le", "/initramfs-4.18.0-80.el8.ppc64le.img")),
    # ... while upstream's grub_strtoul reads "8e15..." as the number 8: out of range, entry 0.
    ("petitboot-rhel8-ppc64le.cfg", {"grub_users": "root", "saved_entry": f"{RHEL8_ID}-4.18.0-80.el8.ppc64le"},
     "upstream",
     ("0", "4.18.0-80.11.2.el8_0.ppc64le", "/initramfs-4.18.0-80.11.2.el8_0.ppc64le.img")),
    # RHCOS: one ostree entry, kernel version from the /ostree/... path.
    ("petitboot-rhcos-4.2.cfg", None, "rhel8",
     ("0", "4.18.0-80.11.2.el8_0.ppc64le",
      "/ostree/rhcos-6264e4be818e20cf1021bd6e7aa8c76147ce07dec186468c7dfbbc9c5dfc7d8b/"
      "initramfs-4.18.0-80.11.2.el8_0.ppc64le.img")),
    # SUSE snapshot header: the submenu exists only when extra_cmdline is set (class 1).
    ("petitboot-sles-btrfs-snapshot.cfg", None, "upstream", ("0", "", "")),
]


@pytest.mark.parametrize("name,env,variant,want", GRUB_CASES)
def test_grub2_default_on_real_configs(name, env, variant, want):
    env = env if isinstance(env, dict) else _env(env)
    cfg = parse_grub2((REAL / "grub" / name).read_text(), env, name, variant=variant)
    e = cfg.entries[cfg.default]
    assert (e.path, e.kernel, e.initrd) == want


def test_rhel8_static_entries_without_grub_users_upstream_and_on_red_hat():
    # menuentry ... --users $grub_users --id X: with grub_users unset, '--users' gets no value
    # ('--id' starts with '-'). Upstream lib/arg.c fails "missing mandatory option" and the entry
    # is not added (grub-emu agrees: test_grub_emu.py). Red Hat's GRUB, which reads this RHEL 8
    # file, has made that value optional since RHEL 8.0 (rhbz#1652434): every entry is there.
    # (This file is generated for petitboot on ppc64le, which does not run it as GRUB.)
    text = (REAL / "grub" / "petitboot-rhel8-ppc64le.cfg").read_text()
    cfg = parse_grub2(text, {}, "x", variant="upstream")
    assert cfg.entries == [] and "missing mandatory option for `users'" in cfg.warnings[0]
    for variant in ("rhel8", "fedora"):
        cfg = parse_grub2(text, {"saved_entry": f"{RHEL8_ID}-4.18.0-80.el8.ppc64le"}, "x", variant=variant)
        assert [e.kernel for e in cfg.entries] == ["4.18.0-80.11.2.el8_0.ppc64le", "4.18.0-80.el8.ppc64le",
                                                  f"0-rescue-{RHEL8_ID}"]
        assert [e.ident for e in cfg.entries][1] == f"{RHEL8_ID}-4.18.0-80.el8.ppc64le"  # --id still read
        assert cfg.entries[cfg.default].kernel == "4.18.0-80.el8.ppc64le"
        assert not any("users" in w for w in cfg.warnings), cfg.warnings


@pytest.mark.parametrize("options, upstream, red_hat", [
    ("--users", None, "T"),  # nothing after it
    ("--users --id i", None, "i"),  # another option after it
    ("--users $unset --class c", None, "T"),  # an empty variable: no word at all
    ("--users root --id i", "i", "i"),  # a value: the same everywhere
    ("--users '' --id i", "i", "i"),  # an empty word is a value
    ("--hotkey --id i", None, None),  # only --users is optional on Red Hat's GRUB
])  # fmt: skip
def test_menuentry_users_without_a_value(options, upstream, red_hat):
    text = f"menuentry T {options} {{\n linux /vmlinuz-1\n}}\n"
    for variant, want in (("upstream", upstream), ("rhel8", red_hat), ("fedora", red_hat)):
        cfg = parse_grub2(text, {}, "x", variant=variant)
        assert [e.ident for e in cfg.entries] == ([want] if want else []), (variant, cfg.warnings)


def test_sles_snapshot_header_one_line_blocks():
    text = (REAL / "grub" / "petitboot-sles-btrfs-snapshot.cfg").read_text()
    cfg = parse_grub2(text, {}, "x")
    assert [(e.path, e.title, e.linux_path) for e in cfg.entries] == [("0", "test", "/vmlinux")]
    cfg = parse_grub2(text, {"extra_cmdline": "x", "snapshot_num": "7"}, "x")  # booted from snapshot 7
    assert [e.path for e in cfg.entries] == ["0>0", "1"]
    # The submenu's body runs in a new context holding only exported variables (upstream
    # normal/context.c): $snapshot_num is empty there (grub-emu shows the same title).
    assert cfg.entries[cfg.default].title == "If OK, run 'snapper rollback ' and reboot."
    assert cfg.entries[1].title == "test"  # closed blocks: not swallowed by the submenu


def _counting_config() -> str:
    """The RHEL 8.0 grub.cfg with rhboot's fallback-counting/boot-success output where grub-mkconfig
    puts it: the counting script (01_fallback_counting in RHEL 8.0, later 08_) before the script that
    resets boot_success (01_menu_auto_hide there), all before the menu entries."""
    cfg = (REAL / "grub" / "petitboot-rhel8-ppc64le.cfg").read_text()
    snippet = (REAL / "grub" / "rhboot-fedora44-boot-counting-snippets.cfg").read_text()
    mark = "### BEGIN /etc/grub.d/01_menu_auto_hide ###"  # RHEL 8.0's name: after 01_fallback_counting
    assert mark in cfg
    return cfg.replace(mark, snippet + mark)


@pytest.mark.parametrize(
    "env,want",
    [
        ({}, "4.18.0-80.11.2.el8_0.ppc64le"),  # no counter: saved_entry (unset) -> 0
        ({"boot_success": "1", "boot_counter": "0"}, "4.18.0-80.11.2.el8_0.ppc64le"),  # last boot was good
        ({"boot_success": "0", "boot_counter": "2"}, "4.18.0-80.11.2.el8_0.ppc64le"),  # still counting down
        ({"boot_success": "0", "boot_counter": "0"}, "4.18.0-80.el8.ppc64le"),  # ran out: 'set default=1'
    ],
)
def test_boot_counting_block(env, want):
    cfg = parse_grub2(_counting_config(), {"grub_users": "root", **env}, "x", variant="rhel8")
    assert cfg.entries[cfg.default].kernel == want


BLS_19 = sorted((REAL / "bls").glob("6a9857a393724b7a981ebb5b8495b9ea-*.conf"))


def _bls_files(paths: list[Path]) -> dict[str, str | None]:
    return {f"/boot/loader/entries/{f.name}": f.read_text() for f in paths}


def test_bls_order_fedora_by_file_name_rhel8_by_version():
    files = _bls_files(BLS_19)
    # Fedora >= 30 / RHEL >= 9: split_cmp on the file name; "<id>-tboot" is a longer (newer) name.
    fedora = parse_bls(files, {}, "fedora")
    assert [e.ident.split("-", 1)[1] for e in fedora.entries] == [
        "tboot-3.8.1-2.fc19.x86_64",
        "tboot-3.8.0-2.fc19.x86_64",
        "3.8.1-2.fc19.x86_64",
        "3.8.0-2.fc19.x86_64",
    ]
    # RHEL 8: by 'version' first, the file name only between equal versions.
    rhel8 = parse_bls(files, {}, "rhel8")
    assert [e.ident.split("-", 1)[1] for e in rhel8.entries] == [
        "tboot-3.8.1-2.fc19.x86_64",
        "3.8.1-2.fc19.x86_64",
        "tboot-3.8.0-2.fc19.x86_64",
        "3.8.0-2.fc19.x86_64",
    ]
    e = rhel8.entries[rhel8.default]
    assert (e.kernel, e.initrd) == ("3.8.1-2.fc19.x86_64", "/boot/initrd-3.8.1-2.fc19.x86_64")
    # saved_entry by id (the file name without .conf)
    cfg = parse_bls(files, {"saved_entry": "6a9857a393724b7a981ebb5b8495b9ea-3.8.0-2.fc19.x86_64"}, "fedora")
    assert cfg.entries[cfg.default].ident.endswith("a-3.8.0-2.fc19.x86_64")


def test_bls_fedora_coreos_version_is_a_serial():
    files = _bls_files([REAL / "bls" / "ostree-1-fedora-coreos.conf"])
    files["/boot/grub2/grub.cfg"] = "blscfg\n"  # petitboot's test-grub2-blscfg-fcos38.c embedded config
    cfg = parse_boot(files)
    e = cfg.entries[cfg.default]
    assert e.kernel == "6.3.8-200.fc38.ppc64le"  # 'version 1' is not it
    assert e.initrd.endswith("/initramfs-6.3.8-200.fc38.ppc64le.img")


# GRUB legacy: (fixture, saved default file) -> (index, kernel, initrd, kernel image path)
LEGACY_CASES = [
    ("grubby-opensuse12.1-menu.lst", None,
     (0, "3.1.9-1.4-desktop", "/boot/initrd-3.1.9-1.4-desktop", "/boot/vmlinuz-3.1.9-1.4-desktop")),
    ("grubby-rhel5-grub.conf", None,
     (0, "2.6.18-308.1.1.el5", "/initrd-2.6.18-308.1.1.el5.img", "/vmlinuz-2.6.18-308.1.1.el5")),
    ("grubby-redhat-default2-grub.conf", None,  # default=2: the third title
     (2, "2.4.7-ac3", "/boot/initrd-2.4.7-ac3.img", "/boot/vmlinuz-2.4.7-ac3")),
    ("grubby-fedora23-grub.conf", None,  # its first stanza has no initrd line
     (0, "4.0.0-0.rc4.git1.4.fc23.x86_64", "", "/vmlinuz-4.0.0-0.rc4.git1.4.fc23.x86_64")),
    # The procedure's SLES 11 SP4 example (class 2): no version in either name.
    ("huawei-ims-sles11sp4-menu.lst", None, (0, "", "/boot/initrd.vmx", "/boot/linux.vmx")),
]


@pytest.mark.parametrize("name,saved,want", LEGACY_CASES)
def test_grub_legacy_on_real_configs(name, saved, want):
    cfg = parse_grub_legacy((REAL / "legacy" / name).read_text(), saved, name)
    e = cfg.entries[cfg.default]
    assert (cfg.default, e.kernel, e.initrd, e.linux_path) == want


def _release_dir(name: str, only: tuple[str, ...] = ()) -> dict[str, str | None]:
    root = REAL / "release" / name
    files = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            path = "/" + str(f.relative_to(root))
            if not only or path in only:
                files[path] = f.read_text()
    return files


def _release_json(name: str) -> dict[str, str | None]:
    return json.loads((REAL / "release" / f"ansible-{name}.json").read_text())["input"]


# release files -> (id, family): families from the procedure's table, each row says why; id None: any
# (python-distro normalises some ids, e.g. opensuse-leap -> opensuse).
RELEASE_CASES = [
    (_release_json, "uos_server_20_uel20", ("uos", "rhel")),  # PLATFORM_ID platform:uel20: RPM + dracut
    (_release_json, "uos_server_20_uelc20", ("uos", "rhel")),
    (_release_json, "uniontech_os_server_20_uel20", ("uos", "rhel")),
    (_release_json, "uniontech_os_server_20_uelc20", ("uos", "rhel")),
    (_release_json, "uos_20", ("uos", "debian")),  # no PLATFORM_ID: the Debian-based UOS
    (_release_json, "deepin_20.4", ("deepin", "debian")),
    (_release_json, "sl-micro", ("sl-micro", "suse")),  # SUSE Linux Micro 6.0: not "SLES 6"
    (_release_json, "alp-dolomite", ("alp-dolomite", "suse")),  # ALP 1.0
    (_release_json, "opensuse-microos-20241205", ("opensuse-microos", "suse")),
    (_release_json, "sles_11.4", ("sles", "suse-legacy")),
    (_release_json, "sles_12_sp0", ("sles", "suse-legacy")),  # SLES 12 before SP1: mkinitrd
    (_release_json, "sles_12_sp1", ("sles", "suse-12sp1")),
    (_release_json, "sles_15_6", ("sles", "suse")),
    (_release_json, "opensuse_13.2", ("opensuse", "suse")),
    (_release_json, "opensuse_leap_15.1", (None, "suse")),
    (_release_json, "amazon_linux_2018.03", ("amzn", "rhel")),
    (_release_json, "amazon_linux_2", ("amzn", "rhel")),
    (_release_json, "ubuntu_10.04_guess", ("ubuntu", "debian")),  # /etc/lsb-release only
    (_release_json, "centos_6.7", (None, "rhel")),
    (_release_json, "redhat_7.2", ("rhel", "rhel")),
    (_release_json, "kylin_linux_advanced_server_v10", ("kylin", "rhel")),
    (_release_json, "openeuler_20.03", ("openeuler", "rhel")),
    (_release_json, "debian_7.9", ("debian", "debian")),
    (_release_dir, "distro-amazon2014", ("amzn", "rhel")),  # /etc/system-release only
    (_release_dir, "distro-amazon2016", ("amzn", "rhel")),
    (_release_dir, "distro-centos7", ("centos", "rhel")),
    (_release_dir, "distro-rhel6", ("rhel", "rhel")),
    (_release_dir, "distro-rocky9", ("rocky", "rhel")),
    (_release_dir, "distro-fedora30", ("fedora", "rhel")),
    (_release_dir, "distro-sles12", ("sles", "suse-12sp1")),  # VERSION_ID 12.1
    (_release_dir, "distro-opensuse42", ("opensuse", "suse")),
    (_release_dir, "distro-opensuse15", (None, "suse")),
    (_release_dir, "distro-debian10", ("debian", "debian")),
    (_release_dir, "distro-ubuntu16", ("ubuntu", "debian")),
    (_release_dir, "distro-linuxmint17", (None, "debian")),  # os-release says ubuntu
    (_release_dir, "distro-raspbian7", ("raspbian", "debian")),
    (_release_dir, "distro-mageia5", ("mageia", "rhel")),  # ID_LIKE="mandriva fedora"; dracut
]


@pytest.mark.parametrize("load,name,want", RELEASE_CASES, ids=[c[1] for c in RELEASE_CASES])
def test_release_files_route_to_the_right_family(load, name, want):
    d = parse_distro(load(name))
    want_id, want_family = want
    assert d.family == want_family, d
    assert want_id is None or d.id == want_id, d


@pytest.mark.parametrize(
    "name,only,want",
    [
        ("distro-raspbian7", ("/etc/debian_version",), ("debian", "debian", "7.1")),  # debian_version only
        ("distro-ubuntu16", ("/etc/lsb-release",), ("ubuntu", "debian", "16.04")),  # lsb-release only
        ("distro-linuxmint17", ("/etc/lsb-release",), ("linuxmint", "debian", "17.3")),
        ("distro-mageia5", ("/etc/lsb-release",), ("mageia", None, "5")),  # known, not supported
    ],
)
def test_hosts_with_a_single_old_release_file(name, only, want):
    d = parse_distro(_release_dir(name, only))
    assert (d.id, d.family, d.version) == want, d


def test_suse_release_only_opensuse_12_1_is_legacy():
    d = parse_distro({"/etc/SuSE-release": (REAL / "legacy" / "grubby-opensuse12.1-SuSE-release").read_text()})
    assert (d.id, d.version, d.family) == ("opensuse", "12.1", "suse-legacy")


def test_every_corpus_file_is_used_and_cited():
    used = {c[0] for c in GRUB_CASES} | {c[1] for c in GRUB_CASES if isinstance(c[1], str)}
    used |= {c[0] for c in GRUB_CASES} | {c[0] for c in LEGACY_CASES} | {f.name for f in BLS_19}
    used |= {"ostree-1-fedora-coreos.conf", "rhboot-fedora44-boot-counting-snippets.cfg",
             "grubby-opensuse12.1-SuSE-release"}  # fmt: skip
    used |= {f"ansible-{c[1]}.json" for c in RELEASE_CASES if c[0] is _release_json}
    dirs = {c[1] for c in RELEASE_CASES if c[0] is _release_dir}
    sources = (REAL / "SOURCES.md").read_text()
    for f in REAL.rglob("*"):
        if f.is_dir() or f.name in ("SOURCES.md", "rpmvercmp.at.table"):
            continue
        top = f.relative_to(REAL).parts
        key = top[1] if top[0] == "release" and top[1].startswith("distro-") else f.name
        assert key in used or key in dirs, f"{f} is not used by any test"
        assert key in sources, f"{f} is not cited in SOURCES.md"
