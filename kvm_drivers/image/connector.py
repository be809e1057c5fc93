"""``@kvmimage/PATH``: a disk image as a pyinfra host, so that the deploy fixes an image as it fixes a
server (``pyinfra @kvmimage/srv/web1.qcow2 deploys/kvm_drivers.py``; ``kvm-drivers image fix`` runs it).

- The input is never written (``kvm_image_in_place`` is refused: ``kvm-drivers image fix --in-place``
  commits a proven output into it, kvm_drivers.image.inplace): the deploy writes a qcow2 overlay
  backed by it (``kvm_image_output``, default ``NAME.kvm.qcow2`` beside it), or a converted copy with
  ``kvm_image_flatten``. The output is made under a temporary name and takes its own name only when
  a command ran in the image and the host did not fail; otherwise (a check, ``--dry``, an image
  already compliant, a failure, a killed run) no file carries the output's name.
- The image is mounted by a session process (kvm_drivers.image.session serve) in namespaces of its own;
  the mounts die with it. The deploy's gather runs here, outside the image (``gather_outside``: this
  machine's sh with KVM_ROOT), so nothing of this machine is described as the image's.
- Every command runs inside the image's root under bubblewrap: pivot_root (no chroot to escape), new
  PID, network, IPC and UTS namespaces (no network at all), a fresh /proc without the control
  machine's command line, a minimal /dev (no disk of this machine), no /sys.
- Files are read and written through the session's view of the root, every path resolved inside it.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import tempfile
from io import IOBase
from pathlib import Path
from typing import Any, TypedDict

from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.exceptions import ConnectError, InventoryError
from pyinfra.api.util import get_file_io
from pyinfra.connectors.base import BaseConnector, DataMeta
from pyinfra.connectors.local import LocalConnector
from pyinfra.connectors.util import extract_control_arguments, make_unix_command_for_host

from kvm_drivers.image.disk import DiskError, open_disk
from kvm_drivers.image.paths import inside
from kvm_drivers.image.session import ENV, namespace_command, session_env
from kvm_drivers.report import printable

READY_SECONDS = 300  # a large image's FUSE export and mounts
DEFAULT_COMMAND_SECONDS = 3600  # a command run without pyinfra's _timeout is killed after this
# What initrd builders need as root; not SYS_ADMIN (mounts) nor SYS_CHROOT (a chroot to escape through).
# Nor DAC_READ_SEARCH (open_by_handle_at). Each command runs in a new session (setsid): no controlling
# terminal, so the image's code cannot push input into the operator's (TIOCSTI).
CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
        "CAP_KILL")  # fmt: skip


class ImageData(TypedDict, total=False):
    """The inventory data the connector reads (see ImageConnector.data_meta)."""

    kvm_image_output: str
    kvm_image_flatten: bool
    kvm_image_in_place: bool


def sandbox(root: str) -> list[str]:
    """The bubblewrap arguments that make root "/" for one command (see the module's docstring)."""
    caps = [x for cap in CAPS for x in ("--cap-add", cap)]
    return ["bwrap", "--bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--ro-bind", "/dev/null",
            "/proc/cmdline", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL", *caps, "--clearenv", "--setenv", "PATH", ENV["PATH"], "--setenv", "LC_ALL", "C",
            "--setenv", "HOME", "/root", "--chdir", "/"]  # fmt: skip


def default_output(path: str) -> str:
    """NAME.kvm.qcow2 beside the input (its last suffix replaced)."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}.kvm.qcow2"))


class ImageConnector(BaseConnector):
    """A disk image, fixed offline through a session that holds its mounts (see the module's docstring)."""

    handles_execution = True
    data_cls = ImageData
    data_meta = {
        "kvm_image_output": DataMeta("the image to write (default: NAME.kvm.qcow2 beside the input)"),
        "kvm_image_flatten": DataMeta("write a converted copy instead of an overlay backed by the input", False),
        "kvm_image_in_place": DataMeta("refused: `kvm-drivers image fix --in-place` changes an input", False),
    }

    def __init__(self, state: Any, host: Any) -> None:
        super().__init__(state, host)
        self.local = LocalConnector(state, host)
        self.session: subprocess.Popen | None = None
        self.pid = 0
        self.kvm_image_root = ""
        self.partial = ""
        self.output = ""
        self.ran = False  # a command ran inside the image (a gather alone, or a --dry run, writes no output)

    @staticmethod
    def make_names_data(name: str | None = None):
        if not name:
            raise InventoryError("@kvmimage needs the image's path: @kvmimage/PATH")
        path = "/" + name.lstrip("/")
        yield f"@kvmimage{path}", {"kvm_image": path}, ["@kvmimage"]

    # --- the session ------------------------------------------------------------------------------

    def connect(self) -> None:
        path = self.host.data.kvm_image
        try:
            disk = open_disk(path)
        except DiskError as exc:
            raise ConnectError(f"image {path}: {printable(str(exc))}") from None
        if self.data.get("kvm_image_in_place"):
            raise ConnectError(f"image {path}: kvm_image_in_place: use `kvm-drivers image fix --in-place`, which "
                               "proves the fix on an overlay, keeps what it changes inside the image, then commits")
        self.output = os.path.abspath(self.data.get("kvm_image_output") or default_output(disk.path))
        if os.path.lexists(self.output):
            raise ConnectError(f"image {path}: the output {self.output} exists: remove it or name another")
        out = Path(self.output)
        self.partial = str(out.with_name(f".{out.name}.partial-{secrets.token_hex(4)}"))
        if self.data.get("kvm_image_flatten"):
            cmd = ["qemu-img", "convert", "-q", "-f", disk.format, "-O", "qcow2", disk.path, self.partial]
            args = [self.partial, "qcow2"]
        else:  # the input as the overlay's backing file, named by its absolute path, never written
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", disk.path, "-F", disk.format, self.partial]
            args = [self.partial, "qcow2", disk.path, disk.format]
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode != 0:
            self._discard()
            raise ConnectError(f"image {path}: {cmd[0]} {cmd[1]} failed: {made.stderr.strip()[-300:]}")
        self._start(path, args)

    def _start(self, path: str, args: list[str]) -> None:
        err = tempfile.TemporaryFile()
        self.session = subprocess.Popen(namespace_command("serve", *args), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=err, text=True, env=session_env())  # fmt: skip
        ready, _, _ = select.select([self.session.stdout], [], [], READY_SECONDS)
        line = self.session.stdout.readline().split() if ready else []
        if not ready:
            self.session.kill()
        if len(line) != 3 or line[0] != "ready":
            self.session.wait()
            err.seek(0)
            said = [x for x in err.read().decode(errors="replace").splitlines() if not x.startswith("note: ")]
            self.session = None
            self._discard()
            why = said[-1] if said else f"not ready within {READY_SECONDS} s" if not ready else "the session stopped"
            raise ConnectError(f"image {path}: {printable(why)[:400]}")
        self.pid, self.kvm_image_root = int(line[1]), line[2]
        self.host.connector_data["kvm_image_root"] = self.kvm_image_root

    def disconnect(self) -> None:
        """Unmount (flushing the image), then give the output its name: only when a command ran inside
        the image and this host did not fail (a check, a --dry run or a compliant image write none).
        """
        ok = self.session is not None and self._close()
        if not self.partial:
            return
        if ok and self.ran and self.host not in self.state.failed_hosts:
            try:
                os.link(self.partial, self.output)  # never over a file that appeared meanwhile
            finally:
                self._discard()
        else:
            self._discard()
            if self.ran and not ok:
                raise RuntimeError(f"image {self.host.data.kvm_image}: the image could not be flushed and "
                                   f"unmounted cleanly: {self.output} was not written")  # fmt: skip

    def _close(self) -> bool:
        assert self.session is not None
        try:
            self.session.stdin.write("close\n")
            self.session.stdin.flush()
            said = self.session.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            said = ""
        code = self.session.wait()
        self.session = None
        return said == "closed" and code == 0

    def _discard(self) -> None:
        if self.partial:
            Path(self.partial).unlink(missing_ok=True)

    # --- commands and files -----------------------------------------------------------------------

    def gather_outside(self, command: StringCommand, timeout: float | None = None) -> list[str] | None:
        """Run command (the gather, with KVM_ROOT set to kvm_image_root) with this machine's sh in the
        session's mount namespace: it reads the image without running anything inside it.
        """
        proc = subprocess.Popen([*self._enter(), "sh", "-c", command.get_raw_value()], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=ENV,
                                start_new_session=True)  # its own process group: killed whole on a timeout  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # a reader stuck on the image's FIFO must not hold its mounts
            proc.communicate()
            return None
        return out.decode("utf-8", "replace").splitlines() if proc.returncode == 0 else None

    def _enter(self) -> list[str]:
        """Nsenter into the session's mount and PID namespaces: all that runs there dies with the session."""
        return ["nsenter", "--target", str(self.pid), "--mount", "--"]

    def run_shell_command(self, command: StringCommand, print_output: bool = False, print_input: bool = False,
                          **arguments: Any):  # fmt: skip
        local_arguments = extract_control_arguments(arguments)
        self.ran = True
        command = make_unix_command_for_host(self.state, self.host, command, **arguments)
        # pyinfra's _timeout stops waiting but kills nothing: timeout kills nsenter a little later, and
        # with it bwrap (--die-with-parent) and everything in its PID namespace.
        limit = local_arguments.get("_timeout") or DEFAULT_COMMAND_SECONDS
        wrapped = StringCommand("timeout", "-s", "KILL", str(int(limit) + 5), *self._enter(),
                                *[QuoteString(x) for x in sandbox(self.kvm_image_root)], "/bin/sh", "-c",
                                QuoteString(command))  # fmt: skip
        return self.local.run_shell_command(wrapped, print_output=print_output, print_input=print_input,
                                            **local_arguments)  # fmt: skip

    def _path(self, remote: str) -> str:
        """The path of the image, as this machine reaches it: through the session's root, resolved inside."""
        return inside(f"/proc/{self.pid}/root{self.kvm_image_root}", remote)

    def put_file(self, filename_or_io: str | IOBase, remote_filename: str, remote_temp_filename: str | None = None,
                 print_output: bool = False, print_input: bool = False, **arguments: Any) -> bool:  # fmt: skip
        self.ran = True
        target = self._path(remote_filename)
        tmp = f"{target}.kvm-drivers.{secrets.token_hex(4)}"
        with get_file_io(filename_or_io) as src, open(tmp, "xb") as dst:
            data = src.read()
            dst.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, target)
        return True

    def get_file(self, remote_filename: str, filename_or_io: str | IOBase, remote_temp_filename: str | None = None,
                 print_output: bool = False, print_input: bool = False, **arguments: Any) -> bool:  # fmt: skip
        source = self._path(remote_filename)
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise OSError(f"{remote_filename}: not a regular file in the image")
        with open(source, "rb") as src, get_file_io(filename_or_io, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return True

