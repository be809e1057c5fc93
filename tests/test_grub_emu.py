"""Differential: real GRUB (grub-emu, Debian's upstream GRUB 2) against parse_grub2 on the corpus.

Skipped when grub-emu is not installed (apt package grub-emu; the Makefile installs it).
Only the upstream variant can be checked this way: Debian's GRUB has neither the Fedora/RHEL
lookup patch nor blscfg.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from kvm_drivers.facts.boot_entries import choose_initrd
from kvm_drivers.facts.boot_menus import parse_grub2
from tests import grub_emu
from tests.test_corpus import GRUB_CASES, REAL, _counting_config, _env

pytestmark = [pytest.mark.skipif(not grub_emu.available(), reason="grub-emu is not installed"),
              pytest.mark.xdist_group("grub-emu")]  # one worker: the module fixture runs GRUB once per case


def _cases() -> list[tuple[str, str, dict[str, str]]]:
    out: list[tuple[str, str, dict[str, str]]] = []
    for name, env, _variant, _want in GRUB_CASES:
        env = env if isinstance(env, dict) else _env(env)
        case = (name, (REAL / "grub" / name).read_text(), env)
        if case not in out:
            out.append(case)
    snapshot = (REAL / "grub" / "petitboot-sles-btrfs-snapshot.cfg").read_text()
    out.append(("sles snapshot, booted from a snapshot", snapshot, {"extra_cmdline": "x", "snapshot_num": "7"}))
    rhel8 = (REAL / "grub" / "petitboot-rhel8-ppc64le.cfg").read_text()
    out.append(("rhel8 without grub_users", rhel8, {}))
    for env in ({"boot_success": "0", "boot_counter": "0"}, {"boot_success": "1", "boot_counter": "0"}):
        out.append((f"boot counting {env}", _counting_config(), {"grub_users": "root", **env}))
    return out


CASES = _cases()


@pytest.fixture(scope="module")
def emu_results() -> list[grub_emu.EmuBoot]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda c: grub_emu.boot(c[1], c[2]), CASES))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}:{sorted(c[2].items())}" for c in CASES])
def test_parse_grub2_agrees_with_grub(index, emu_results):
    name, text, env = CASES[index]
    real = emu_results[index]
    cfg = parse_grub2(text, env, name, variant="upstream")
    if cfg.default is None:
        assert real.titles == [], real.output[-2000:]
        return
    ours = cfg.entries[cfg.default]
    assert real.titles, f"GRUB booted nothing:\n{real.output[-2000:]}"
    assert real.titles[-1] == ours.title
    if ours.linux_path:
        assert (real.linux, choose_initrd(real.initrd)) == (ours.linux_path, ours.initrd)
