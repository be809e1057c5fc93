"""The test lab: every host that ``python -m tests.lab up`` started, on 127.0.x.y loopback. Host keys are
checked strictly against the known_hosts file that ``up`` writes from the hosts' own key files.
"""

import json as _json

from tests.lab import hosts as _lab

_state = _lab.STATE / "lab.json"
_up = set(_json.loads(_state.read_text())["hosts"]) if _state.exists() else {h.name for h in _lab.HOSTS}

lab = [
    (
        h.name,
        {
            "ssh_hostname": h.address,
            "ssh_user": "root",
            "ssh_key": str(_lab.KEY),
            "ssh_strict_host_key_checking": "yes",
            "ssh_known_hosts_file": str(_lab.STATE / "known_hosts"),
            **dict(h.data),
        },
    )
    for h in _lab.HOSTS
    if h.name in _up
]
