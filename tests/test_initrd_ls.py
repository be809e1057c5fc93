"""The Python initrd lister (fallback) on real cpio archives in every compression."""

import gzip
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LISTER = Path(__file__).parent.parent / "hostside" / "initrd_ls.py"


def newc(files: dict[str, bytes]) -> bytes:
    """A cpio newc archive, as the kernel reads it."""
    out = b""
    for ino, (name, data) in enumerate(list(files.items()) + [("TRAILER!!!", b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out + b"\0" * (-len(out) % 512)


MAIN = {"init": b"#!/bin/sh\n", "usr/lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko.xz": b"x" * 1000}
EARLY = {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 300}


def run_lister(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LISTER.read_text(), str(path)], capture_output=True, text=True)


def compressors():
    yield "none", lambda b: b
    yield "gzip", gzip.compress
    yield "xz", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    for tool in ("zstd", "lz4"):
        if shutil.which(tool):
            yield tool, lambda b, t=tool: subprocess.run([t, "-c"], input=b, capture_output=True, check=True).stdout


@pytest.mark.parametrize("name,compress", list(compressors()), ids=[c[0] for c in compressors()])
@pytest.mark.parametrize("early", [False, True], ids=["plain", "early-microcode"])
def test_lists_every_archive(tmp_path, name, compress, early):
    image = tmp_path / "initrd.img"
    image.write_bytes((newc(EARLY) if early else b"") + compress(newc(MAIN)))
    proc = run_lister(image)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.split()
    assert "usr/lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko.xz" in names
    assert ("kernel/x86/microcode/GenuineIntel.bin" in names) == early


def test_garbage_is_reported_not_listed(tmp_path):
    image = tmp_path / "initrd.img"
    image.write_bytes(b"this is not an initrd at all")
    proc = run_lister(image)
    assert proc.returncode == 1 and "unreadable initrd" in proc.stderr and proc.stdout == ""


def test_truncated_gzip_is_reported(tmp_path):
    image = tmp_path / "initrd.img"
    image.write_bytes(gzip.compress(newc(MAIN))[:40])
    proc = run_lister(image)
    assert proc.returncode == 1


def test_old_lsinitrd_listing_only_the_microcode_archive_falls_back_to_python(tmp_path):
    """An old lsinitrd shows the early cpio only: lib.sh must notice (no .ko) and use the Python lister."""
    image = tmp_path / "initrd.img"
    image.write_bytes(newc(EARLY) + gzip.compress(newc(MAIN)))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "lsinitrd").write_text("#!/bin/sh\necho 'kernel/x86/microcode/GenuineIntel.bin'\n")
    (fake / "lsinitrd").chmod(0o755)
    lib = (LISTER.parent / "lib.sh").read_text()
    script = lib.replace("PATH=/usr/local/sbin", f"PATH={fake}:/usr/local/sbin") + '\ninitrd_modules "$1"\n'
    env = {"PATH": f"{fake}:/usr/bin:/bin", "PYLIST": LISTER.read_text()}
    proc = subprocess.run(["sh", "-c", f'PYLIST="$PYLIST"; {script}', "t", str(image)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["virtio_blk"]
    # and a native lister that does see modules is trusted as it is
    (fake / "lsinitrd").write_text("#!/bin/sh\necho 'usr/lib/modules/6.1.0/kernel/net/virtio_net.ko.xz'\n")
    proc = subprocess.run(["sh", "-c", f'PYLIST="$PYLIST"; {script}', "t", str(image)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.stdout.split() == ["virtio_net"]


def newc_entries(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data) entries (symbolic links: mode 0o120777, data the target)."""
    out = b""
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out


def cat(path: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LISTER.read_text(), "--cat", str(path), *names],
                          capture_output=True, text=True)  # fmt: skip


CONF = [
    ("./etc/modprobe.d/x.conf", 0o100644, b"install virtio_blk /bin/false\ninstall virtio_net \\\n  /bin/true"),
    ("etc/modprobe.d/masked.conf", 0o120777, b"/dev/null"),
    ("etc/modprobe.d/link.conf", 0o120777, b"../../usr/lib/modprobe.d/real.conf"),
    ("usr/lib/modprobe.d/real.conf", 0o100644, b"alias virtio_pci off\n"),
    ("etc/cmdline.d/10.conf", 0o100644, b"rd.driver.blacklist=virtio_pci\xff\r\n"),
    ("etc/modprobe.d/dir.conf", 0o040755, b""),
]


@pytest.mark.parametrize("name,compress", list(compressors()), ids=[c[0] for c in compressors()])
def test_cat_prints_the_files_asked_for(tmp_path, name, compress):
    image = tmp_path / "initrd.img"
    image.write_bytes(newc(EARLY) + compress(newc_entries(CONF)))
    proc = cat(image, "etc/modprobe.d/x.conf", "etc/modprobe.d/masked.conf", "etc/modprobe.d/link.conf",
               "etc/cmdline.d/10.conf", "etc/modprobe.d/dir.conf", "etc/modprobe.d/absent.conf")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "f etc/modprobe.d/x.conf", "l install virtio_blk /bin/false", "l install virtio_net \\", "l   /bin/true",
        "f etc/modprobe.d/masked.conf",  # a link to /dev/null: empty
        "f etc/modprobe.d/link.conf", "l alias virtio_pci off",  # followed inside the image
        "f etc/cmdline.d/10.conf", "l rd.driver.blacklist=virtio_pci??",  # only printable ASCII travels
    ]  # a directory and a file the image does not hold are left out: the caller notices


def test_cat_takes_the_last_copy_and_refuses_huge_files(tmp_path):
    image = tmp_path / "initrd.img"
    first = newc_entries([("etc/modprobe.d/x.conf", 0o100644, b"blacklist virtio_blk\n")])
    second = newc_entries([("etc/modprobe.d/x.conf", 0o100644, b"# fixed\n"),
                           ("etc/modprobe.d/big.conf", 0o100644, b"#" * (1024 * 1024 + 1))])  # fmt: skip
    image.write_bytes(first + gzip.compress(second))
    proc = cat(image, "etc/modprobe.d/x.conf", "etc/modprobe.d/big.conf")
    assert proc.stdout.splitlines() == ["f etc/modprobe.d/x.conf", "l # fixed"]
    image.write_bytes(b"garbage")
    proc = cat(image, "etc/modprobe.d/x.conf")
    assert proc.returncode == 1 and "unreadable initrd" in proc.stderr


def test_initrd_conf_falls_back_to_lsinitrd_without_python(tmp_path):
    """No Python lister: lsinitrd prints each file (lsinitrd IMAGE FILE); without it, a marker."""
    lib = (LISTER.parent / "lib.sh").read_text()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "lsinitrd").write_text(
        '#!/bin/sh\n# stand-in: lsinitrd IMAGE FILE prints FILE\n'
        'case "$2" in etc/modprobe.d/x.conf) printf "install virtio_blk /bin/false" ;; *) exit 1 ;; esac\n'
    )
    (fake / "lsinitrd").chmod(0o755)
    script = lib.replace("PATH=/usr/local/sbin", f"PATH={fake}:/usr/local/sbin") + '\nPYLIST=""\ninitrd_conf "$@"\n'

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", script, "t", "img", "etc/modprobe.d/x.conf", "etc/cmdline"],
                              capture_output=True, text=True, env={"PATH": f"{fake}:/usr/bin:/bin"})  # fmt: skip

    assert run().stdout.splitlines() == ["f etc/modprobe.d/x.conf", "l install virtio_blk /bin/false"]
    (fake / "lsinitrd").unlink()
    if not any(Path(d, "lsinitrd").exists() for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                                                        "/sbin", "/bin")):  # fmt: skip
        out = run().stdout
        assert out.startswith("e no way to read files inside an initrd"), out
