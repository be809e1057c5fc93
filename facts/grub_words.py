"""
How does GRUB read a word of grub.cfg? Its script's tokens (words, separators, braces), the
variables of its environment contexts, and what a word expands to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from kvm_drivers.facts.boot_entries import BootConfigTooLarge

# Variables GRUB >= 2.00 sets itself (grub-core/normal/main.c, features[]).
GRUB_FEATURES = (
    "feature_chainloader_bpb feature_ntldr feature_platform_search_hint feature_default_font_path "
    "feature_all_video_module feature_menuentry_id feature_menuentry_options feature_200_final "
    "feature_nativedisk_cmd feature_timeout_style"
).split()
# Variables GRUB sets at run time that a file cannot tell: a test on them has no known answer.
GRUB_RUNTIME = set(
    "grub_platform grub_cpu prefix root cmdpath config_directory config_file boot "
    "lang locale_dir secondary_locale_dir net_default_server pxe_default_server".split()
)


_VAR = re.compile(r"\$\{([A-Za-z0-9_#?*@]+)\}|\$([A-Za-z_][A-Za-z0-9_]*|[0-9#?*@])")
_Word = list  # parts (text, quote) with quote "'", '"' or ''


def _add(word: list | None, text: str, quote: str) -> list:
    """Append a part to a word under construction, merging it with a last part of the same
    quoting (parts are [chunks, quote] until _done(): building a word stays linear).
    """
    word = word or []
    if word and word[-1][1] == quote:
        word[-1][0].append(text)
    else:
        word.append([[text], quote])
    return word


def _done(word: list) -> list:
    """A finished word: a list of (text, quote) parts."""
    return [("".join(chunks), quote) for chunks, quote in word]


_PLAIN = re.compile(r"[^\\\s;#{}'\"$]+")
_BLANKS = re.compile(r"[ \t\r]+")
_SEPARATORS = re.compile(r"[\n;][\n; \t\r]*")  # ';' and newlines, and the blanks between them
_IN_DOUBLE_QUOTES = re.compile(r'[^"\\]+')


# Outside a word: a whole plain word ending where a word ends, blanks, separators, or a brace;
# anything else (quotes, '$', a backslash, '#'...) goes through the general rules below.
_SIMPLE = re.compile(r"(?P<w>[^\\\s;#{}'\"$]+)(?=[ \t\r\n;{}]|\Z)|(?P<b>[ \t\r]+)|(?P<s>[\n;][\n; \t\r]*)|(?P<c>[{}])")


def _grub_tokens(text: str) -> Iterator:
    """GRUB script tokens: words (lists of (text, quote) parts), and newline (also for ';'), '{', '}'.

    Blocks opened and closed on one line ('{ true; }') come out as multi-line ones do. A run of
    separators is one newline token (an empty statement does nothing). Runs of plain characters,
    blanks, comments and quoted text are taken whole: the cost is linear in the text, with few
    steps of Python per token.
    """
    word: list | None = None
    i, n = 0, len(text)
    simple = _SIMPLE.match
    while i < n:
        if word is None and (m := simple(text, i)):
            kind = m.lastgroup
            if kind == "w":
                yield [(m.group(), "")]
            elif kind == "s":
                yield "\n"
            elif kind == "c":
                yield m.group()
            i = m.end()
            continue
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                word = _add(word, text[i + 1], "'")
            i += 2
        elif c in " \t\r":
            if word is not None:
                yield _done(word)
                word = None
            i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]
        elif c in "\n;":
            if word is not None:
                yield _done(word)
                word = None
            yield "\n"
            i = _SEPARATORS.match(text, i).end()  # type: ignore[union-attr]
        elif c == "#" and word is None:
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "{}":
            if word is not None:
                yield _done(word)
                word = None
            yield c
            i += 1
        elif c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            word = _add(word, text[i + 1 : j], "'")
            i = j + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n:
                m = _IN_DOUBLE_QUOTES.match(text, j)
                if m:
                    buf.append(m.group())
                    j = m.end()
                elif text[j] == '"':
                    break
                elif j + 1 < n and text[j + 1] in '"\\$':  # a backslash escapes these only
                    buf.append(text[j + 1])
                    j += 2
                else:
                    buf.append("\\")
                    j += 1
            word = _add(word, "".join(buf), '"')
            i = j + 1
        elif c == "$" and text.startswith("${", i):
            j = text.find("}", i)
            j = n - 1 if j < 0 else j
            word = _add(word, text[i : j + 1], "")
            i = j + 1
        else:
            m = _PLAIN.match(text, i)
            j = m.end() if m else i + 1
            word = _add(word, text[i:j], "")
            i = j
    if word is not None:
        yield _done(word)


def _grub_lex(text: str) -> list:
    """All of _grub_tokens(text)."""
    return list(_grub_tokens(text))


class _Unknown(Exception):
    """A value GRUB would know at boot time but the files do not tell."""


class _Vars:
    """The variables of one GRUB environment context (normal/context.c).

    A submenu's body runs in a new context that starts as a copy of the exported variables
    (upstream, RHEL 8) or of all of them (RHEL 9, Fedora). The copy is made lazily: a name not
    set in the new context is looked up in the one below it, if it was exported when the submenu
    was opened (``cutoff``: export numbers below it; None: every variable). Nothing is written
    below while the submenu is open, so this is the copy, at O(1) per submenu.
    """

    __slots__ = ("own", "below", "cutoff", "exports")

    def __init__(self, own: dict[str, str | None], below: _Vars | None = None, cutoff: int | None = None,
                 exports: dict[str, int] | None = None):  # fmt: skip
        self.own = own
        self.below = below
        self.cutoff = cutoff
        self.exports = exports if exports is not None else {}  # name -> when it was first exported

    def find(self, name: str) -> tuple[bool, str | None]:
        """(is set, value)."""
        ctx: _Vars | None = self
        while ctx is not None:
            if name in ctx.own:
                return True, ctx.own[name]
            if ctx.cutoff is not None and self.exports.get(name, ctx.cutoff) >= ctx.cutoff:
                return False, None
            ctx = ctx.below
        return False, None

    def get(self, name: str) -> str | None:
        return self.find(name)[1]

    def __contains__(self, name: str) -> bool:
        return self.find(name)[0]

    def __setitem__(self, name: str, value: str | None) -> None:
        self.own[name] = value


EXPANSION_BUDGET = 8  # variables may expand to this many times the size of grub.cfg (+ 1 MiB) in all


@dataclass
class ExpansionBudget:
    """Characters variable expansions may still produce, shared by the grub.cfg files of one host
    (each one read adds EXPANSION_BUDGET times its size): a grubenv value expanded by many files
    costs in all, not per file.
    """

    left: int = 1 << 20


def expand_word(word: _Word, variables: _Vars, budget: ExpansionBudget, keep_empty: bool = False) -> str | None:
    """The value of a word, its variables looked up in ``variables`` and its cost taken from
    ``budget``: _Unknown for a variable only GRUB knows, BootConfigTooLarge past the budget, None
    for an unquoted empty expansion (no argument at all).
    """
    out = []
    left = budget.left
    for text, quote in word:
        if quote == "'":
            out.append(text)
            left -= len(text)
            continue
        pos = 0
        for m in _VAR.finditer(text):
            out.append(text[pos : m.start()])
            name = m.group(1) or m.group(2)
            known, value = variables.find(name)
            if value is None and (known or name in GRUB_RUNTIME):
                raise _Unknown(name)  # set at boot time, or under a condition we cannot evaluate
            out.append(value or "")
            left -= m.start() - pos + len(value or "")
            if left < 0:  # e.g. 'set a=$a$a' over and over: twice the size each time
                raise BootConfigTooLarge("grub.cfg: its variables expand to far more text than the file holds")
            pos = m.end()
        out.append(text[pos:])
        left -= len(text) - pos
    if left < 0:
        raise BootConfigTooLarge("grub.cfg: its variables expand to far more text than the file holds")
    budget.left = left
    value = "".join(out)
    if not value and not keep_empty and all(q == "" for _, q in word):
        return None  # an unquoted empty expansion is no argument at all
    return value
