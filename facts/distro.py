"""
Which distribution is a host, and which procedure family does it follow? From its release files.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import distro

from kvm_drivers.hostside import RELEASE_FILES  # defined once, sent to gather.sh

RHEL_IDS = {
    "centos",
    "rhel",
    "redhat",
    "euleros",
    "openeuler",
    "rocky",
    "almalinux",
    "ol",
    "oracle",
    "fedora",
    "anolis",
    "hce",
    "kylin",
    "circle",
    "scientific",
    "cloudlinux",
    "amzn",
}
DEBIAN_IDS = {"debian", "ubuntu", "linuxmint", "raspbian", "devuan", "uos", "deepin"}
SUSE_IDS = {
    "sles",
    "sled",
    "sles_sap",
    "suse",
    "opensuse",
    "opensuse-leap",
    "opensuse-tumbleweed",
    "opensuse-slowroll",
    "sle-micro",
    "sl-micro",
    "suse-microos",
    "opensuse-microos",
    "alp",
    "alp-dolomite",
    "alp-micro",
}
# SUSE products whose version numbers the procedure's thresholds speak of (SLES 11 / 12 SP1,
# openSUSE 13). The others (SUSE Linux Micro 5.x/6.x, SLE Micro, ALP, MicroOS, Tumbleweed)
# number their releases their own way and all build their initrds with dracut.
SLES_NUMBERED = {"sles", "sled", "sles_sap", "sle_hpc", "suse"}
OPENSUSE_NUMBERED = {"opensuse", "opensuse-leap"}


@dataclass
class Distro:
    """The distribution of a host and the procedure family it belongs to."""

    id: str
    name: str
    version: str
    family: str | None  # rhel, debian, suse-legacy, suse-12sp1, suse; None when unsupported
    reason: str = ""  # why it is unsupported


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# The release files distro may read, each copied to a fixed place of a private directory.
# The destination is ours, never a path the host sent (host output is untrusted input).


def parse_distro(files: dict[str, str | None]) -> Distro:
    """Identify the distribution from its release files (os-release or the legacy ones)."""
    with tempfile.TemporaryDirectory(prefix="kvm-distro-") as tmp:
        root = Path(tmp)
        (root / "etc").mkdir()
        (root / "usr/lib").mkdir(parents=True)
        for path in RELEASE_FILES:  # our constants: only these names are ever written
            text = files.get(path)
            if text is not None:
                (root / path.lstrip("/")).write_text(text, errors="replace")
        try:
            info = distro.LinuxDistribution(root_dir=str(root), include_lsb=False, include_uname=False)
            did, name, version, like = info.id(), info.name(), info.version(best=True), info.like()
        except Exception as exc:  # noqa: BLE001 - distro chokes on some garbage; report it
            return Distro("unknown", "unknown", "", None, f"release files could not be parsed: {exc}")
    did = did.lower()
    if not did:  # no os-release nor a release file distro reads: the older files, parsed here
        did, name, version = _legacy_release(files)
    suse_release = files.get("/etc/SuSE-release")
    if suse_release and not files.get("/etc/os-release") and not files.get("/usr/lib/os-release"):
        fields = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", suse_release, re.M))
        version = fields.get("VERSION", version)
        if fields.get("PATCHLEVEL", "0") != "0":
            version = f"{version}.{fields['PATCHLEVEL']}"
        did = "opensuse" if "opensuse" in suse_release.lower() else "sles"
    if not did:
        return Distro(
            "unknown",
            "unknown",
            "",
            None,
            "no release file found (/etc/os-release, /etc/SuSE-release, /etc/redhat-release, ...)",
        )
    likes = set(like.lower().split())
    family: str | None = None
    reason = ""
    os_release = files.get("/etc/os-release") or files.get("/usr/lib/os-release") or ""
    platform = re.search(r"^PLATFORM_ID=[\"']?platform:(\w+)", os_release, re.M)
    if did == "uos" and platform and re.match(r"^uelc?\d+$", platform.group(1)):
        # UOS / UnionTech OS Server 20 (PLATFORM_ID platform:uel20 or uelc20) is RPM-based with
        # dracut; the UOS desktop and Deepin are Debian-based (Ansible's distribution facts
        # route them the same way: test/units/module_utils/facts/system/distribution/fixtures).
        family = "rhel"
    elif did in SUSE_IDS or "suse" in likes:
        family = suse_family(did, version)
    elif did in RHEL_IDS or likes & {"rhel", "fedora", "centos"}:
        family = "rhel"
    elif did in DEBIAN_IDS or "debian" in likes or "ubuntu" in likes:
        family = "debian"
    else:
        reason = f"unsupported distribution {name or did} {version}".strip()
    return Distro(did, name or did, version, family, reason)


def _legacy_release(files: dict[str, str | None]) -> tuple[str, str, str]:
    """(id, name, version) from the files older hosts have instead of os-release.

    /etc/system-release alone (Amazon Linux AMI before 2016), /etc/lsb-release alone
    (DISTRIB_ID/DISTRIB_RELEASE), /etc/debian_version alone. ('', '', '') when none tells.
    """
    system = (files.get("/etc/system-release") or "").strip()
    # ^(.*?)\s+release\s+(\S+), without its quadratic backtracking over a run of blanks: the
    # first match starts where a run of blanks does, and '.' stops at a newline
    m = re.search(r"(?<!\s)\s+release\s+(\S+)", system)
    if m and "\n" not in system[: m.start()]:
        name = system[: m.start()]
        did = "amzn" if name.lower().startswith("amazon linux") else name.split()[0].lower()
        return did, name, m.group(1)
    lsb = dict(re.findall(r"^(DISTRIB_\w+)=[\"']?([^\"'\n]*)", files.get("/etc/lsb-release") or "", re.M))
    if lsb.get("DISTRIB_ID"):
        did = lsb["DISTRIB_ID"]
        return did.lower(), lsb.get("DISTRIB_DESCRIPTION") or did, lsb.get("DISTRIB_RELEASE", "")
    debian = (files.get("/etc/debian_version") or "").strip()
    if debian:
        return "debian", "Debian", debian if re.match(r"^\d", debian) else ""
    return "", "", ""


def suse_family(did: str, version: str) -> str:
    """SUSE procedure: legacy (SLES < 12 SP1, openSUSE < 13), 12 SP1, or later."""
    v = _version_tuple(version) or (0,)
    major, minor = v[0], (v[1] if len(v) > 1 else 0)
    if did not in SLES_NUMBERED | OPENSUSE_NUMBERED:
        return "suse"  # Micro, ALP, MicroOS, Tumbleweed, Slowroll: dracut, their own numbering
    if did in OPENSUSE_NUMBERED:
        return "suse-legacy" if major < 13 else "suse"
    if major < 12 or (major == 12 and minor == 0):
        return "suse-legacy"
    if (major, minor) == (12, 1):
        return "suse-12sp1"
    return "suse"


def kernel_version_tuple(version: str) -> tuple[int, ...]:
    """(2, 6, 32) from '2.6.32-754.el6.x86_64'."""
    return _version_tuple(version.split("-", 1)[0]) or (0,)
