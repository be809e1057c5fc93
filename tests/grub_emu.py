"""Ask real GRUB (Debian's grub-emu, upstream GRUB 2 in user space) which entry a grub.cfg boots.

The grubenv is loaded first (as a header's load_env, or whatever booted this config, would),
then the config under test is `source`d by a wrapper that replaces the loader commands with
functions printing their arguments (x86_64-emu has no linux loader, so GRUB finds the function),
then sets timeout=0 and a wide console terminal (a config may switch to gfxterm): GRUB's own menu
code picks the default entry, runs it, and the initrd function halts the emulator. An entry
without an initrd line leaves GRUB at its menu; the process is then killed after a few seconds
and what it printed is still used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

EMU_MODULES = Path("/usr/lib/grub/x86_64-emu")
# grub-emu's video falls back to libcaca, which would paint the terminal: its null driver.
EMU_ENV = {**os.environ, "CACA_DRIVER": "null", "TERM": "dumb"}

WRAPPER = """\
terminfo -g 1000x25 console
load_env
function linux { echo "KVM-LINUX $1"; }
function linux16 { echo "KVM-LINUX $1"; }
function linuxefi { echo "KVM-LINUX $1"; }
function initrd { echo "KVM-INITRD $*"; halt; }
function initrd16 { echo "KVM-INITRD $*"; halt; }
function initrdefi { echo "KVM-INITRD $*"; halt; }
source "$prefix/under-test.cfg"
terminal_output console
terminfo -g 1000x25 console
set timeout=0
set timeout_style=menu
"""


def available() -> bool:
    """Whether grub-emu and its modules are installed here."""
    return shutil.which("grub-emu") is not None and (EMU_MODULES / "normal.mod").exists()


@dataclass
class EmuBoot:
    """What GRUB booted: the titles it printed ("Booting `x'"), the linux and initrd arguments."""

    titles: list[str]
    linux: str
    initrd: list[str]
    output: str


def grubenv_block(env: dict[str, str]) -> bytes:
    """A 1024-byte grubenv block (grub-core/lib/envblk.c format)."""
    text = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in env.items())
    return text.encode().ljust(1024, b"#")


def boot(config: str, env: dict[str, str], wait: float = 4.0) -> EmuBoot:
    """Run config in grub-emu with env as its grubenv; return what its default entry loaded."""
    with tempfile.TemporaryDirectory(prefix="kvm-grub-emu-") as tmp:
        d = Path(tmp)
        (d / "x86_64-emu").symlink_to(EMU_MODULES)
        (d / "grub.cfg").write_text(WRAPPER)
        (d / "under-test.cfg").write_text(config)
        (d / "grubenv").write_bytes(grubenv_block(env))
        try:
            out = subprocess.run(
                ["grub-emu", "-d", str(d), "-m", "/dev/null"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=wait, check=False, env=EMU_ENV,
            ).stdout  # fmt: skip
        except subprocess.TimeoutExpired as exc:  # an entry without initrd: GRUB waits at its menu
            out = exc.stdout or b""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.decode("utf-8", "replace")).replace("\r", "")
    titles = re.findall(r"Booting `(.*)'", text)
    linux = re.findall(r"^KVM-LINUX (.*)$", text, re.M)
    initrd = re.findall(r"^KVM-INITRD (.*)$", text, re.M)
    return EmuBoot(titles, linux[0] if linux else "", initrd[0].split() if initrd else [], text)
