"""
kvm-drivers check: whether every host's initrds hold the virtio drivers, read-only, with an exit code
that cannot say "compliant" for a host that was not fully checked.

    kvm-drivers check INVENTORY [--limit X]... [--report PATH]... [--previous PATH.json] [--quiet]
                      [--data k=v]... [--timeout S] [--parallel N]

Built on pyinfra's API: the inventory is loaded as pyinfra's own CLI loads it, then every host in scope
is connected to, its state gathered (one remote command) and planned with its own inventory data
(kvm_drivers, kvm_drivers_extra, kvm_kernels), in parallel, each within a time limit. Every host in
scope gets a row whatever happens to it: unreachable, timed out, fact failed or raised all give status
"error". Nothing ever prompts: a sudo or key password prompt, or a host key question, fails that host.

Exit codes (the largest applicable one): 0 every host in scope checked and compliant, 2 some host
drifted, 3 some host unsupported, 4 some host could not be checked (error), 5 a report could not be
written, 6 no host in scope (empty inventory, or --limit matched nothing), 1 bad arguments, an
inventory that cannot be loaded, or an internal failure; 130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click
import gevent

from kvm_drivers import report
from kvm_drivers.cli import image, output

LOG = logging.getLogger("kvm_drivers.cli")
DEFAULT_TIMEOUT = 300.0


class PromptRefused(Exception):
    """Raised instead of any interactive prompt (sudo password, key password, unknown host key)."""


def refuse_prompt(prompt: str = "", *args: Any, **kwargs: Any) -> NoReturn:
    """Stands in for getpass/input inside pyinfra's connectors: a nightly check must never wait on a person."""
    asked = prompt.split("] ", 1)[-1].strip()  # pyinfra prefixes the host name
    raise PromptRefused(f"would have prompted {asked!r}; kvm-drivers check never prompts "
                        "(use passwordless sudo, an unencrypted or agent key, or a known_hosts entry)")  # fmt: skip


def forbid_prompts() -> None:
    """Replace the prompts pyinfra's connectors may show by an error for that host."""
    from pyinfra.connectors import ssh_util
    from pyinfra.connectors import util as connector_util
    from pyinfra.connectors.sshuserclient import client as ssh_client

    connector_util.getpass = refuse_prompt  # sudo password
    ssh_util.getpass = refuse_prompt  # encrypted private key
    ssh_client.input = refuse_prompt  # ssh_strict_host_key_checking=ask


class _HostLog(logging.Handler):
    """Keeps what pyinfra logs while working on each host, to explain that host's failure in its row."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from pyinfra.context import ctx_host

        try:
            if ctx_host.isset():
                name = ctx_host.get().name
                text = click.unstyle(record.getMessage())
                text = text.split(f"[{name}] ", 1)[-1].strip()
                if not text.startswith("Error (ignored)"):  # pyinfra's "could not load fact": we say so
                    self.lines.setdefault(name, []).append(text)
        except Exception:  # noqa: BLE001 - a log line must never break the check
            pass


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on exit code 1 (argparse's own 2 means "drifted" here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(report.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    """The command line parser."""
    parser = ArgumentParser(prog="kvm-drivers", description="KVM virtio drivers in every initrd: fleet check.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    check = sub.add_parser(
        "check", help="check every host (read-only) and report drift",
        description=__doc__.split("\n\n", 2)[2].split("\n\nExit codes", 1)[0].replace("\n", " "),
        epilog="exit codes: 0 all checked and compliant, 2 drifted, 3 unsupported, 4 a host could not be "
               "checked, 5 a report could not be written, 6 no host in scope, 1 usage/inventory error",
    )  # fmt: skip
    check.add_argument("inventory", help="pyinfra inventory: a Python file, or a comma-separated host list")
    check.add_argument("--limit", action="append", default=[], metavar="X",
                       help="only hosts in group X or whose name matches the glob X (repeatable)")
    output.add_common(check, DEFAULT_TIMEOUT, "host")
    check.add_argument("--parallel", type=int, default=0, metavar="N",
                       help="hosts checked at once (default: pyinfra's choice)")
    check.add_argument("--verbose", "-v", action="store_true", help="show pyinfra's log on stderr")
    image.add_parser(sub)
    return parser


def load_inventory(source: str, data: dict[str, Any]):
    """The pyinfra Inventory of source, loaded as pyinfra's CLI does (ValueError when it does not exist)."""
    from pyinfra_cli.inventory import make_inventory

    if source.endswith(".py") and not Path(source).is_file():
        raise ValueError(f"inventory file {source} not found")
    cwd = os.getcwd()
    if cwd not in sys.path:  # inventory files import from the working directory, as with pyinfra
        sys.path.append(cwd)
    return make_inventory(source, override_data=data, cwd=cwd)


def hosts_in_scope(inventory, limits: list[str]) -> list:
    """The inventory's hosts, or those in a --limit group or matching a --limit glob, in inventory order."""
    from pyinfra.api.exceptions import NoGroupError

    if not limits:
        return list(inventory)
    wanted = set()
    for pattern in limits:
        try:
            wanted.update(inventory.get_group(pattern))
        except NoGroupError:
            wanted.update(h for h in inventory if fnmatch.fnmatchcase(h.name, pattern))
    return [h for h in inventory if h in wanted]


def new_state(timeout: float, parallel: int = 0):
    """A pyinfra State and Config, current in pyinfra's context (inventory files are loaded within it)."""
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_config, ctx_state

    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    ctx_state.set(state)
    config = Config()
    config.CONNECT_TIMEOUT = max(1, min(int(config.CONNECT_TIMEOUT), int(timeout)))
    if parallel:
        config.PARALLEL = parallel
    ctx_config.set(config)
    return state, config


