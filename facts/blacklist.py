r"""
Which module-configuration lines and command-line words stop a driver loading, and why.

Pure: text in, verdicts out (one job). The lines are in modprobe.d / modprobe.conf syntax, as
gather.sh sends them (a logical line, its continuation lines joined) or as a file holds them; the
words are a kernel command line's (the default boot entry's) or those of an initrd's own
command-line files (dracut's etc/cmdline.d/*.conf and etc/cmdline). Module names compare as the
kernel knows them: dashes as underscores (``facts.config_files.norm`` for the wanted names).

When in doubt, a line stops the driver: a false "stopped" costs a rebuild or a question to an
admin; a false "loads" can leave a host that does not boot on KVM reported compliant.
hostside/lib.sh KVM_CONF is this module's twin in awk (it finds the lines on the hosts, and
rebuild.sh judges a new image with it): it never lets pass what this module stops
(tests/test_blacklist.py checks them against each other).

What the sources say (read at kmod-project/kmod 84fa569b, vadmium/module-init-tools 3.16
4026aad8, dracutdevs/dracut 5d2bda46, the kernel's kernel/module/main.c, openSUSE/mkinitrd
a040f1e6, Debian's initramfs-tools init):

- Reading a file, kmod (shared/util.c freadline_wrapped) and module-init-tools (util.c
  getline_wrapped) join a line ending in a backslash with the next one, and drop any other
  backslash, keeping the character after it; then a line starting with '#' is a comment (after
  the join: a comment ending in a backslash swallows the next line). Words are split on blanks
  and tabs only (libkmod-config.c kmod_config_parse, strtok_r "\\t ").
- Names go through underscores() (shared/util.c): dashes become underscores except inside
  '[...]'; a ']' outside brackets or an unclosed '[' makes the line a syntax error (ignored).
- ``blacklist M``: the module is skipped when it is looked up through an alias, i.e. by udev for
  its device (libkmod-module.c module_is_blacklisted, streq: no pattern; KMOD_PROBE_APPLY_BLACKLIST).
  An explicit ``modprobe M`` still loads it: counted as a stop all the same (no boot loads virtio
  modules by name alone).
- ``install M COMMAND``: loading M (or any module that needs M: kmod runs the install commands of
  the whole probe list) runs COMMAND through /bin/sh instead of loading M
  (libkmod-module.c kmod_module_probe_insert_module, command_do: system(), MODPROBE_MODULE=M in the
  environment, $CMDLINE_OPTS replaced by the options). M is a pattern (fnmatch in
  kmod_module_get_install_commands). COMMAND is the rest of the line after the one blank or tab
  that follows M (strtok_r "\\0"); a line without it is a syntax error. The command loads M only
  through ``modprobe --ignore-install M`` (-i; without it modprobe runs the install command again)
  or ``insmod .../M.ko``; anything else (true, :, /bin/false, echo, exit 1, another module's
  modprobe) leaves M unloaded.
- ``alias NAME TARGET``: looking NAME up (a pattern, fnmatch in libkmod.c
  kmod_lookup_alias_from_config, consulted before modules.dep) gives TARGET: ``alias M off``
  makes ``modprobe M`` look for a module called "off". Any TARGET other than M itself stops M.
- ``softdep``, ``options``, ``remove``, ``weakdep``: never stop a module.
- Kernel command line: ``modprobe.blacklist=a,b`` adds blacklist entries (libkmod-config.c
  kcmdline_parse_result: kmod compares them as written; module-init-tools modprobe.c
  parse_kcmdline passes them through underscores(): both spellings counted);
  ``module_blacklist=a,b`` makes the kernel refuse those modules whatever loads them
  (kernel/module/main.c blacklisted(): exact names, and a module's name has underscores; the
  parameter's own name may be written with dashes, kernel/params.c parameq); dracut's
  ``rd.driver.blacklist=a,b`` and its old name ``rdblacklist=`` (every occurrence, from the
  kernel command line, etc/cmdline and etc/cmdline.d/*.conf: modules.d/99base/dracut-lib.sh
  getcmdline, getargs) are written as ``blacklist a`` lines (modules.d/90kernel-modules/
  parse-kernel.sh); initramfs-tools' ``blacklist=a,b`` likewise (its init and
  scripts/init-premount/blacklist). Every such word is counted wherever it is found (an initrd's
  command-line files are read by dracut only, and only for rd.driver.blacklist: the others there
  are counted as a doubt).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

from kvm_drivers.facts.config_files import norm

# --- module configuration lines -------------------------------------------------------------


def logical_lines(lines: Iterable[str]) -> list[tuple[int, str, str]]:
    """(first line number, raw text, text as kmod reads it) of each logical line of lines.

    The raw text is the physical lines joined without the backslash-newline between them (what
    gather.sh sends); kmod's text also drops every other backslash, keeping the character after it.
    """
    out: list[tuple[int, str, str]] = []
    raw, start, pending = "", 0, False
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not pending:
            raw, start = "", number
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:  # an odd run of backslashes at the end: the last one escapes the newline
            raw, pending = raw + line[:-1], True
            continue
        raw, pending = raw + line, False
        out.append((start, raw, _unescape(raw)))
    if pending:  # a file ending inside a continuation: kmod reads what it has
        out.append((start, raw, _unescape(raw)))
    return out


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 1
            if i < len(text):
                out.append(text[i])
        else:
            out.append(text[i])
        i += 1
    return "".join(out)


def underscores(name: str) -> str | None:
    """Dashes as underscores outside '[...]', as kmod does it (None: kmod refuses the name)."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "-":
            c = "_"
        elif c == "]":
            return None
        elif c == "[":
            j = name.find("]", i)
            if j < 0:
                return None
            c, i = name[i : j + 1], j
        out.append(c)
        i += 1
    return "".join(out)


