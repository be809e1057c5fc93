"""Ask real GRUB (Debian's grub-emu, upstream GRUB 2 in user space) which entry a grub.cfg boots.

The grubenv is loaded first (as a header's load_env, or whatever booted this config, would),
then the config under test is `source`d by a wrapper that replaces the loader commands with
functions printing their arguments (x86_64-emu has no linux loader, so GRUB finds the function),
then sets timeout=0 and a wide console terminal (a config may switch to gfxterm): GRUB's own menu
code picks the default entry, runs it, and the initrd function halts the emulator. An entry
without an initrd line leaves GRUB waiting for a key (or at its prompt): the process is killed as
soon as it says so (or after a few seconds) and what it printed is still used.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time
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


# What GRUB prints when it waits for a key or a command for ever: nothing more will come.
WAITING = (b"Press any key to continue...", b"\rgrub> ")


def _run(cmd: list[str], wait: float) -> bytes:
    """grub-emu's output until it exits, waits for a key or a command (WAITING: an entry without
    initrd, or no entry at all) or wait seconds have passed; then it is killed."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=EMU_ENV)  # fmt: skip
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + wait
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([proc.stdout], [], [], left)[0]:
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            if any(w in out for w in WAITING):
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return out


def boot(config: str, env: dict[str, str], wait: float = 4.0) -> EmuBoot:
    """Run config in grub-emu with env as its grubenv; return what its default entry loaded."""
    with tempfile.TemporaryDirectory(prefix="kvm-grub-emu-") as tmp:
        d = Path(tmp)
        (d / "x86_64-emu").symlink_to(EMU_MODULES)
        (d / "grub.cfg").write_text(WRAPPER)
        (d / "under-test.cfg").write_text(config)
        (d / "grubenv").write_bytes(grubenv_block(env))
        out = _run(["grub-emu", "-d", str(d), "-m", "/dev/null"], wait)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.decode("utf-8", "replace")).replace("\r", "")
    titles = re.findall(r"Booting `(.*)'", text)
    linux = re.findall(r"^KVM-LINUX (.*)$", text, re.M)
    initrd = re.findall(r"^KVM-INITRD (.*)$", text, re.M)
    return EmuBoot(titles, linux[0] if linux else "", initrd[0].split() if initrd else [], text)
