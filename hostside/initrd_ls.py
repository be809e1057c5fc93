"""
List the files of an initrd image: the fallback used when lsinitrd/lsinitramfs is missing
or lists nothing (old lsinitrd shows only the early-microcode archive). And print the content
of a few small files inside it (its modprobe.d and command-line files: lsinitramfs cannot).

Runs ON THE TARGET HOST as ``python3 -c CODE IMAGE`` (Python 2.7 or 3), so it uses the
standard library only, plus the zstd/lz4/bzip2/lzop commands for those compressions.
Handles concatenated archives: uncompressed cpio (early microcode) then a compressed one.
Prints one path per line; exits 1 with a message on stderr when the image is unreadable.

``python3 -c CODE --cat IMAGE PATH...``: for each PATH (as the listing shows it, a leading
"./" or "/" left out) that the image holds, "f PATH" then its lines, each as "l LINE" (bytes
other than printable ASCII and tabs as '?'; a last line without a newline is a line). A symbolic
link is followed inside the image (to /dev/null: an empty file); the last copy of a name wins, as
when the kernel unpacks the archives in turn. A PATH the image does not hold (or only as a
directory, a dangling link, or a file over MAX_CAT bytes) is left out: the caller notices.
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
MAX_CAT = 1024 * 1024  # bytes of one file --cat prints at most
S_IFMT, S_IFREG, S_IFLNK = 0o170000, 0o100000, 0o120000


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


def walk(data, visit, depth=0):
    """Call visit(name, mode, ino, nlink, body) for every entry of every archive in data.

    body: a function returning the entry's bytes.
    """
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
            ino, mode, nlink = int(header[6:14], 16), int(header[14:22], 16), int(header[38:46], 16)
            filesize = int(header[54:62], 16)
            namesize = int(header[94:102], 16)
            name = data[pos + 110 : pos + 110 + namesize - 1].decode("utf-8", "replace")
            pos = (pos + 110 + namesize + 3) & ~3
            start = pos
            pos = (pos + filesize + 3) & ~3
            if name != "TRAILER!!!":
                visit(name, mode, ino, nlink, lambda a=start, b=start + filesize: data[a:b])
            continue
        for prefix, kind in MAGICS:
            if data[pos : pos + len(prefix)] == prefix:
                if depth > 4:
                    raise ValueError("nested compression too deep")
                walk(decompress(kind, data[pos:]), visit, depth + 1)
                return
        raise ValueError("unknown data at offset %d: %r" % (pos, data[pos : pos + 8]))


def clean(name):
    """A name as the listing shows it, without a leading "./" or "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def resolve(entries, name):
    """The (mode, bytes) of name in entries, symbolic links followed; None when not there."""
    for _ in range(10):
        if name == "dev/null":
            return S_IFREG, b""
        entry = entries.get(name)
        if entry is None or entry[0] & S_IFMT != S_IFLNK:
            return entry
        target = entry[1].decode("utf-8", "replace")
        parts = [] if target.startswith("/") else name.split("/")[:-1]
        for part in target.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        name = "/".join(parts)
    return None


def printable(line):
    """The bytes of line with everything but printable ASCII and tabs as '?'."""
    return bytes(bytearray(c if c == 9 or 32 <= c <= 126 else 63 for c in bytearray(line)))


def cat(data, wanted, out):
    """Write "f PATH" and "l LINE" lines for each wanted path the image holds."""
    entries, by_ino = {}, {}

    def visit(name, mode, ino, nlink, body):
        name = clean(name)
        kind = mode & S_IFMT
        if kind == S_IFLNK or (kind == S_IFREG and name in wanted) or (
            kind == S_IFREG and ("modprobe" in name or "cmdline" in name)
        ):
            entries[name] = (mode, body(), ino, nlink)
            if kind == S_IFREG and nlink > 1 and entries[name][1]:
                by_ino[ino] = entries[name][1]  # hard links: newc stores the data with the last one
        else:
            entries.pop(name, None)

    walk(data, visit)
    for name in wanted:
        entry = resolve(entries, name)
        if entry is None or entry[0] & S_IFMT != S_IFREG:
            continue
        body = entry[1]
        if not body and len(entry) > 3 and entry[3] > 1:
            body = by_ino.get(entry[2], b"")
        if len(body) > MAX_CAT:
            continue
        out(b"f " + name.encode("utf-8") + b"\n")
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for line in lines:
            out(b"l " + printable(line) + b"\n")


def main(path, wanted=None):
    """Print the file names in the image at path (with wanted: those files' lines, see --cat)."""
    with open(path, "rb") as handle:
        data = handle.read()
    names = []
    out = getattr(sys.stdout, "buffer", sys.stdout).write
    try:
        if wanted is not None:
            cat(data, [clean(w) for w in wanted], out)
            return 0
        walk(data, lambda name, mode, ino, nlink, body: names.append(name))
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable image
        sys.stderr.write("%s: unreadable initrd: %s\n" % (path, exc))
        return 1
    if not names:
        sys.stderr.write("%s: no files in initrd\n" % path)
        return 1
    sys.stdout.write("\n".join(names) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cat"]:
        sys.exit(main(sys.argv[2], sys.argv[3:]))
    sys.exit(main(sys.argv[1]))