def _matches(pattern: str, driver: str) -> bool:
    """fnmatch(pattern, driver, 0) for the names kmod compares (no '/', no backslash left)."""
    if not any(c in pattern for c in "*?["):
        return pattern == driver
    try:  # glibc's fnmatch takes "[^...]" for "[!...]" too
        return fnmatchcase(driver, pattern.replace("[^", "[!"))
    except Exception:  # noqa: BLE001 - a pattern we cannot read: in doubt, it names the driver
        return True


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[ \t]+", text) if w]


def classify(line: str, wanted: Iterable[str]) -> list[tuple[str, str]]:
    """(driver, why) for each wanted driver one logical line (as kmod reads it) stops."""
    drivers = [norm(w) for w in wanted]
    if not line or line.startswith("#"):
        return []
    words = _words(line)
    if len(words) < 2:
        return []
    cmd, name = words[0], underscores(words[1])
    if name is None:
        return []
    out = []
    if cmd == "blacklist":
        for d in drivers:
            if name == d:
                out.append((d, "blacklisted: udev does not load it for its device"))
    elif cmd == "alias":
        target = underscores(words[2]) if len(words) > 2 else None
        if target is None:
            return []
        for d in drivers:
            if _matches(name, d) and target != d:
                out.append((d, f"aliased: 'modprobe {d}' looks for a module '{target}' instead"))
    elif cmd == "install":
        m = re.match(r"[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]", line)
        if not m:  # no command: a syntax error, the line is ignored
            return []
        command = line[m.end() :]
        for d in drivers:
            if _matches(name, d) and not loads(command, d):
                shown = command.strip() or "an empty command"
                out.append((d, f"install command: loading it runs '{shown[:120]}', which does not load it"))
    return out


def reasons(lines: Iterable[str], wanted: Iterable[str]) -> list[tuple[str, str, str]]:
    """(driver, line, why) for each logical line of lines that stops a wanted driver; the line is
    the raw logical line (continuations joined), as gather.sh sends it.
    """
    wanted = list(wanted)
    return [(d, raw, why) for _, raw, text in logical_lines(lines) for d, why in classify(text, wanted)]


