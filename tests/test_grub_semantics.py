# ruff: noqa: E501 (grub.cfg lines are kept as long as GRUB writes them)
"""GRUB's own rules for the default entry and the BLS order, as facts/boot_menus.py applies them.

Each expectation is derived from GRUB's source (rhboot/grub2, see the notes in facts/grub_default.py)
or from rpm's test table, not from our parser's output.
"""

from pathlib import Path

import pytest

from kvm_drivers.facts.boot_menus import parse_bls, parse_grub2, parse_grub_legacy
from kvm_drivers.facts.grub_default import _grub_variant
from kvm_drivers.facts.rpmvercmp import rpmvercmp

REAL = Path(__file__).parent / "fixtures" / "real"


def _table() -> list[tuple[str, str, int]]:
    rows = []
    for line in (REAL / "rpmvercmp.at.table").read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, want = line.split()
            rows.append((a, b, int(want)))
    return rows


def test_rpmvercmp_agrees_with_rpms_own_table():
    rows = _table()
    assert len(rows) == 91
    wrong = [(a, b, want, rpmvercmp(a, b)) for a, b, want in rows if rpmvercmp(a, b) != want]
    assert wrong == []


def test_blscfg_vercmp_variants_caret():
    # RHEL 8's blscfg vercmp() has no caret: '^' is a separator like '.'.
    assert rpmvercmp("1.0^git1", "1.0.git1", caret=None) == 0
    # Fedora/RHEL 9's has '+' where rpm has '^'.
    assert rpmvercmp("1.0+git1", "1.0", caret="+") == 1
    assert rpmvercmp("1.0+git1", "1.01", caret="+") == -1
    # The case: 4.18.0-240.1.1.el8_3 is newer than 4.18.0-240.el8.
    assert rpmvercmp("240.1.1.el8_3", "240.el8") == 1


SUSE_SNAPSHOT = """\
set btrfs_relative_path="y"
export btrfs_relative_path
if [ -n "$extra_cmdline" ]; then
  submenu "Bootable snapshot #$snapshot_num" { menuentry "If OK, run 'snapper rollback' and reboot." { true; } }
fi
if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi
export menuentry_id_option
set default="${saved_entry}"
menuentry 'SLES 15-SP5' --class sles $menuentry_id_option 'gnulinux-simple-1234' {
  linux /boot/vmlinuz-5.14.21-150500.55.39-default root=UUID=1234 ${extra_cmdline}
  initrd /boot/initrd-5.14.21-150500.55.39-default
}
submenu 'Advanced options for SLES 15-SP5' --hotkey=1 $menuentry_id_option 'gnulinux-advanced-1234' {
  menuentry 'SLES 15-SP5, with Linux 5.14.21-150500.55.39-default' --hotkey=2 { linux /boot/vmlinuz-5.14.21-150500.55.39-default; initrd /boot/initrd-5.14.21-150500.55.39-default; }
  menuentry 'SLES 15-SP5, with Linux 5.14.21-150500.53-default' $menuentry_id_option 'gnulinux-5.14.21-150500.53-default-advanced-1234' {
    linux /boot/vmlinuz-5.14.21-150500.53-default
    initrd /boot/initrd-5.14.21-150500.53-default
  }
}
"""


def test_one_line_blocks_close_and_false_conditions_add_no_entry():
    cfg = parse_grub2(SUSE_SNAPSHOT, {"saved_entry": "SLES 15-SP5"}, "x")
    assert [e.path for e in cfg.entries] == ["0", "1>0", "1>1"]  # no snapshot submenu: extra_cmdline is unset
    assert cfg.entries[cfg.default].kernel == "5.14.21-150500.55.39-default"
    assert cfg.entries[1].initrd == "/boot/initrd-5.14.21-150500.55.39-default"
    # Booted from a snapshot, extra_cmdline is set: the submenu exists and shifts the numbers.
    cfg = parse_grub2(SUSE_SNAPSHOT, {"saved_entry": "1", "extra_cmdline": "x"}, "x")
    assert cfg.entries[cfg.default].title == "SLES 15-SP5"


def test_default_naming_a_submenu_boots_its_first_entry():
    for value in ("1", "gnulinux-advanced-1234", "Advanced options for SLES 15-SP5"):
        cfg = parse_grub2(SUSE_SNAPSHOT, {"saved_entry": value}, "x")
        assert cfg.entries[cfg.default].path == "1>0", value
        assert not cfg.warnings
    cfg = parse_grub2(SUSE_SNAPSHOT, {"saved_entry": "gnulinux-advanced-1234>gnulinux-5.14.21-150500.53-default-advanced-1234"}, "x")
    assert cfg.entries[cfg.default].kernel == "5.14.21-150500.53-default"


def test_bare_title_inside_a_submenu_is_not_found():
    cfg = parse_grub2(SUSE_SNAPSHOT, {"saved_entry": "SLES 15-SP5, with Linux 5.14.21-150500.53-default"}, "x")
    assert cfg.default == 0 and "not found at the top level" in cfg.warnings[0]


def test_upstream_number_prefix_versus_fedora_lookup():
    text = "set default=\"${saved_entry}\"\nmenuentry 'a' { linux /vmlinuz-1.0 }\nmenuentry 'b' { linux /vmlinuz-2.0 }\n"
    # upstream grub_strtoul: "1abc" is the number 1; Fedora's helper wants the whole value a number.
    assert parse_grub2(text, {"saved_entry": "1abc"}, "x").default == 1
    assert parse_grub2(text, {"saved_entry": "1abc"}, "x", variant="fedora").default == 0
    assert parse_grub2(text, {"saved_entry": "0x1"}, "x").default == 1  # base 0: hexadecimal


