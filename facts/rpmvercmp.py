"""
Which of two versions is newer, as rpm compares them, and as GRUB's blscfg compares BLS entries
(name, version, release): ``rpmvercmp()`` and sort keys that order as it does.
"""

from __future__ import annotations

import re


def _is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def rpmvercmp(a: str, b: str, caret: str | None = "^") -> int:
    """Segment-wise version comparison of rpm: 1 if a is newer, 0 if equal, -1 if b is newer.

    Written after rpm's rpmvercmp() (rpmio/rpmvercmp.c) and checked against rpm's own table
    tests/rpmvercmp.at. '~' sorts before anything, even the end of the string; ``caret`` sorts
    after the end of the string but before anything else: '^' in rpm, '+' in the copy inside
    GRUB's blscfg.c on Fedora and RHEL 9 (vercmp()), None in RHEL 8's copy (no such separator).
    Only ASCII letters and digits make segments; anything else separates them.
    """
    if a == b:
        return 0
    i, j, la, lb = 0, 0, len(a), len(b)

    def skip(s: str, k: int, n: int) -> int:
        while k < n and not _is_alnum(s[k]) and s[k] != "~" and s[k] != caret:
            k += 1
        return k

    while i < la or j < lb:
        i, j = skip(a, i, la), skip(b, j, lb)
        ca, cb = a[i : i + 1], b[j : j + 1]
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if caret and (ca == caret or cb == caret):
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != caret:
                return 1
            if cb != caret:
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        test = str.isdigit if ca.isdigit() else str.isalpha
        isnum = test is str.isdigit
        i2, j2 = i, j
        while i2 < la and a[i2].isascii() and test(a[i2]):
            i2 += 1
        while j2 < lb and b[j2].isascii() and test(b[j2]):
            j2 += 1
        one, two = a[i:i2], b[j:j2]
        if not two:  # segments of different types: the numeric one is newer
            return 1 if isnum else -1
        if isnum:
            one, two = one.lstrip("0"), two.lstrip("0")
            if len(one) != len(two):
                return 1 if len(one) > len(two) else -1
        if one != two:
            return 1 if one > two else -1
        i, j = i2, j2
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def _split_nvr(text: str, has_name: bool) -> tuple[str, str, str]:
    """(name, version, release) as blscfg.c split_package_string() cuts them at the last '-'s."""
    rest, dash, release = text.rpartition("-")
    if not dash:
        rest, release = text, ""
    has_release = bool(dash)
    if not has_name:
        version, name = rest, ""
    else:
        name, dash2, version = rest.rpartition("-")
        if not dash2:
            name, version = rest, ""
        if not dash2:  # no version: the release moves up into it
            version, release, has_release = release, "", False
    if not version and has_release:
        version, release = release, ""
    return name, version, release


def _split_cmp(a: str, b: str, has_name: bool, caret: str | None) -> int:
    """blscfg.c split_cmp(): name, then version, then release, each with vercmp()."""
    na, va, ra = _split_nvr(a, has_name)
    nb, vb, rb = _split_nvr(b, has_name)
    for x, y in ((na, nb), (va, vb), (ra, rb)):
        r = rpmvercmp(x, y, caret)
        if r:
            return r
    return 0


_SEGMENTS = {c: re.compile("[0-9]+|[A-Za-z]+|" + ("[~" + re.escape(c) + "]" if c else "~")) for c in ("^", "+", None)}


def version_key(text: str, caret: str | None = "^") -> tuple:
    """A key that orders versions as rpmvercmp() does: key(a) < key(b) iff rpmvercmp(a, b) < 0,
    equal iff it is 0.

    rpmvercmp() walks both strings in step, skipping separators (anything but ASCII letters,
    digits, '~' and the caret), and compares one token of each at a time: '~' sorts before the
    end of the string, the end before the caret, the caret before any segment, a letter segment
    before a number segment; letters by their string, numbers by their value (no leading zeros:
    longer is larger, then as strings). That is the order of these token tuples, compared
    lexicographically, the end being the token (1,).
    """
    out: list[tuple] = []
    for m in _SEGMENTS[caret].finditer(text):
        t = m.group()
        if t == "~":
            out.append((0,))
        elif t == caret:
            out.append((2,))
        elif t[0].isdigit():
            t = t.lstrip("0")
            out.append((4, len(t), t))
        else:
            out.append((3, t))
    out.append((1,))
    return tuple(out)


def split_key(text: str, has_name: bool, caret: str | None) -> tuple:
    """A key that orders as blscfg.c split_cmp() does (name, version, release by version_key())."""
    return tuple(version_key(part, caret) for part in _split_nvr(text, has_name))
