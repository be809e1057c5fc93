"""The installed package, as a user of another pyinfra project gets it: built as a wheel, installed
in a fresh venv (no editable install, no repository on sys.path), imported from a project that has
its own ``deploys/`` and ``facts/`` packages, as many pyinfra projects do.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.lab  # builds a wheel and a venv from PyPI: slow, run by make test


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # build from a copy: the build leaves build/ and egg-info behind, never in the work tree
    run(["cp", "-a", "--", *[str(ROOT / n) for n in ("pyproject.toml", "README.md", "kvm_drivers", "facts",
                                                     "operations", "hostside")], str(build)], ROOT)  # fmt: skip
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), "."], build)
    (whl,) = out.glob("kvm_drivers-*.whl")
    return whl


def test_the_wheel_installs_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"kvm_drivers"}
    for file in ("kvm_drivers/facts/state.py", "kvm_drivers/operations/plan.py", "kvm_drivers/hostside/gather.sh",
                 "kvm_drivers/hostside/initrd_ls.py", "kvm_drivers/report/report.js", "kvm_drivers/deploy.py"):
        assert file in names, file


def test_a_project_with_its_own_deploys_and_facts_imports_it_from_the_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", str(wheel)], tmp_path)
    project = tmp_path / "project"
    for pkg in ("deploys", "facts", "operations"):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text(f"WHOSE = 'the project {pkg}'\n")
    (project / "deploys" / "site.py").write_text(
        textwrap.dedent("""
        import deploys, facts
        from kvm_drivers.deploy import kvm_drivers
        from kvm_drivers.facts.kvm_drivers import KvmDrivers
        from kvm_drivers.hostside import GATHER
        from kvm_drivers import deploy as module
        assert deploys.WHOSE == "the project deploys" and facts.WHOSE == "the project facts"
        assert "/project/" not in module.__file__ and "site-packages" in module.__file__
        assert callable(kvm_drivers) and KvmDrivers and "gather" in GATHER
        print("imported", module.__file__)
        """)
    )
    out = run([str(py), "-c", "import deploys.site"], project).stdout
    assert "imported" in out
    # the console script from the wheel: its help, and the main job's refusal of a missing inventory
    cli = venv / "bin" / "kvm-drivers"
    assert "check" in run([str(cli), "--help"], project).stdout
    missing = subprocess.run([str(cli), "check", "no-such-inventory.py"], cwd=project, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and "no-such-inventory.py" in missing.stderr
