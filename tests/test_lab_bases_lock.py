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
