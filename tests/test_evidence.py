"""'compliant' only with evidence for every link from the bootloader to the root disk (issue 18).

A compliant host's real answer (gather.sh on the lab's Debian 12 tree, tests/fixtures, made
compliant the way a deploy makes it) is changed one way at a time, each change a way the real boot
can lack virtio although the rest of the answer looks fine. No mutant may be compliant, and each
must say which link it could not verify. What the real programs do with each change is stated
next to it, so the expected outcome does not come from our own parser; the boots through real
GRUB are in tests/test_lab_deploy.py (hosts deb12-noinitrd-default, deb12-custom-cfg, ...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_drivers.facts.boot_menus import parse_boot
from kvm_drivers.facts.state import VIRTIO
from kvm_drivers.facts.wire import parse_snapshot
from tests.planning import analyse

FIX = Path(__file__).parent / "fixtures"
K = "6.1.0-50-amd64"
INITRD = f"/boot/initrd.img-{K}"
CLOSURE = "virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring virtio virtio_pci_legacy_dev " \
          "virtio_pci_modern_dev net_failover failover scsi_mod scsi_common".split()  # fmt: skip


def compliant_answer() -> str:
    """The itools fixture as a deploy leaves it: virtio declared and in the initrd; /boot/config-K there."""
    text = (FIX / "gather-bookworm-itools.txt").read_text()
    text = text.replace("# sd_mod\n", "# sd_mod\n" + "".join(f"{d}\n" for d in VIRTIO), 1)
    text = text.replace("has dep\n", "has dep\nhas config\n", 1)
    text = text.replace("m xen_netfront\n", "m xen_netfront\n" + "".join(f"m {m}\n" for m in CLOSURE), 1)
    return text


def plan_of(text: str, **settings):
    return analyse(parse_snapshot(text.splitlines()), **settings)


def test_the_base_answer_is_compliant():
    info = plan_of(compliant_answer())
    assert info.status == "compliant", info.errors + info.warnings


GRUB_ENTRY = (
    "menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-amd64' --class debian $menuentry_id_option "
    "'gnulinux-6.1.0-50-amd64-advanced' {"
)
RECOVERY = (
    "menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-amd64 (recovery mode)' {\n"
    f"\tlinux\t/boot/vmlinuz-{K} root=/dev/vda ro single\n\tinitrd\t{INITRD}\n}}\n"
)
CUSTOM_41 = (  # grub-mkconfig's /etc/grub.d/41_custom, as in every stock grub.cfg
    "### BEGIN /etc/grub.d/41_custom ###\nif [ -f  ${config_directory}/custom.cfg ]; then\n"
    "  source ${config_directory}/custom.cfg\nelif [ -z \"${config_directory}\" -a -f  $prefix/custom.cfg ]; then\n"
    "  source $prefix/custom.cfg\nfi\n### END /etc/grub.d/41_custom ###\n"
)


def grub(text: str, add: str = "", entry_lines: tuple[str, str] | None = None) -> str:
    """The answer with text appended to grub.cfg, or one line of the entry replaced."""
    head, rest = text.split("@@KVM file /boot/grub/grub.cfg\n", 1)
    cfg, tail = rest.split("\n@@KVM ", 1)
    if entry_lines:
        assert entry_lines[0] in cfg
        cfg = cfg.replace(entry_lines[0], entry_lines[1], 1)
    return f"{head}@@KVM file /boot/grub/grub.cfg\n{cfg}{add}\n@@KVM {tail}"


def host_lines(text: str, line: str) -> str:
    """The answer with a module configuration line of the host's (gather.sh's blacklist section)."""
    return text.replace("@@KVM kernel ", f"@@KVM blacklist\n{line}\n@@KVM kernel ", 1)


def add_file(text: str, path: str, body: str) -> str:
    return text.replace("@@KVM kernel ", f"@@KVM file {path}\n{body}\n@@KVM kernel ", 1)


# Each mutant: (name, the changed answer, settings, words its verdict must contain). What real
# software does with the change is in the comment above it.
MUTANTS = [
    # GRUB boots the default entry's own lines (grub-core/normal/menu.c runs its script): without an
    # initrd line, the kernel starts with none, whatever the recovery entry loads.
    ("default entry without initrd, recovery entry with one",
     lambda t: grub(t, RECOVERY, ("\tinitrd\t" + INITRD + "\n", "")), {}, ["without an initrd"]),
    # $cmdpath is set by GRUB at boot (kern/main.c): what file this is cannot be known here.
    ("initrd named through a variable only GRUB knows",
     lambda t: grub(t, "", ("\tinitrd\t" + INITRD, "\tinitrd\t$cmdpath/initrd.img-" + K)), {}, ["$cmdpath"]),
    # 41_custom sources custom.cfg; its 'set default' runs after 00_header's and wins; real GRUB
    # (grub-emu, tests/test_grub_emu.py) boots its entry, whose initrd has no virtio.
    ("custom.cfg that GRUB sources sets the default to its own entry",
     lambda t: add_file(grub(t, CUSTOM_41), "/boot/grub/custom.cfg",
                        f"menuentry 'custom' {{\n\tlinux /boot/vmlinuz-{K} root=/dev/vda\n"
                        f"\tinitrd /boot/initrd-custom.img\n}}\nset default=custom\n"),
     {}, ["initrd-custom.img"]),
    ("custom.cfg that exists but cannot be read",
     lambda t: grub(t, CUSTOM_41).replace("@@KVM kernel ", "@@KVM unreadable /boot/grub/custom.cfg\n@@KVM kernel ", 1),
     {}, ["custom.cfg, which could not be read"]),
    ("grub.cfg sources a file kvm-drivers does not read",
     lambda t: grub(t, "source /boot/grub/other.cfg\n"), {}, ["sources /boot/grub/other.cfg"]),
    ("grub.cfg hands over to another configfile",
     lambda t: grub(t, "configfile /boot/grub/other.cfg\n"), {}, ["configfile /boot/grub/other.cfg"]),
    ("a function that adds entries, called at the top level",
     lambda t: grub(t, f"function more {{\n menuentry x {{\n linux /boot/vmlinuz-{K}\n }}\n}}\nmore\n"), {},
     ["calls function more"]),
    ("an extlinux.conf beside grub.cfg",
     lambda t: add_file(t, "/boot/extlinux/extlinux.conf", "DEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n"), {},
     ["extlinux"]),
    ("a default set from a variable only GRUB knows",
     lambda t: grub(t, "set default=\"$grub_platform\"\n"), {}, ["cannot tell which entry GRUB boots"]),
    ("a second initrd image loaded over the checked one",
     lambda t: grub(t, "", ("\tinitrd\t" + INITRD, f"\tinitrd\t{INITRD} /boot/extra.img")), {}, ["/boot/extra.img"]),
    # kmod (libkmod-module.c): an install command runs instead of loading the module; 'true' and ':'
    # load nothing. /etc/modprobe.conf is read by module-init-tools (CentOS 6, SLES 11).
    ("install virtio_blk true in /etc/modprobe.conf",
     lambda t: host_lines(t, "/etc/modprobe.conf:3:virtio_blk:install virtio_blk true"),
     {}, ["install virtio_blk true"]),
    ("install virtio_pci : in modprobe.d",
     lambda t: host_lines(t, "/etc/modprobe.d/x.conf:1:virtio_pci:install virtio_pci :"),
     {}, ["install virtio_pci :"]),
    # the kernel refuses a module named by module_blacklist= (kernel/module/main.c blacklisted())
    ("module_blacklist= on the default entry's kernel line",
     lambda t: grub(t, "", ("root=/dev/vda ro quiet", "root=/dev/vda ro quiet module_blacklist=virtio_blk")), {},
     ["module_blacklist=virtio_blk"]),
    ("modprobe.blacklist= on the default entry's kernel line",
     lambda t: grub(t, "", ("root=/dev/vda ro quiet", "root=/dev/vda ro quiet modprobe.blacklist=virtio_net")), {},
     ["modprobe.blacklist=virtio_net"]),
    # initramfs-tools and dracut copy modprobe.d into the initrd; its udev and modprobe read that copy
    ("a blacklist left inside the initrd, gone from the host",
     lambda t: t.replace("confread 3\n", "conf etc/modprobe.d/x.conf:1:virtio_blk:install virtio_blk /bin/false\n"
                                         "confread 3\n"), {}, ["install virtio_blk /bin/false"]),
    # dracut reads rd.driver.blacklist= from etc/cmdline.d (modules.d/99base/dracut-lib.sh getargs)
    ("rd.driver.blacklist= in the initrd's cmdline.d",
     lambda t: t.replace("confread 3\n", "cmdline etc/cmdline.d/10.conf:rd.driver.blacklist=virtio_pci\n"
                                         "confread 3\n"), {}, ["rd.driver.blacklist=virtio_pci"]),
    ("the initrd's own files could not be read",
     lambda t: t.replace("confread 3\n", "conferror no lister for files inside an initrd\n"), {},
     ["cannot verify: initrd"]),
    # depmod on a full disk leaves modules.dep empty: modprobe then finds no virtio module; the
    # config says the kernel has them as modules.
    ("empty modules.dep, config says =m",
     lambda t: "\n".join(ln for ln in t.split("\n") if not ln.startswith(("module ", "closure "))), {},
     ["modules.dep does not list it"]),
    ("empty modules.dep and no /boot/config-K",
     lambda t: "\n".join(ln for ln in t.split("\n")
                         if not ln.startswith(("module ", "closure ", "CONFIG_", "# CONFIG_", "has config"))),
     {}, ["nothing says whether it has virtio_blk"]),
    # A kernel built without virtio_blk cannot read a virtio disk whatever its initrd holds.
    ("default kernel without virtio at all",
     lambda t: "\n".join(ln for ln in t.split("\n")
                         if not ln.startswith(("module ", "closure ")) and "VIRTIO" not in ln),
     {}, ["has no virtio_blk"]),
    # dracut.sh turns omit_drivers into a regular expression the modules it installs are matched
    # against: 'virtio.*' keeps every virtio module out of the next initrd it builds.
    ("dracut omit_drivers regex", None, {}, ["omit_drivers pattern 'virtio.*'"]),
    # The virtio disk is a PCI device: without virtio_pci in the initrd it never appears.
    ("kvm_drivers lists virtio_blk only, initrd lacks the transport",
     lambda t: t.replace("m virtio_pci\n", "", 1), {"drivers": ["virtio_blk"]}, ["virtio_pci"]),
]


def dracut_mutant() -> str:
    text = (FIX / "gather-bookworm-dracut.txt").read_text().replace("has dep\n", "has dep\nhas config\n", 1)
    text = text.replace("@@KVM file /etc/dracut.conf\n", "@@KVM file /etc/dracut.conf.d/90-kvm-drivers.conf\n"
                        f'add_drivers+=" {" ".join(VIRTIO)} "\n\n@@KVM file /etc/dracut.conf.d/50-omit.conf\n'
                        'omit_drivers+=" virtio.* "\n\n@@KVM file /etc/dracut.conf\n', 1)
    head, rest = text.split(f"@@KVM initrd {INITRD} ", 1)
    size, body = rest.split("\n", 1)
    return f"{head}@@KVM initrd {INITRD} {size}\n" + "".join(f"m {m}\n" for m in CLOSURE) + body


@pytest.mark.parametrize("name,mutate,settings,words", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_no_mutant_of_a_compliant_answer_is_compliant(name, mutate, settings, words):
    text = dracut_mutant() if mutate is None else mutate(compliant_answer())
    info = plan_of(text, **settings)
    said = " | ".join(info.errors + info.warnings)
    assert info.status != "compliant", name
    for w in words:
        assert w in said, f"{name}: {w!r} not in {said}"


def test_the_dracut_base_is_compliant_without_the_omit_pattern():
    text = dracut_mutant().replace('omit_drivers+=" virtio.* "', "", 1)
    info = plan_of(text)
    assert info.status == "compliant", info.errors + info.warnings


def test_an_omit_word_that_our_declaration_names_is_dropped_by_dracut():
    # dracut.sh: an omit_drivers word that is literally in add_drivers is left out of the pattern
    text = dracut_mutant().replace('omit_drivers+=" virtio.* "', 'omit_drivers+=" virtio_blk "', 1)
    assert plan_of(text).status == "compliant"


def test_custom_cfg_entries_join_the_menu_and_its_default_wins():
    text = add_file(grub(compliant_answer(), CUSTOM_41), "/boot/grub/custom.cfg",
                    f"menuentry 'custom' {{\n\tlinux /boot/vmlinuz-{K} root=/dev/vda\n"
                    f"\tinitrd /boot/initrd-custom.img\n}}\nset default=custom\n")
    cfg = parse_boot(parse_snapshot(text.splitlines()).files)
    assert [e.title for e in cfg.entries][-1] == "custom"
    assert cfg.entries[cfg.default].initrd == "/boot/initrd-custom.img" and not cfg.doubts


def test_stock_41_custom_without_custom_cfg_changes_nothing():
    info = plan_of(grub(compliant_answer(), CUSTOM_41))
    assert info.status == "compliant", info.errors


def test_the_transport_is_wanted_and_said_so():
    info = plan_of(compliant_answer(), drivers=["virtio_blk"])
    assert "virtio_pci" in info.wanted
    assert any("virtio_pci is wanted too" in w for w in info.warnings)
    assert info.status == "compliant"  # declared and in the initrd in this answer
