"""A hand-driven registry client and HTTP poster for the admission tests, run INSIDE a
namespace (``network.run(host, [python, member.py, ...])``): the test process itself never
sends to the lab's addresses. Each command prints one JSON line.

    member.py join URL CA GROUP KEY CREDS   register a node, join GROUP with KEY's public key
    member.py receipt URL CA CREDS          wait for the host's admission receipt
    member.py group URL CA CREDS ADDRESS    create a group (the node's token) at ADDRESS
    member.py migrate URL CA CREDS GROUP    migrate the node to GROUP
    member.py delete URL CA CREDS           delete the node
    member.py post URL [CA]                 POST an empty protobuf body; the HTTP status
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mycelium.client import RegistryClient  # noqa: E402


def _client(url: str, ca: str, creds: str | None = None) -> RegistryClient:
    token = json.loads(Path(creds).read_text())["token"] if creds else None
    return RegistryClient(url, ca_file=ca, token=token, timeout=10)


def _node_id(creds: str) -> int:
    return int(json.loads(Path(creds).read_text())["node_id"])


def join(url: str, ca: str, group: str, key: str, creds: str) -> dict:
    client = _client(url, ca)
    made = client.register_node(name=f"hand-{os.getpid()}", num_samples=1)
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"node_id": made.node_id, "token": made.token}, f)
    public = Path(key + ".pub").read_text().strip()
    client.join_group(int(group), made.node_id, public_key=public)
    return {"node_id": made.node_id}


def receipt(url: str, ca: str, creds: str) -> dict:
    client, deadline = _client(url, ca, creds), time.monotonic() + 60
    while time.monotonic() < deadline:
        got = client.admission(_node_id(creds))
        if got.admitted:
            return {"flower_node_id": got.flower_node_id}
        time.sleep(0.25)
    return {"error": "no receipt within 60 s"}


def group(url: str, ca: str, creds: str, address: str) -> dict:
    made = _client(url, ca, creds).create_group(name="elsewhere", fleet_address=address)
    return {"group_id": made.group_id}


def migrate(url: str, ca: str, creds: str, to_group: str) -> dict:
    client = _client(url, ca, creds)
    client.migrate(_node_id(creds), to_group_id=int(to_group), reason="test", expected_gain=0.1)
    return {"migrated": True}


def delete(url: str, ca: str, creds: str) -> dict:
    _client(url, ca, creds).delete_node(_node_id(creds))
    return {"deleted": True}


def post(url: str, ca: str | None = None) -> dict:
    import httpx

    try:
        r = httpx.post(
            url,
            content=b"",
            headers={"Content-Type": "application/protobuf"},
            verify=ca or False,
            timeout=10,
        )
    except httpx.HTTPError as exc:
        return {"error": type(exc).__name__}
    return {"status": r.status_code}


COMMANDS = {
    "join": join,
    "receipt": receipt,
    "group": group,
    "migrate": migrate,
    "delete": delete,
    "post": post,
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
