"""The nginx front: only ``POST /v1/fleet/<route>`` reaches the SuperLink."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from mycelium import node_keys
from mycelium.flower.procs import flower_env
from mycelium.procs import free_port
from mycelium.security.admission import Admission, ControlApiAdmin, Member
from mycelium.security.fleet_proxy import (
    FleetProxy,
    FleetProxyConfig,
    FleetProxyError,
    nginx_executable,
    render_nginx_conf,
)
from tests.security.conftest import APP_DIR, Certs, Lab

pytestmark = pytest.mark.skipif(
    shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None,
    reason="nginx is not installed (Debian: apt-get install nginx-light)",
)

BLOCKED = [
    "/v1/control/start-run",
    "/v1/control/list-runs",
    "/v1/runtime/get-nodes",
    "/v1/runtime/acquire-task",
    "/health",
    "/docs",
    "/openapi.json",
    "/v1/fleet/../control/list-runs",
    "/v1/fleet/%2e%2e/control/list-runs",
    "/v1/fleet%2f..%2fcontrol%2flist-runs",
    "/v1/fleet/get-run/../../control/list-runs",
]


def _config(certs: Certs, upstream_port: int, **kw: object) -> FleetProxyConfig:
    return FleetProxyConfig(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        upstream_port=upstream_port,
        certfile=certs.cert,
        keyfile=certs.key,
        upstream_ca=certs.ca,
        **kw,  # type: ignore[arg-type]
    )


def _status(port: int, ca: Path, path: str, method: str = "POST") -> int:
    """Status of a raw request (http.client sends the path exactly as given)."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=10, context=ssl.create_default_context(cafile=str(ca))
    )
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        return conn.getresponse().status
    finally:
        conn.close()


def test_config_forwards_one_location_and_nginx_accepts_it(certs: Certs, tmp_path: Path) -> None:
    text = render_nginx_conf(_config(certs, 9999), tmp_path)
    assert text.count("proxy_pass") == 1 and "location / { return 404; }" in text
    assert "proxy_pass https://127.0.0.1:9999$uri;" in text and "proxy_ssl_verify on;" in text
    (tmp_path / "nginx.conf").write_text(text)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    check = [nginx_executable(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    assert subprocess.run(check, capture_output=True, timeout=15).returncode == 0


def test_a_missing_certificate_is_a_one_line_error(certs: Certs, tmp_path: Path) -> None:
    cfg = _config(certs, 9999, upstream_name="localhost")
    bad = FleetProxyConfig(**{**cfg.__dict__, "certfile": tmp_path / "missing.pem"})
    with pytest.raises(FleetProxyError) as err:
        FleetProxy(bad, tmp_path).start()
    assert "missing.pem" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_only_the_fleet_api_is_exposed(lab: Lab, tmp_path: Path) -> None:
    lab.start_superlink(auth=True)
    proxy = FleetProxy(_config(lab.certs, lab.port), tmp_path).start()
    try:
        ca, public = lab.certs.ca, proxy.cfg.listen_port
        for path in BLOCKED:
            assert _status(public, ca, path) == 404, path
        # Fleet routes reach Flower (which wants a protobuf body: 415), and only by POST.
        assert _status(public, ca, "/v1/fleet/get-run") == 415
        assert _status(public, ca, "/v1/fleet/get-run", method="GET") == 403
        # The same Control route answers on the SuperLink's own (loopback) port.
        assert _status(lab.port, ca, "/v1/control/list-runs") == 415

        # A member's SuperNode connects through the front ...
        member = node_keys.generate(tmp_path / "member.key")
        admin = ControlApiAdmin(lab.address, root_certificates=ca)
        Admission(admin, lambda: [Member(1, member.public_key)]).sync()
        admin.close()
        node = lab.supernode("member", key=member.private_key_path, address=proxy.cfg.listen)
        node.wait_connected()
        # ... while `flwr run` of an app against the public address fails.
        conf = lab.home / "config.toml"
        conf.write_text(
            conf.read_text()
            + f'\n[superlink.public]\naddress = "{proxy.cfg.listen}"\n'
            + f'root-certificates = "{ca}"\n'
        )
        out = subprocess.run(
            ["flwr", "run", str(APP_DIR), "public", "--format", "json"],
            env=flower_env(lab.home), capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        result = json.loads(out[out.index("{") :])
        assert result["success"] is False and "404" in result["error-message"]
    finally:
        proxy.stop()
    assert not proxy.is_running()