def start_state(state, config, inventory, hosts: list) -> None:
    """Initialise the State over the hosts in scope."""
    from pyinfra.context import ctx_inventory

    ctx_inventory.set(inventory)
    state.init(inventory, config, initial_limit=hosts)


def check_host(state, host, timeout: float, log: _HostLog | None = None) -> dict[str, Any]:
    """One host's report row: connect, gather its state and plan it with its own data, all within timeout."""
    from pyinfra.api.exceptions import ConnectError
    from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

    from kvm_drivers.facts.kvm_drivers import gather_state
    from kvm_drivers.operations.plan import plan
    from kvm_drivers.operations.settings import Settings

    problem = ""
    gathered = None
    settings = Settings.from_data(host.data)  # the deploy's own reading of the inventory data, checked once
    if settings.errors:  # e.g. kvm_gather_timeout given as a string: nothing is gathered
        return report.host_row(host.name, None, "; ".join(settings.errors))
    if host.data.get("kvm_gather_timeout") is not None:
        timeout = settings.gather_timeout  # the host's own limit, if its data sets one
    with ctx_state.use(state), ctx_config.use(state.config), ctx_inventory.use(state.inventory), ctx_host.use(host):
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            if not host.connected:
                host.connect(raise_exceptions=True, show_errors=False)
                state.activate_host(host)
            # failures are this host's row, not a failed run
            gathered = gather_state(host, settings.lookup(), _ignore_errors=True)
            if gathered is None:
                said = [line for line in (log.lines.get(host.name, []) if log else []) if line]
                problem = "the state gathering command failed" + (f": {' / '.join(said[-5:])}" if said else "")
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            problem = f"timed out after {timeout:g} s (the per-host limit: kvm_gather_timeout, else --timeout)"
            if reading := getattr(exc, "kvm_reading", ""):  # set by facts.kvm_drivers.read_answer
                problem += f" while reading its answer ({reading}): answer refused"
        except ConnectError as exc:
            problem = f"unreachable: {exc}"
        except Exception as exc:  # noqa: BLE001 - whatever happens to one host is that host's error
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            timer.close()
    try:
        the_plan = plan(gathered, settings) if gathered else None
        return report.host_row(host.name, the_plan, problem)
    except Exception as exc:  # noqa: BLE001 - an answer the report cannot read is an error, not a pass
        return report.host_row(host.name, None, f"could not read the fact's answer: {type(exc).__name__}: {exc}")


def check_hosts(state, hosts: list, timeout: float, log: _HostLog | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every host's row, in the order of hosts, checked in parallel in pyinfra's greenlet pool."""
    jobs = [state.pool.spawn(check_host, state, h, timeout, log) for h in hosts]
    done = 0
    for _ in gevent.iwait(jobs):
        done += 1
        if progress:
            progress(done, len(hosts))
    rows = []
    for h, job in zip(hosts, jobs):
        if job.successful():
            rows.append(job.value)
        else:  # cannot happen unless check_host itself is broken: still a row, never a pass
            rows.append(report.host_row(h.name, None, f"internal error: {job.exception!r}"))
    return rows


def disconnect(state) -> None:
    """Close every connection, giving up after 10 s (the check's result is already known)."""
    from pyinfra.api.connect import disconnect_all

    try:
        with gevent.Timeout(10):
            disconnect_all(state)
    except (gevent.Timeout, Exception):  # noqa: BLE001 - nothing left to learn from a host
        pass


def progress_printer(stream: TextIO) -> Callable[[int, int], None] | None:
    """A progress line on stream (hosts checked out of N), only when it is a terminal."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\r\x1b[K" if done == total else ""
        stream.write(f"\r\x1b[Kkvm-drivers: {done}/{total} hosts checked{end}")
        stream.flush()

    return show


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """The check command; returns the exit code."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr  # the streams of now, not of import time
    started = time.time()
    usage, previous = output.read_arguments(args, stderr)
    if usage:
        return usage

    pyinfra_log = logging.getLogger("pyinfra")
    host_log = _HostLog()
    pyinfra_log.addHandler(host_log)
    pyinfra_log.setLevel(logging.INFO)
    pyinfra_log.propagate = False
    if args.verbose:
        pyinfra_log.addHandler(logging.StreamHandler(stderr))
    forbid_prompts()

    state, config = new_state(args.timeout, args.parallel)
    try:
        inventory = load_inventory(args.inventory, output.parse_data(args.data))
    except Exception as exc:  # noqa: BLE001 - a broken inventory is a usage error with a message
        print(f"kvm-drivers: cannot load inventory {args.inventory}: {type(exc).__name__}: {exc}", file=stderr)
        return report.EXIT_USAGE
    hosts = hosts_in_scope(inventory, args.limit)
    rows: list[dict[str, Any]] = []
    if hosts:
        start_state(state, config, inventory, hosts)
        try:
            rows = check_hosts(state, hosts, args.timeout, host_log, None if args.quiet else progress_printer(stderr))
        finally:
            disconnect(state)
        code = report.exit_code(rows)
    else:
        what = f"--limit {' '.join(args.limit)} matched no host" if args.limit else "the inventory has no host"
        print(f"kvm-drivers: {what} in {args.inventory}: nothing was checked", file=stderr)
        code = report.EXIT_NO_HOSTS

    return output.finish(rows, args, started, code, previous, stdout, stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the kvm-drivers console script."""
    args = build_parser().parse_args(argv)
    try:
        return image.run(args) if args.command == "image" else run(args)
    except KeyboardInterrupt:
        print("kvm-drivers: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure must still be a non-zero exit
        LOG.exception("internal error")
        print(f"kvm-drivers: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return report.EXIT_USAGE
