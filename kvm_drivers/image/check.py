"""``kvm-drivers image check``'s control side: each image's report row, from the same parse, plan and
row as a live host's. The image is described (kvm_drivers.image.disk), then read by the session
(kvm_drivers.image.session) in namespaces of its own, within a time limit.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from kvm_drivers import report
from kvm_drivers.facts.kvm_drivers import read_answer
from kvm_drivers.facts.state import HostState, failed_state
from kvm_drivers.image.disk import DiskError, open_disk
from kvm_drivers.image.session import namespace_command, session_env
from kvm_drivers.operations.plan import plan
from kvm_drivers.operations.settings import Settings

DEFAULT_TIMEOUT = 600.0


def image_state(path: str, drivers: list[str], timeout: float, backing: str = "") -> HostState:
    """The state of the system in the image at path; an error state (with the cause) when it cannot be read.
    backing: the backing file path may have (an overlay ``image fix`` wrote over it).
    """
    try:
        disk = open_disk(path, backing=backing)
    except DiskError as exc:
        return failed_state(f"image {path}: {exc}")
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return failed_state(f"image {path}: qemu-img: {exc}")
    try:
        proc = subprocess.run(namespace_command("check", disk.path, disk.format, *(
            ["--backing", disk.backing, disk.backing_format] if disk.backing else []), *drivers), capture_output=True,
                              timeout=timeout, env=session_env())  # fmt: skip
    except subprocess.TimeoutExpired:
        return failed_state(f"image {path}: not read within {timeout:g} s (--timeout)")
    said = proc.stderr.decode("utf-8", "replace").splitlines()
    notes = [line.removeprefix("note: ") for line in said if line.startswith("note: ")]
    if proc.returncode != 0:
        why = [line for line in said if not line.startswith("note: ")][-1:] or [f"exit {proc.returncode}"]
        return failed_state(f"image {path}: {why[0][:400]}")
    state = read_answer(proc.stdout.decode("utf-8", "replace").splitlines())
    return replace(state, warnings=[*state.warnings, *(f"image: {n}" for n in notes)])


def image_row(path: str, data: dict[str, Any], timeout: float, backing: str = "") -> dict[str, Any]:
    """One image's report row, planned with data (the settings an inventory would give a host)."""
    settings = Settings.from_data(data)
    if settings.errors:
        return report.host_row(path, None, "; ".join(settings.errors))
    state = image_state(path, settings.lookup(), timeout, backing)
    try:
        return report.host_row(path, plan(state, settings))
    except Exception as exc:  # noqa: BLE001 - an answer the report cannot read is an error, not a pass
        return report.host_row(path, None, f"could not read the gather's answer: {type(exc).__name__}: {exc}")


def check_images(paths: list[str], data: dict[str, Any], timeout: float = DEFAULT_TIMEOUT,
                 parallel: int = 2, backing: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Every image's row, in the order given (backing: the one backing file they may have)."""
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(lambda p: image_row(p, data, timeout, backing), paths))
