"""
What runs on the hosts, as the text sent to them: POSIX sh scripts and a Python lister.

Facts and operations both send these; nothing here runs on the control machine.

- ``gather.sh``: the one read-only command that gathers a host's state (``@@KVM`` sections,
  specified in ``facts/wire.py`` next to their parser);
- ``write.sh``, ``unblacklist.sh``, ``rebuild.sh``: the changes, each under the host's lock;
- ``aside.sh``, ``efi_copy.sh``, ``verify_uuid.sh``, ``rollback.sh``: those of the boot-path fixes
  (issue 20: move a file aside, copy the UEFI fallback, prove the UUIDs written, undo a failed run);
- ``lib.sh``: shell functions prepended to each of them (listing an initrd and reading its
  modprobe.d and command-line files, module-name normalisation, finding the lines that may stop a
  module: the awk twin of ``facts/blacklist.py``); ``lock.sh``: those of the changes only (lock,
  state directory, rollback, swap);
- ``initrd_ls.py``: lists an initrd where lsinitrd/lsinitramfs cannot, and prints a few of its
  files (``--cat``: lsinitramfs cannot) (Python 2.7 or 3).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).parent


def _compact(script: str) -> str:
    """The script without its comment lines, blank lines and indentation: it travels to every host
    each run (no quoted text in gather.sh or lib.sh spans lines with meaningful leading blanks).
    """
    lines = script.splitlines(keepends=True)
    return "".join(ln.lstrip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))


def _with_lib(name: str, *parts: str) -> str:
    return "".join((HERE / f).read_text() for f in ("lib.sh", *parts, name))


LIB = (HERE / "lib.sh").read_text() + (HERE / "lock.sh").read_text()  # every shell function
GATHER = _compact(_with_lib("gather.sh"))  # read-only: no lock functions
REBUILD = _with_lib("rebuild.sh", "lock.sh")
WRITE = _with_lib("write.sh", "lock.sh")
UNBLACKLIST = _with_lib("unblacklist.sh", "lock.sh")
ASIDE = _with_lib("aside.sh", "lock.sh")
EFI_COPY = _with_lib("efi_copy.sh", "lock.sh")
VERIFY_UUID = _with_lib("verify_uuid.sh", "lock.sh")
ROLLBACK = _with_lib("rollback.sh", "lock.sh")
LISTER = (HERE / "initrd_ls.py").read_text()
# Cached gather output is only reused with the script that produced it.
SCRIPT_VERSION = hashlib.sha256((GATHER + LISTER).encode()).hexdigest()[:16]
