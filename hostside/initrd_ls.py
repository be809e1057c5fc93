"""
List the files of an initrd image: the fallback used when lsinitrd/lsinitramfs is missing
or lists nothing (old lsinitrd shows only the early-microcode archive).

Runs ON THE TARGET HOST as ``python3 -c CODE IMAGE`` (Python 2.7 or 3), so it uses the
standard library only, plus the zstd/lz4/bzip2/lzop commands for those compressions.
Handles concatenated archives: uncompressed cpio (early microcode) then a compressed one.
Prints one path per line; exits 1 with a message on stderr when the image is unreadable.
"""

import subprocess
import sys
import zlib

MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"BZh", "bzip2"),
    (b"\x89LZO", "lzop"),
    (b"\x5d\x00\x00", "lzma"),
)
COMMANDS = {"zstd": "zstd", "lz4": "lz4", "bzip2": "bzip2", "lzop": "lzop"}


def decompress(kind, data):
    """Return the decompressed bytes of a stream of the given kind."""
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    if kind in ("xz", "lzma"):
        import lzma

        fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
        return lzma.LZMADecompressor(format=fmt).decompress(data)
    proc = subprocess.Popen(
        [COMMANDS[kind], "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(data)
    if not out:
        raise ValueError("%s -dc failed: %s" % (kind, err.decode("utf-8", "replace").strip()))
    return out


def walk(data, names, depth=0):
    """Append the file names of every archive in data to names."""
    pos, size = 0, len(data)
    while pos < size:
        while pos < size and data[pos : pos + 1] == b"\x00":
            pos += 1
        if pos >= size:
            return
        magic = data[pos : pos + 6]
        if magic in (b"070701", b"070702"):
            header = data[pos : pos + 110]
            if len(header) < 110:
                raise ValueError("truncated cpio header at %d" % pos)
            filesize = int(header[54:62], 16)
            namesize = int(header[94:102], 16)
            name = data[pos + 110 : pos + 110 + namesize - 1].decode("utf-8", "replace")
            pos = (pos + 110 + namesize + 3) & ~3
            pos = (pos + filesize + 3) & ~3
            if name != "TRAILER!!!":
                names.append(name)
            continue
        for prefix, kind in MAGICS:
            if data[pos : pos + len(prefix)] == prefix:
                if depth > 4:
                    raise ValueError("nested compression too deep")
                walk(decompress(kind, data[pos:]), names, depth + 1)
                return
        raise ValueError("unknown data at offset %d: %r" % (pos, data[pos : pos + 8]))


def main(path):
    """Print the file names in the image at path."""
    with open(path, "rb") as handle:
        data = handle.read()
    names = []
    try:
        walk(data, names)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable image
        sys.stderr.write("%s: unreadable initrd: %s\n" % (path, exc))
        return 1
    if not names:
        sys.stderr.write("%s: no files in initrd\n" % path)
        return 1
    sys.stdout.write("\n".join(names) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