def stops(lines: list[str], wanted: list[str]) -> list[tuple[str, str]]:
    """(driver, line) for each logical line of lines (modprobe.d / modprobe.conf syntax) that stops
    a wanted driver loading: blacklist, an install command that does not load it, an alias to
    something else. A line that stops several wanted drivers appears once for each.
    """
    return [(d, line) for d, line, _ in reasons(lines, wanted)]


# --- install commands -----------------------------------------------------------------------

_OPERATORS = ("&&", "||", ";;", ";", "&", "|", "\n", "(", ")")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_KO = re.compile(r"\.ko(\.(gz|xz|zst|bz2|lz4))?$")  # as lib.sh ko()
_MODPROBE_FLAGS = set("aibfsqv")  # -a -i and flags that change nothing about loading
_MODPROBE_LONG = {"--use-blacklist", "--force", "--force-modversion", "--force-vermagic", "--first-time",
                  "--syslog", "--quiet", "--verbose"}  # fmt: skip


def _simple_commands(command: str) -> list[tuple[str, list[str], str]] | None:
    """(operator before, words, operator after) of each simple command of a /bin/sh command line;
    None when sh would refuse it (an unclosed quote, substitution or parenthesis, an operator with
    no command before it, ';;' outside a case). Quotes are removed from the words; $(...) and `...`
    stay as written inside their word. Parentheses only group: the commands inside run where the
    group runs.
    """
    out: list[tuple[str, list[str], str]] = []
    words: list[str] = []
    word: list[str] | None = None
    before = ""
    depth = 0
    i, n = 0, len(command)

    def end_word() -> None:
        nonlocal word
        if word is not None:
            words.append("".join(word))
            word = None

    while i < n:
        c = command[i]
        op = next((o for o in _OPERATORS if command.startswith(o, i)), "")
        if c in " \t":
            end_word()
            i += 1
        elif c == "#" and word is None:
            break  # a comment to the end of the line
        elif op in ("(", ")"):
            end_word()
            depth += 1 if op == "(" else -1
            if depth < 0:
                return None
            i += 1
        elif op:
            end_word()
            if not words or op == ";;":
                return None
            out.append((before, words, op))
            words, before = [], op
            i += len(op)
        elif c == "'":
            j = command.find("'", i + 1)
            if j < 0:
                return None
            word = (word or []) + [command[i + 1 : j]]
            i = j + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and command[j] != '"':
                if command[j] == "\\" and j + 1 < n and command[j + 1] in '"\\$`':
                    j += 1
                buf.append(command[j])
                j += 1
            if j >= n:
                return None
            word = (word or []) + ["".join(buf)]
            i = j + 1
        elif c == "\\":
            word = (word or []) + [command[i + 1 : i + 2]]
            i += 2
        elif command.startswith("$(", i) or c == "`":
            j = _substitution_end(command, i)
            if j < 0:
                return None
            word = (word or []) + [command[i:j]]
            i = j
        else:
            word = (word or []) + [c]
            i += 1
    end_word()
    if depth:
        return None
    if words:
        out.append((before, words, ""))
    elif before in ("&&", "||", "|"):
        return None  # "a &&" at the end: sh refuses it
    return out


def _substitution_end(command: str, i: int) -> int:
    """The index just after the $(...) or `...` starting at i (-1: unclosed)."""
    if command[i] == "`":
        j = command.find("`", i + 1)
        return -1 if j < 0 else j + 1
    depth, j = 0, i + 1
    while j < len(command):
        if command[j] == "(":
            depth += 1
        elif command[j] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def _arg(word: str, module: str) -> str:
    """The module a modprobe argument names (kmod sets MODPROBE_MODULE for install commands)."""
    if word in ("$MODPROBE_MODULE", "${MODPROBE_MODULE}"):
        return module
    return underscores(word) or ""


