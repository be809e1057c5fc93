"""
Which menu does a grub.cfg build, and what does it set "default" to? The statements of a GRUB 2
script that decide them (blocks, if/elif/else against grubenv, variables, submenus, 'source'),
run as GRUB runs them; everything else is passed over. And the variables of a grubenv block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvm_drivers.facts import boot_entries
from kvm_drivers.facts.boot_entries import MAX_BOOT_ENTRIES, BootConfigTooLarge, BootEntry, _Item
from kvm_drivers.facts.grub_words import (
    EXPANSION_BUDGET,
    GRUB_FEATURES,
    ExpansionBudget,
    _grub_tokens,
    _Unknown,
    _Vars,
    _Word,
    expand_word,
)
from kvm_drivers.hostside import REPORTED_BOOT_FILES  # defined once, sent to gather.sh

# Files whose presence gather.sh always reports (dumped when they exist): a GRUB test '-f' on one
# of them has a known answer, and sourcing one that is not there does nothing.
# Commands that read another configuration file and put its menu in place of this one
# (grub-core/normal/main.c configfile, commands/legacycfg.c, commands/syslinuxcfg.c): not followed.
GRUB_CONFIGFILE = frozenset(
    "configfile legacy_configfile legacy_source extract_entries_configfile extract_entries_source "
    "extract_legacy_entries_configfile extract_legacy_entries_source syslinux_configfile syslinux_source "
    "extract_syslinux_entries_configfile extract_syslinux_entries_source".split()
)
_UNKNOWN_WORD = object()  # a test operand whose value only GRUB knows


@dataclass
class _Block:
    kind: str  # menuentry, submenu, function, if, loop
    item: _Item | None = None
    name: str = ""  # a function's name
    steers: str = ""  # a function's body adds menu entries or changes the default: what it does
    state: bool | None = True  # the current branch runs (True), does not (False), or unknown
    taken: bool | None = False  # an earlier branch of this if ran
    saved: _Vars | None = None  # the variables outside a submenu's own context
    # What the blocks below this one say (set when it is pushed; they cannot change while it is
    # on the stack: only the innermost block's branch moves): runs(), entry_block(), menu() and
    # runs_in_entry() as they were just before it. Each statement then costs O(1), however deep.
    outer_runs: bool | None = True
    outer_entry: _Block | None = None
    outer_menu: list[_Item] | None = None
    outer_in_entry: bool = True


_HEADS = ("then", "else", "do")
MAX_SUBMENU_DEPTH = 16  # submenus inside submenus: real menus nest one or two deep


class _GrubScript:
    """Runs the statements of a grub.cfg that decide the menu and the default, nothing else."""

    def __init__(
        self, env: dict[str, str], export_all: bool = False, users_optional: bool = False,
        budget: ExpansionBudget | None = None, files: dict[str, str | None] | None = None, config_file: str = "",
    ):  # fmt: skip
        self.users_optional = users_optional  # Red Hat's GRUB: '--users' may come without a value
        # load_env: grubenv's variables (00_header loads them first) over GRUB's own; both are
        # read through, never copied (one grubenv, many grub.cfg files on an EFI partition)
        below = _Vars(env, _Vars(dict.fromkeys(GRUB_FEATURES, "y")))  # type: ignore[arg-type]
        self.export_count = 1
        exports = dict.fromkeys(GRUB_FEATURES, 0)  # normal/main.c exports the feature variables
        self.vars = _Vars({}, below, exports=exports)
        if config_file:  # normal/main.c sets it to the directory of the file it reads
            self.vars["config_directory"] = config_file.rsplit("/", 1)[0]
        self.files = files or {}  # the files the host sent: 'source' reads them, '-f' tests them
        self.reading = [config_file or "grub.cfg"]  # the file being run, and the ones sourcing it
        self.functions: dict[str, str] = {}  # name -> what it does to the menu ('' nothing)
        self.sourced: set[str] = set()  # the files 'source' ran
        self.doubts: list[str] = []  # what keeps the menu or the default from being known
        self.export_all = export_all
        self.top: list[_Item] = []
        self.stack: list[_Block] = []
        self.submenus = 0  # submenu blocks open
        self.items = 0  # items added to a menu
        self.warnings: list[str] = []
        self.default_doubt = ""
        self.budget = budget or ExpansionBudget()  # run() adds the file's share

    # values
    def expand(self, word: _Word, keep_empty: bool = False) -> str | None:
        return expand_word(word, self.vars, self.budget, keep_empty)

    def args(self, words: list[_Word]) -> list[str]:
        return [v for v in (self.expand(w) for w in words) if v is not None]

    # context: each answer is the innermost block's, combined with what the blocks below it said
    # when it was pushed (see _Block.outer_runs)
    def runs(self) -> bool | None:
        """Whether a statement here runs when grub.cfg is read (None: cannot tell)."""
        if not self.stack:
            return True
        b = self.stack[-1]
        if b.outer_runs is False or b.kind in ("menuentry", "submenu", "function") or b.state is False:
            return False
        return None if b.outer_runs is None or b.state is None or b.kind == "loop" else True

    def entry_block(self) -> _Block | None:
        if not self.stack:
            return None
        b = self.stack[-1]
        return b if b.kind in ("menuentry", "submenu", "function") else b.outer_entry

    def menu(self) -> list[_Item] | None:
        """The item list that a menuentry here would join (None: not built now)."""
        if not self.stack:
            return self.top
        b = self.stack[-1]
        if b.kind == "submenu":
            return b.item.children if b.item is not None and b.state is not False else None
        if b.kind in ("menuentry", "function") or b.state is False:
            return None
        return b.outer_menu

    def push(self, block: _Block) -> None:
        block.outer_runs, block.outer_entry = self.runs(), self.entry_block()
        block.outer_menu, block.outer_in_entry = self.menu(), self.runs_in_entry()
        self.stack.append(block)

    # statements
    def test(self, words: list[_Word]) -> bool | None:
        """GRUB's test command (grub-core/commands/test.c) on what a file can know: True, False,
        or None when it depends on what only GRUB knows (an operand that is unknown makes its own
        comparison unknown, not the whole test: 'false -a unknown' is false).
        """
        args: list = []
        for w in words:
            try:
                v = self.expand(w)
            except _Unknown:
                v = _UNKNOWN_WORD
            if v is not None:
                args.append(v)
        if args and args[0] == "[" and args[-1] == "]":
            args = args[1:-1]
        elif args and args[0] == "test":
            args = args[1:]
        elif args in (["true"], ["false"]):
            return args == ["true"]
        else:
            return None  # a command's exit status (search, keystatus, ...)

        def primary(a: list) -> bool | None:
            nots = 0
            while nots < len(a) and a[nots] == "!":  # '! ! x': each '!' negates what follows
                nots += 1
            if nots:
                r = primary(a[nots:])
                return None if r is None else r != (nots % 2 == 1)
            if _UNKNOWN_WORD in a:
                return None
            if len(a) == 2 and a[0] in ("-f", "-e", "-s"):
                return self.exists(a[1])
            if len(a) == 1:
                return a[0] != ""
            if len(a) == 2 and a[0] in ("-n", "-z"):
                return (a[1] != "") == (a[0] == "-n")
            if len(a) == 3 and a[1] in ("=", "==", "!="):
                return (a[0] == a[2]) == (a[1] != "!=")
            if len(a) == 3 and a[1] in ("-eq", "-ne", "-lt", "-gt", "-le", "-ge"):
                try:
                    x, y = int(a[0]), int(a[2])
                except ValueError:
                    return None
                return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-gt": x > y, "-le": x <= y, "-ge": x >= y}[a[1]]
            return None  # file tests and the rest

        def split(a: list[str], op: str) -> list[list[str]]:
            out: list[list[str]] = [[]]
            for x in a:
                out.append([]) if x == op else out[-1].append(x)
            return out

        any_true = False
        unknown = False
        for group in split(args, "-o"):
            values = [primary(p) for p in split(group, "-a")]
            value = False if False in values else None if None in values else True
            any_true |= value is True
            unknown |= value is None
        return True if any_true else None if unknown else False

    def exists(self, grub_path: str) -> bool | None:
        """Whether a file GRUB tests for is there (None: a file the host does not report on)."""
        path = boot_entries.system_path(boot_entries.strip_device(grub_path))
        if path in self.files:
            return True
        return False if path in REPORTED_BOOT_FILES else None

    def doubt(self, text: str) -> None:
        if len(self.doubts) < 20 and text not in self.doubts:
            self.doubts.append(f"{self.reading[-1]}: {text}")

    def source(self, words: list[_Word], runs: bool | None) -> None:
        """'source FILE' ('. FILE'): FILE runs here, in this context; its entries join this menu."""
        try:
            args = self.args(words)
        except _Unknown as exc:
            self.doubt(f"sources a file named through ${exc.args[0]}, which only GRUB knows")
            return
        if not args:
            return
        path = boot_entries.system_path(boot_entries.strip_device(args[0]))
        text = self.files.get(path)
        if path in self.files and text is None:
            self.doubt(f"sources {path}, which could not be read")
        elif text is None:
            if path not in REPORTED_BOOT_FILES:  # those are reported when there: this one is not
                self.doubt(f"sources {path}, which kvm-drivers does not read")
        elif runs is None:
            self.doubt(f"sources {path} under a condition that cannot be evaluated")
        elif path in self.reading or path in self.sourced or len(self.reading) > 8:
            self.doubt(f"sources {path} again (a loop, twice, or nested too deeply): not followed")
        else:  # each file at most once: what is run stays linear in what the host sent
            self.sourced.add(path)
            self.reading.append(path)
            self.run(text)
            self.reading.pop()

    def assign(self, name: str, word: _Word) -> None:
        runs = self.runs()
        if runs is False:
            return
        value: str | None
        try:
            value = self.expand(word, keep_empty=True)
        except _Unknown as exc:
            value = None
            if name == "default":
                self.default_doubt = f"default set from ${exc.args[0]}, which only GRUB knows"
        if runs is None:
            if name == "default":
                self.default_doubt = "a 'set default' runs under a condition that cannot be evaluated"
            value = None
        self.vars[name] = value

    def statement(self, words: list[_Word], opens: bool) -> None:
        if not words and not opens:
            return
        k = 0
        while k < len(words) and len(words[k]) == 1 and words[k][0][1] == "" and words[k][0][0] in _HEADS:
            if words[k][0][0] == "else" and self.stack and self.stack[-1].kind == "if":
                b = self.stack[-1]
                b.state = False if b.taken is True else None if b.taken is None else True
            k += 1
        words = words[k:] if k else words
        if not words:
            if opens:
                self.push(_Block("function"))
            return
        head = "".join(t for t, _ in words[0])
        inner = self.entry_block()
        if head == "if" or head == "elif":
            if head == "if":
                self.push(_Block("if"))
            b = self.stack[-1] if self.stack and self.stack[-1].kind == "if" else _Block("if")
            cond = self.test(words[1:]) if not (inner and inner.kind != "submenu") else None
            if b.taken is True:
                b.state = False
            else:
                b.state = cond if b.taken is False else (None if cond is not False else False)
                b.taken = True if cond is True and b.taken is False else (b.taken if cond is False else None)
            return
        if head == "fi" or head == "done":
            if self.stack and self.stack[-1].kind in ("if", "loop"):
                self.stack.pop()
            return
        if head in ("while", "until", "for"):
            self.push(_Block("loop", state=None))
            return
        if head in ("menuentry", "submenu") and opens:
            self.steer(f"adds menu entries ({head})")
            item = self.new_item(head, words[1:])
            where = self.menu()
            if where is not None and item is not None:
                self.add(where, item)
            block = _Block(head, item, state=True)
            self.push(block)
            if head == "submenu":
                # Its body runs in a new context (normal/context.c grub_env_context_open()):
                # upstream and RHEL 8 copy only exported variables, RHEL 9 and Fedora all of them.
                self.submenus += 1
                if self.submenus > MAX_SUBMENU_DEPTH:
                    raise BootConfigTooLarge(f"grub.cfg: submenus nested more than {MAX_SUBMENU_DEPTH} deep")
                block.saved = self.vars
                self.vars = _Vars({}, self.vars, None if self.export_all else self.export_count, self.vars.exports)
            return
        if opens:  # function NAME {, or anything else that opens a block
            name = "".join(t for t, _ in words[1]) if head == "function" and len(words) > 1 else ""
            self.push(_Block("function", name=name))
            return
        if inner is not None:
            if inner.kind == "menuentry" and inner.item is not None and self.runs_in_entry():
                self.entry_line(inner.item.entry, head, words[1:])
            elif inner.kind != "menuentry" and (head in ("source", ".") or head in GRUB_CONFIGFILE):
                self.steer(f"reads another file ({head})")
            elif inner.kind != "menuentry" and head in self.functions and self.functions[head]:
                self.steer(self.functions[head])
            elif inner.kind != "menuentry" and re.match(r"^(set )?(default|saved_entry|next_entry)=", " ".join(
                    "".join(t for t, _ in w) for w in words[:2])):  # fmt: skip
                self.steer("changes the default entry")
            return
        runs = self.runs()
        if head in ("source", ".") and runs is not False:
            self.source(words[1:], runs)
        elif head in GRUB_CONFIGFILE and runs is not False:
            what = " ".join("".join(t for t, _ in w) for w in words[1:2])
            self.doubt(f"runs '{head} {what}'{'' if runs else ' (under a condition)'}: its menu would replace "
                       "this one, and kvm-drivers does not follow it")  # fmt: skip
        elif head in self.functions and self.functions[head] and runs is not False:
            self.doubt(f"calls function {head}, which {self.functions[head]}: kvm-drivers does not follow it")
        if head == "export" and self.runs() is not False:
            for name in self.args(words[1:]):
                if name not in self.vars.exports:
                    self.vars.exports[name] = self.export_count
                    self.export_count += 1
        elif head == "blscfg" and self.runs() is not False:
            known, blsdir = self.vars.find("blsdir")
            if len(words) > 1 or known and blsdir not in ("", "/loader/entries", "/boot/loader/entries"):
                self.doubt("runs blscfg on entries other than /boot/loader/entries: not read")
            where = self.menu()
            if where is not None:
                self.add(where, _Item("", "", None, None, bls=True))
        elif head == "set" and len(words) > 1:
            self.assign_word(words[1])
        elif len(words) == 1:
            self.assign_word(words[0])

    def add(self, menu: list[_Item], item: _Item) -> None:
        self.items += 1
        if self.items > MAX_BOOT_ENTRIES:
            raise BootConfigTooLarge(f"grub.cfg: more than {MAX_BOOT_ENTRIES} menu entries")
        menu.append(item)

    def assign_word(self, word: _Word) -> None:
        """'name=value' as one word ('set name=value' or 'name=value'): the value follows the '='."""
        first, quote = word[0]
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", first, re.S)
        if quote == "" and m:
            self.assign(m.group(1), [(m.group(2), quote)] + word[1:])

    def runs_in_entry(self) -> bool:
        if not self.stack:
            return True
        b = self.stack[-1]
        if b.kind in ("menuentry", "submenu", "function"):
            return True
        return False if b.state is False else b.outer_in_entry

    def new_item(self, kind: str, words: list[_Word]) -> _Item | None:
        words = [[("--id", "")] if w == [("$menuentry_id_option", "")] else w for w in words]  # 00_header's
        try:
            args = self.args(words)
        except _Unknown:
            args = ["".join(t for t, _ in w) for w in words]
        # commands/menuentry.c options, parsed as lib/arg.c grub_arg_parse() does: "--opt value"
        # takes the next word only if it does not start with '-'; an option that needs a value
        # and gets none, or an unknown option, is an error and the entry is not added (e.g.
        # "--users $grub_users --id X" with grub_users unset, upstream). Red Hat's GRUB makes
        # the value of --users optional: rhboot/grub2 commit "Make the menu entry users option
        # argument to be optional" (2018-11-26, Related: rhbz#1652434) gives "users"
        # GRUB_ARG_OPTION_OPTIONAL in menuentry.c options[], which grub_arg_parse() accepts
        # without a value, and grub_cmd_menuentry() then ignores it (branches rhel-8.0.0 to
        # rhel-8-main, rhel-9*, rhel-10*, fedora-30 and later; not rhel-7.x, fedora-29 or
        # before, master). So on the Fedora/RHEL variants such an entry is added.
        title, ident, error, i = "", "", "", 0
        while i < len(args):
            a = args[i]
            if a.startswith("--") and a != "--":
                name, eq, value = a[2:].partition("=")
                if name not in ("class", "users", "hotkey", "source", "id", "unrestricted"):
                    error = f"unknown argument `{a}'"
                elif name != "unrestricted" and not eq:
                    if i + 1 < len(args) and not args[i + 1].startswith("-"):
                        value, i = args[i + 1], i + 1
                    elif not (name == "users" and self.users_optional):
                        error = f"missing mandatory option for `{name}'"
                if name == "id":
                    ident = value
            elif not title:
                title = a
            i += 1
        if error:
            self.warnings.append(f"{kind} {title!r}: {error}: GRUB does not add it")
            return None
        ident = ident or title  # menuentry.c: menu_id = id ? : menu_title
        if kind == "submenu":
            return _Item(title, ident, [])
        return _Item(title, ident, None, BootEntry(title, "", "", ident, origin=self.reading[-1]))

    def entry_line(self, entry: BootEntry | None, head: str, words: list[_Word]) -> None:
        if entry is None:
            return
        args: list[str] = []
        unknown = ""
        for w in words:
            try:
                v = self.expand(w)
            except _Unknown as exc:
                v = "".join(t for t, _ in w)
                m = re.match(r"^\(\$\{?root\}?\)(/.*)$", v)  # ($root)/vmlinuz: the device is dropped anyway
                if m:
                    v = m.group(1)
                else:
                    unknown = unknown or f"${exc.args[0]}"
            if v is not None:
                args.append(v)
        if head in ("linux", "linux16", "linuxefi", "kernel") and args and not entry.linux_path:
            entry.linux_path = boot_entries.strip_device(args[0])
            entry.kernel = boot_entries.kernel_from_path(entry.linux_path)
            entry.options = " ".join(args[1:])
            if unknown:
                entry.unknown = entry.unknown or f"its {head} line uses {unknown}, which only GRUB knows"
        elif head in ("initrd", "initrd16", "initrdefi") and args and not entry.initrd:
            entry.initrd = boot_entries.choose_initrd(args)
            entry.extra_initrds = boot_entries.extra_initrds(args, entry.initrd)
            if unknown:
                entry.unknown = entry.unknown or f"its {head} line uses {unknown}, which only GRUB knows"

    def steer(self, what: str) -> None:
        """A statement inside a function body does what: the function, when called, does it too."""
        for b in reversed(self.stack):
            if b.kind == "function":
                b.steers = b.steers or what
                return
            if b.kind in ("menuentry", "submenu"):
                return

    def close(self) -> None:
        while self.stack:
            b = self.stack.pop()
            if b.saved is not None:
                self.vars = b.saved
                self.submenus -= 1
            if b.kind == "function" and b.name:
                self.functions[b.name] = b.steers
            if b.kind in ("menuentry", "submenu", "function"):
                return

    def run(self, text: str) -> None:
        self.budget.left += EXPANSION_BUDGET * len(text)
        words: list[_Word] = []
        for tok in _grub_tokens(text):
            if tok == "\n":
                if words:
                    self.statement(words, False)
                    words = []
            elif tok == "{":
                self.statement(words, True)
                words = []
            elif tok == "}":
                self.statement(words, False)
                words = []
                self.close()
            else:
                words.append(tok)
        self.statement(words, False)


def parse_grubenv(text: str | None) -> dict[str, str]:
    """Variables of a grubenv block."""
    env = {}
    for line in (text or "").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env
