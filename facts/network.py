"""
Will the server be reachable on KVM: NIC names and addresses bound to the old machine (issue 20).

``network_findings(files)`` reads a host's network configuration (path -> text): udev rules, RHEL
and SUSE ifcfg files, Debian's /etc/network/interfaces, netplan YAML, NetworkManager keyfiles and
systemd-networkd .network/.link files. On KVM the NIC is a new device with a new MAC address, and a
cloud gives it an address by DHCP, so (all ``blocks network`` unless said otherwise):
- nic-rule: a udev rule naming an interface by MAC (70-persistent-net.rules). The new NIC does not
  get that name; where udev's persistent-net generator runs (75-persistent-net-generator.rules), it
  writes a rule naming the NIC eth1 and eth0's configuration is never used. Where predictable names
  are on (no net.ifnames=0 on the kernel line), a rule naming ethN is what gave the old NIC that
  name: the new one gets a predictable name (ens3), and ethN's configuration is never used either
  (the lab's real udev shows it, tests/test_lab_boot_path.py). Its fix, when the file binds one NIC:
  the MAC match becomes DRIVERS=="virtio_net", so the virtio NIC gets the name. Otherwise the NIC
  keeps its kernel name: advice. Rules limited to other kernel names (KERNEL=="wlan*") are not
  reported.
- nic-mac-binding: configuration that applies only to the old MAC (ifcfg HWADDR=, SUSE
  ifcfg-eth-id-<MAC>, netplan match: macaddress, NetworkManager mac-address=, networkd [Match]
  MACAddress=): the new NIC is left unconfigured.
- nic-mac-set: configuration that gives the NIC the old MAC (MACADDR=, LLADDR=, hwaddress,
  cloned-mac-address=, [Link] MACAddress=): a cloud's anti-spoofing drops frames from a MAC it did
  not assign.
- static-address: a fixed IPv4 address. The cloud assigns addresses by DHCP (Huawei IMS, "Preparing
  an Image File": "The NIC must be set to DHCP ... Otherwise, the ECS startup or network capability
  will be abnormal"): blocks network when no interface uses DHCP, else advice.
``udev_name_for(rules, mac)`` answers which name udev's rules give a virtio NIC with that MAC.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from kvm_drivers.facts.boot_path import ADVICE, BLOCKS_NETWORK, Finding, Fix


@dataclass(frozen=True)
class _Address:
    """How one interface configuration gets its IPv4 address."""

    where: str
    line: int
    text: str
    iface: str
    dhcp: bool
    static: bool


_Read = tuple[list[Finding], list[_Address]]  # what a reader returns
TRUE = ("1", "yes", "true", "on", "y")
IFCFG_IGNORED = ("~", ".bak", ".orig", ".rpmnew", ".rpmorig", ".rpmsave")  # initscripts skips these
KVM_MACS = ("52:54:00:12:34:56", "fa:16:3e:12:34:56")  # QEMU's and OpenStack's default MAC prefixes
NOT_A_MAC = ("preserve", "permanent", "random", "stable", "stable-ssid")  # NM cloned-mac-address words


def _binding(path: str, n: int, raw: str, what: str, fix: Fix | None) -> Finding:
    return Finding("nic-mac-binding", BLOCKS_NETWORK, path, n, raw, f"{what}: it applies only to the old "
                   "NIC's MAC, and the NIC on KVM has a new one", fix)  # fmt: skip


def _setting(path: str, n: int, raw: str, what: str) -> Finding:
    return Finding("nic-mac-set", BLOCKS_NETWORK, path, n, raw, f"{what}: gives the NIC the old MAC, and a "
                   "cloud drops frames from a MAC it did not assign", Fix("delete-line", path, n, raw))  # fmt: skip


def _lines(text: str) -> Iterator[tuple[int, str, list[str]]]:
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if fields and not fields[0].startswith("#"):
            yield n, raw, fields


def _ini(text: str) -> Iterator[tuple[str, str, str, int, str]]:
    """(section, key, value, line number, line) of a keyfile/unit file."""
    section = ""
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
        elif "=" in s:
            key, value = s.split("=", 1)
            yield section, key.strip(), value.strip(), n, raw


def _ipv4(value: str) -> bool:
    return re.match(r"\d+\.\d+\.\d+\.\d+", value.strip("\"'")) is not None


# --- udev -----------------------------------------------------------------------------------------

_PAIR = re.compile(r'\s*([A-Za-z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_PARENT = ("KERNELS", "SUBSYSTEMS", "DRIVERS")


def _udev_rules(text: str) -> list[tuple[int, str, list[tuple[str, str, str]] | None]]:
    """(first line number, rule, its key/operator/value triples or None when udev would not parse it)."""
    out: list[tuple[int, str, list[tuple[str, str, str]] | None]] = []
    pending, first = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        first = first if pending else n
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        rule, pending = pending + raw, ""
        s = rule.strip()
        if not s or s.startswith("#"):
            continue
        pairs: list[tuple[str, str, str]] = []
        pos = 0
        while pos < len(s):
            m = _PAIR.match(s, pos)
            if not m:
                break
            pairs.append((m.group(1), m.group(2), m.group(3)))
            pos = m.end()
        out.append((first, rule, pairs if pos >= len(s) else None))
    return out


def _glob(value: str | None, pattern: str) -> bool:
    """Match as udev does: fnmatch(3) against each '|' alternative; a missing value matches nothing."""
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))


def udev_name_for(rules_text: str, mac: str, kernel: str = "eth0") -> str | None:
    """The NAME udev's rules (one file's text, or several joined in udev's order) give a virtio NIC
    with address mac that the kernel called kernel, or None when no rule names it. Matching is
    udev's: case-sensitive globs, parent keys (DRIVERS, ATTRS...) all on one device of the chain
    (net device, virtio device, PCI device), NAME:= final, GOTO/LABEL. A rule with a key this
    model does not know (ENV, PROGRAM, TEST...) is taken as not matching.
    """
    own = {"SUBSYSTEM": "net", "ACTION": "add", "KERNEL": kernel}
    attrs = {"address": mac, "dev_id": "0x0", "dev_port": "0", "type": "1", "addr_assign_type": "0"}
    chain = [{"KERNELS": kernel, "SUBSYSTEMS": "net", "DRIVERS": "", **{f"ATTRS{{{k}}}": v for k, v in attrs.items()}},
             {"KERNELS": "virtio0", "SUBSYSTEMS": "virtio", "DRIVERS": "virtio_net"},
             {"KERNELS": "0000:00:03.0", "SUBSYSTEMS": "pci", "DRIVERS": "virtio-pci", "ATTRS{vendor}": "0x1af4"}]
    rules = [(n, pairs) for n, _, pairs in _udev_rules(rules_text) if pairs]
    labels = {v: i for i, (_, pairs) in enumerate(rules) for k, _, v in pairs if k == "LABEL"}
    name, final, i = None, False, 0
    while i < len(rules):
        pairs = rules[i][1]
        i += 1
        tests = [(k, op == "==", v) for k, op, v in pairs if op in ("==", "!=")]
        parent = [t for t in tests if t[0] in _PARENT or t[0].startswith("ATTRS{")]
        mine = [t for t in tests if t not in parent]
        if any(k not in own and not k.startswith("ATTR{") for k, _, _ in mine):
            continue
        values = {**own, **{f"ATTR{{{k}}}": v for k, v in attrs.items()}}
        if not all(_glob(values.get(k), v) == eq for k, eq, v in mine):
            continue
        if parent and not any(all(_glob(d.get(k), v) == eq for k, eq, v in parent) for d in chain):
            continue
        for k, op, v in pairs:
            if k == "NAME" and op in ("=", ":=") and not final:
                name, final = v, op == ":="
            elif k == "GOTO" and v in labels:
                i = labels[v]
    return name


def _udev(text: str, path: str, generator: bool, predictable: bool = False) -> _Read:
    out = []
    rules = _udev_rules(text)
    bound = [n for n, _, pairs in rules if pairs and any(k.endswith("{address}") for k, _, _ in pairs)]
    for n, rule, pairs in rules:
        keys = {(k, op): v for k, op, v in pairs or ()}
        mac = keys.get(("ATTR{address}", "==")) or keys.get(("ATTRS{address}", "=="))
        name = keys.get(("NAME", "=")) or keys.get(("NAME", ":="))
        kernel = keys.get(("KERNEL", "=="))
        if not mac or not name or keys.get(("SUBSYSTEM", "=="), "net") != "net" or all(
                _glob(x, mac) for x in KVM_MACS):  # fmt: skip
            continue  # a pattern that matches any NIC ("?*") binds nothing
        if kernel is not None and not _glob("eth0", kernel):
            continue  # a rule for other kernel names (wlan*) never touches a virtio NIC
        if generator:
            severity, why, fix = BLOCKS_NETWORK, "the persistent-net generator will name the new NIC eth1 or later", \
                Fix("move-aside", path)  # fmt: skip
        elif predictable and re.fullmatch(r"eth\d+", name):
            severity = BLOCKS_NETWORK
            why = f"predictable names are on (no net.ifnames=0): the new NIC gets one (e.g. ens3), not {name}"
            fix = Fix("drop-mac-match", path, n, rule) if len(bound) == 1 else None
            why += "" if fix else "; several NICs are bound here: name them by hand"
        else:
            severity, why, fix = ADVICE, "the new NIC keeps its kernel name", Fix("move-aside", path)
        out.append(Finding("nic-rule", severity, path, n, rule, f"names {name} by MAC {mac}: {why}", fix))
    return out, []


# --- ifcfg, interfaces ----------------------------------------------------------------------------


def _shell_vars(text: str) -> dict[str, tuple[int, str, str]]:
    """KEY -> (line number, line, value unquoted as sh does) of KEY=value lines; the last wins."""
    out = {}
    for n, raw, _ in _lines(text):
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", raw)
        if m:
            try:
                value = " ".join(shlex.split(m.group(2), comments=True))
            except ValueError:
                value = m.group(2).strip()
            out[m.group(1)] = (n, raw, value)
    return out


def _ifcfg(text: str, path: str) -> _Read:
    name = path.rsplit("/", 1)[-1]
    v = _shell_vars(text)
    value = {k: x[2] for k, x in v.items()}
    suse = "/network-scripts/" not in path
    if name.endswith(IFCFG_IGNORED) or name == "ifcfg-lo" or value.get("DEVICE") == "lo":
        return [], []
    if value.get("STARTMODE", "").lower() in ("manual", "off") or value.get("ONBOOT", "yes").lower() in (
            "no", "false", "0", "n"):  # fmt: skip
        return [], []
    out = []
    m = re.fullmatch(r"ifcfg-eth-id-([0-9a-fA-F:]{17})", name)
    if m:
        out.append(_binding(path, 0, name, f"{name} is the configuration of MAC {m.group(1)}",
                            Fix("rename", path, 0, name, "ifcfg-eth0")))  # fmt: skip
    if value.get("HWADDR") and not suse:
        n, raw, mac = v["HWADDR"]
        out.append(_binding(path, n, raw, f"HWADDR={mac}", Fix("delete-line", path, n, raw)))
    for key in ("MACADDR", "LLADDR"):
        if value.get(key):
            out.append(_setting(path, v[key][0], v[key][1], f"{key}={value[key]}"))
    proto = value.get("BOOTPROTO", "").lower()  # unset: static on both; SUSE's "none" configures no address
    dhcp = proto in ("dhcp", "dhcp4", "bootp") or proto.startswith(("dhcp+", "dhcp4+"))
    ips = sorted((x[0], x[1]) for k, x in v.items() if re.fullmatch(r"IPADDR\w*", k) and _ipv4(x[2]))
    static = not dhcp and bool(ips) and proto in (("static", "") if suse else ("static", "none", ""))
    n, raw = v["BOOTPROTO"][:2] if "BOOTPROTO" in v else ips[0] if ips else (0, "")
    iface = value.get("DEVICE") or name[len("ifcfg-"):]
    return out, [_Address(path, n, raw, iface, dhcp, static)] if dhcp or static else []


def _interfaces(text: str, path: str) -> _Read:
    out, addresses, iface = [], [], None
    for n, raw, f in _lines(text):
        if f[0] == "iface" and len(f) >= 4:
            iface = f[1]
            if f[2] == "inet" and f[1] != "lo" and f[3] in ("dhcp", "bootp", "static"):
                addresses.append(_Address(path, n, raw, f[1], f[3] != "static", f[3] == "static"))
        elif f[0] in ("auto", "mapping", "source", "source-directory") or f[0].startswith("allow-"):
            iface = None
        elif iface and f[0] == "hwaddress" and len(f) > 1:
            out.append(_setting(path, n, raw, f"{iface}: hwaddress {f[-1]}"))
    return out, addresses


# --- netplan, NetworkManager, networkd -------------------------------------------------------------


def _netplan(text: str, path: str) -> _Read:
    try:
        import yaml  # PyYAML; netplan is YAML, read as nodes to keep line numbers (nothing is constructed)
    except ImportError:  # pragma: no cover - PyYAML is a dependency of this reader
        return [Finding("unread", ADVICE, path, 0, "", "netplan files need PyYAML to be read")], []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        n = mark.line + 1 if mark else 0
        return [Finding("unread", ADVICE, path, n, "", f"not YAML netplan can read: {getattr(e, 'problem', e)}")], []
    lines = text.splitlines()

    def get(node: object, key: str) -> object:
        if isinstance(node, yaml.MappingNode):
            return next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        return None

    def scalar(node: object) -> str:
        return node.value if isinstance(node, yaml.ScalarNode) else ""

    out, addresses = [], []
    network = get(root, "network")
    for kind in ("ethernets", "bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs"):
        devices = get(network, kind)
        for key, dev in devices.value if isinstance(devices, yaml.MappingNode) else ():
            iface = scalar(key)
            mac = get(get(dev, "match"), "macaddress")
            if kind == "ethernets" and scalar(mac):
                n = mac.start_mark.line + 1  # type: ignore[union-attr]
                out.append(_binding(path, n, lines[n - 1], f"{iface}: match macaddress {scalar(mac)}",
                                    Fix("drop-mac-match", path, n, lines[n - 1])))  # fmt: skip
            own = get(dev, "macaddress")
            if scalar(own):
                n = own.start_mark.line + 1  # type: ignore[union-attr]
                out.append(_setting(path, n, lines[n - 1], f"{iface}: macaddress {scalar(own)}"))
            dhcp = scalar(get(dev, "dhcp4")).lower() in TRUE
            ips = get(dev, "addresses")
            items = [scalar(x.value[0][0] if isinstance(x, yaml.MappingNode) and x.value else x)  # "- ADDR: {...}"
                     for x in (ips.value if isinstance(ips, yaml.SequenceNode) else ())]  # fmt: skip
            if dhcp or any(_ipv4(x) for x in items):
                n = (get(dev, "dhcp4") if dhcp else ips).start_mark.line + 1  # type: ignore[union-attr]
                addresses.append(_Address(path, n, lines[n - 1], iface, dhcp, not dhcp))
    return out, addresses


def _keyfile(text: str, path: str) -> _Read:
    entries = list(_ini(text))
    last = {(s, k): (v, n, raw) for s, k, v, n, raw in entries}
    value = {sk: x[0] for sk, x in last.items()}
    if value.get(("connection", "autoconnect"), "true").lower() in ("false", "no", "0"):
        return [], []
    iface = value.get(("connection", "interface-name")) or value.get(("connection", "id")) or path.rsplit("/", 1)[-1]
    out = []
    for s, k, v, n, raw in entries:
        if s in ("ethernet", "802-3-ethernet") and k == "mac-address" and v:
            out.append(_binding(path, n, raw, f"{iface}: mac-address={v}", Fix("delete-line", path, n, raw)))
        elif s in ("ethernet", "802-3-ethernet") and k == "cloned-mac-address" and v and v.lower() not in NOT_A_MAC:
            out.append(_setting(path, n, raw, f"{iface}: cloned-mac-address={v}"))
    if ("connection", "master") in value or ("connection", "controller") in value:
        return out, []  # a port of a bond/bridge: the controller has the address
    method, n, raw = last.get(("ipv4", "method"), ("auto", 0, ""))
    return out, [_Address(path, n, raw, iface, method == "auto", method == "manual")] if method in (
        "auto", "manual") else []  # fmt: skip


def _networkd(text: str, path: str) -> _Read:
    link = path.endswith(".link")
    entries = list(_ini(text))
    out = []
    for s, k, v, n, raw in entries:
        if s == "Match" and k in ("MACAddress", "PermanentMACAddress") and v:
            fix = Fix("move-aside", path) if link else Fix("drop-mac-match", path, n, raw)
            out.append(_binding(path, n, raw, f"[Match] {k}={v}", fix))
        elif s == "Link" and k == "MACAddress" and v:
            out.append(_setting(path, n, raw, f"[Link] MACAddress={v}"))
    if link:
        return out, []
    names = " ".join(v for s, k, v, _, _ in entries if s == "Match" and k == "Name") or path.rsplit("/", 1)[-1]
    dhcp = [(n, raw) for s, k, v, n, raw in entries if s == "Network" and k == "DHCP" and v.lower() in TRUE + (
        "ipv4", "both", "v4")]  # fmt: skip
    ips = [(n, raw) for s, k, v, n, raw in entries if s in ("Network", "Address") and k == "Address" and _ipv4(v)]
    if dhcp or ips:
        n, raw = (dhcp or ips)[0]
        return out, [_Address(path, n, raw, names, bool(dhcp), not dhcp)]
    return out, []


def reader(path: str) -> str | None:
    """Which reader a network configuration file needs (None: not one kvm-drivers reads)."""
    name = path.rsplit("/", 1)[-1]
    if "/udev/rules.d/" in path and name.endswith(".rules"):
        return "udev"
    if ("/sysconfig/network-scripts/" in path or "/sysconfig/network/" in path) and name.startswith("ifcfg-"):
        return "ifcfg"
    if path.endswith("/network/interfaces") or "/network/interfaces.d/" in path:
        return "interfaces"
    if "/netplan/" in path and name.endswith((".yaml", ".yml")):
        return "netplan"
    if "/NetworkManager/system-connections/" in path:
        return "keyfile"
    if "/systemd/network/" in path and name.endswith((".network", ".link")):
        return "networkd"
    return None


_READERS = {"ifcfg": _ifcfg, "interfaces": _interfaces, "netplan": _netplan, "keyfile": _keyfile,
            "networkd": _networkd}  # fmt: skip


def network_findings(files: Mapping[str, str], persistent_net_generator: bool = True,
                     predictable_names: bool = False) -> list[Finding]:  # fmt: skip
    """What in the network configuration files (path -> text) keeps the server from being reached
    on KVM (see the module's notes), sorted by file and line. persistent_net_generator: the host's
    udev writes rules for new NICs (/lib/udev/rules.d/75-persistent-net-generator.rules exists);
    predictable_names: udev gives NICs predictable names (no net.ifnames=0 on the kernel line).
    """
    findings, addresses = [], []
    for path in sorted(files):
        kind = reader(path)
        if kind is None:
            raise ValueError(f"{path}: not a network configuration file kvm-drivers reads")
        found, addr = _udev(files[path], path, persistent_net_generator, predictable_names) if kind == "udev" else \
            _READERS[kind](files[path], path)  # fmt: skip
        findings += found
        addresses += addr
    any_dhcp = any(a.dhcp for a in addresses)
    for a in addresses:
        if a.static:
            why = "another interface uses DHCP" if any_dhcp else "no interface uses DHCP: the server is unreachable"
            findings.append(Finding("static-address", ADVICE if any_dhcp else BLOCKS_NETWORK, a.where, a.line, a.text,
                                    f"{a.iface}: a fixed IPv4 address, not routed on the cloud, which gives "
                                    f"addresses by DHCP ({why})"))  # fmt: skip
    return sorted(findings, key=lambda f: (f.where, f.line, f.kind))