def _modprobe_loads(args: list[str], module: str) -> bool:
    """Whether 'modprobe ARGS' loads module without running its install command again. GNU getopt
    finds options anywhere before '--'; the first other word is the module (with -a: every one),
    the rest its options. An option that changes what modprobe does (-r, -n, -C, -d...) or one it
    does not know: not a load.
    """
    ignore = every = False
    names: list[str] = []
    options_done = False
    for w in args:
        if not options_done and w == "--":
            options_done = True
        elif not options_done and w.startswith("--"):
            if w in ("--ignore-install", "--ignore-remove"):
                ignore = True
            elif w == "--all":
                every = True
            elif w not in _MODPROBE_LONG:
                return False
        elif not options_done and w.startswith("-") and len(w) > 1:
            flags = set(w[1:])
            if not flags <= _MODPROBE_FLAGS:
                return False
            ignore |= "i" in flags
            every |= "a" in flags
        else:
            names.append(w)
    if not names:
        return False
    candidates = names if every else names[:1]
    return ignore and any(_arg(n, module) == module for n in candidates)


def loads(command: str, module: str) -> bool:
    """Whether an install command surely loads module: one of its simple commands that always runs
    (the first, or one after ';', '|' or a newline; not after '&&' or '||', not in the background)
    is ``modprobe --ignore-install module`` or ``insmod .../module.ko``.
    """
    commands = _simple_commands(command)
    if commands is None:
        return False
    for before, words, after in commands:
        if before in ("&&", "||", "&", ";;") or after == "&":
            continue
        while words and (words[0] in ("{", "}", "!", "exec", "command") or _ASSIGNMENT.match(words[0])):
            words = words[1:]
        if words and words[0].rsplit("/", 1)[-1] == "kmod":
            words = words[1:]
        if not words:
            continue
        program, args = words[0].rsplit("/", 1)[-1], words[1:]
        if program == "modprobe" and _modprobe_loads(args, module):
            return True
        if program == "insmod":
            paths = [a for a in args if not a.startswith("-")]
            if paths and _KO.search(paths[0]) and norm(paths[0]) == module:
                return True
    return False


# --- command lines --------------------------------------------------------------------------

# key -> (how the values compare, why): "norm" dashes as underscores, "exact" as written
CMDLINE_KEYS = {
    "rd.driver.blacklist": ("norm", "dracut rd.driver.blacklist: written as a blacklist line in the initrd"),
    "rdblacklist": ("norm", "dracut rdblacklist (old name of rd.driver.blacklist)"),
    "modprobe.blacklist": ("norm", "modprobe.blacklist: modprobe treats it as blacklisted"),
    "module_blacklist": ("exact", "module_blacklist: the kernel refuses to load it"),
    "blacklist": ("norm", "initramfs-tools blacklist=: written as a blacklist line in the initrd"),
}


def split_cmdline(text: str) -> list[str]:
    """A kernel command line's words as the kernel splits them (lib/cmdline.c next_arg: blanks
    outside double quotes), the quotes removed.
    """
    words, word, quoted, started = [], [], False, False
    for c in text:
        if c == '"':
            quoted, started = not quoted, True
        elif c.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(c)
            started = True
    if started:
        words.append("".join(word))
    return words


def cmdline_reasons(words: Iterable[str], wanted: Iterable[str]) -> list[tuple[str, str, str]]:
    """(driver, word, why) for each command-line word that blacklists a wanted driver."""
    drivers = [norm(w) for w in wanted]
    out = []
    for word in words:
        plain = word.replace('"', "")
        key, eq, value = plain.partition("=")
        if not eq:
            continue
        if key.replace("-", "_") == "module_blacklist":
            key = "module_blacklist"
        if key not in CMDLINE_KEYS:
            continue
        how, why = CMDLINE_KEYS[key]
        names = [v if how == "exact" else v.replace("-", "_") for v in value.split(",")]
        out += [(d, word, why) for d in drivers if d in names]
    return out


def cmdline_stops(words: list[str], wanted: list[str]) -> list[tuple[str, str]]:
    """(driver, word) for each command-line word (kernel line or an initrd's command-line files)
    that blacklists a wanted driver: modprobe.blacklist=, module_blacklist=, rd.driver.blacklist=
    (every occurrence), rdblacklist=, initramfs-tools' blacklist=.
    """
    return [(d, w) for d, w, _ in cmdline_reasons(words, wanted)]