COUNTING = """\
set pager=1
if [ -f ${config_directory}/grubenv ]; then
  load_env -f ${config_directory}/grubenv
elif [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="${saved_entry}"
fi
insmod increment
if [ -n "${boot_counter}" -a "${boot_success}" = "0" ]; then
  if  [ "${boot_counter}" = "0" -o "${boot_counter}" = "-1" ]; then
    set default=1
    set boot_counter=-1
  else
    decrement boot_counter
  fi
  save_env boot_counter
fi
menuentry 'new' { linux /vmlinuz-2 ; initrd /initramfs-2.img }
menuentry 'old' { linux /vmlinuz-1 ; initrd /initramfs-1.img }
"""


def test_boot_counting_block_sets_default_only_when_its_condition_holds():
    assert parse_grub2(COUNTING, {"saved_entry": "new"}, "x").default == 0
    assert parse_grub2(COUNTING, {"saved_entry": "new", "boot_success": "1"}, "x").default == 0
    # the countdown ran out: GRUB really boots entry 1 (the rollback)
    assert parse_grub2(COUNTING, {"saved_entry": "new", "boot_counter": "0", "boot_success": "0"}, "x").default == 1
    cfg = parse_grub2(COUNTING, {"saved_entry": "new", "next_entry": "old"}, "x")
    assert cfg.default == 1 and "next_entry" in cfg.warnings[0]


def test_default_under_unknown_condition_is_not_taken():
    text = 'if [ "$grub_platform" = efi ]; then set default=1; fi\nmenuentry a { linux /vmlinuz-1 }\nmenuentry b { linux /vmlinuz-2 }\n'
    cfg = parse_grub2(text, {}, "x")
    assert cfg.default == 0 and "cannot be evaluated" in cfg.doubts[0]


def _bls(name: str, version: str, kernel: str) -> tuple[str, str]:
    text = f"title Linux ({kernel})\nversion {version}\nlinux /vmlinuz-{kernel}\ninitrd /initramfs-{kernel}.img\n"
    return f"/boot/loader/entries/{name}.conf", text


def test_bls_order_rhel8_by_version_rhel9_by_file_name():
    files = dict(
        [
            _bls("zz-4.18.0-240.el8.x86_64", "4.18.0-240.el8.x86_64", "4.18.0-240.el8.x86_64"),
            _bls("aa-4.18.0-240.1.1.el8_3.x86_64", "4.18.0-240.1.1.el8_3.x86_64", "4.18.0-240.1.1.el8_3.x86_64"),
        ]
    )
    # RHEL 8: by version (split_cmp), whatever the file names
    rhel8 = parse_bls(files, {}, "rhel8")
    assert [e.kernel for e in rhel8.entries] == ["4.18.0-240.1.1.el8_3.x86_64", "4.18.0-240.el8.x86_64"]
    # RHEL 9 / Fedora: by file name, its first part (machine-id) first
    fedora = parse_bls(files, {}, "fedora")
    assert [e.kernel for e in fedora.entries] == ["4.18.0-240.el8.x86_64", "4.18.0-240.1.1.el8_3.x86_64"]
    assert fedora.default == 0


def test_bls_ostree_version_is_not_the_kernel():
    files = {
        "/boot/loader/entries/ostree-2-fedora-coreos.conf": (
            "title Fedora CoreOS 38.20230806.3.0 (ostree:0)\nversion 2\noptions root=UUID=x ostree=/ostree/boot.1/x\n"
            "linux /ostree/fedora-coreos-1a2b/vmlinuz-6.4.7-200.fc38.x86_64\n"
            "initrd /ostree/fedora-coreos-1a2b/initramfs-6.4.7-200.fc38.x86_64.img\n"
        )
    }
    cfg = parse_bls(files, {}, "fedora")
    e = cfg.entries[cfg.default]
    assert e.kernel == "6.4.7-200.fc38.x86_64"
    assert e.linux_path == "/ostree/fedora-coreos-1a2b/vmlinuz-6.4.7-200.fc38.x86_64"


@pytest.mark.parametrize("default,want", [("1", 1), ("saved", 1), ("7", 0)])
def test_grub_legacy_default(default, want):
    text = f"default {default}\ntitle a\n kernel /vmlinuz-1 ro\ntitle b\n kernel (hd0,0)/linux.vmx ro\n initrd /initrd.vmx\n"
    cfg = parse_grub_legacy(text, "1\n", "menu.lst")
    assert cfg.default == want
    assert cfg.entries[1].linux_path == "/linux.vmx" and cfg.entries[1].kernel == ""


@pytest.mark.parametrize(
    "release,variant",
    [
        ("distro-centos7", "upstream"),  # RHEL 7's GRUB 2.02: upstream lookups (rhel-7.9 menu.c)
        ("distro-rocky9", "fedora"),  # RHEL 9 rebuild: file-name BLS order
        ("distro-fedora30", "fedora"),
        ("distro-debian10", "upstream"),
        ("distro-opensuse15", "upstream"),
    ],
)
def test_grub_variant_from_os_release(release, variant):
    root = REAL / "release" / release
    files = {"/" + str(f.relative_to(root)): f.read_text() for f in root.rglob("*") if f.is_file()}
    assert _grub_variant(files) == variant
    rhel8 = {"/etc/os-release": 'NAME="Red Hat Enterprise Linux"\nVERSION_ID="8.5"\nID="rhel"\nID_LIKE="fedora"\n'}
    assert _grub_variant(rhel8) == "rhel8"
