"""Two builders of the lab's base trees at once (two checkouts, two workers) wait for each
other instead of deleting each other's temporary tree (issue #13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
BUILDER = """
import sys, time
from pathlib import Path
from tests.lab import bases

def slow(tree: Path) -> None:
    tree.mkdir()
    (tree / "marker").write_text("built\\n")
    with open(Path(sys.argv[1]) / "builds.log", "a") as log:
        log.write("build\\n")
    time.sleep(1.5)  # a debootstrap, in short

bases.RECIPES["fake-base"] = (None, slow)
print(bases.ensure("fake-base"))
"""


def test_concurrent_base_builders_wait_and_build_once(tmp_path):
    env = {**os.environ, "KVM_LAB_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert (tmp_path / "builds.log").read_text() == "build\n"  # built once, the others waited
    assert (tmp_path / "cache" / "fake-base" / "marker").read_text() == "built\n"
    assert not (tmp_path / "cache" / "fake-base.tmp").exists()


BUILD_ALL = """
import sys, time
from pathlib import Path
from tests.lab import bases

def step(name, seconds):
    def build(tree: Path) -> None:
        with open(Path(sys.argv[1]) / "order.log", "a") as log:
            log.write(f"start {name}\\n")
        time.sleep(seconds)  # a debootstrap, in short
        tree.mkdir(exist_ok=True)  # a derived base gets a copy of its parent
        (tree / name).write_text("built\\n")
        with open(Path(sys.argv[1]) / "order.log", "a") as log:
            log.write(f"end {name}\\n")
    return build

bases.RECIPES.clear()
bases.RECIPES.update({"a": (None, step("a", 1)), "b": (None, step("b", 1)), "a-child": ("a", step("a-child", 0.1))})
bases.build_all()
"""


def test_build_all_builds_independent_bases_at_once_and_a_child_after_its_parent(tmp_path):
    env = {**os.environ, "KVM_LAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", BUILD_ALL, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    order = (tmp_path / "order.log").read_text().splitlines()
    assert sorted(order[:2]) == ["start a", "start b"], order  # both debootstraps at once
    assert order.index("start a-child") > order.index("end a"), order  # the child from its finished parent
    assert (tmp_path / "cache" / "a-child" / "a").exists() and (tmp_path / "cache" / "a-child" / "a-child").exists()
    assert not list((tmp_path / "cache").glob("*.tmp"))
