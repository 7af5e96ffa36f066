"""The registry as trust anchor: it stores and lists group certificates, checks they name
the group's fleet host, and refuses to serve off loopback without TLS."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.lab.netns import Network
from mycelium.lab.stack import https_registry
from mycelium.net.certs import make_self_signed, write_network_certs
from tests.conftest import OPERATOR_TOKEN, auth, registry_app

runner = CliRunner()
OPERATOR = auth(OPERATOR_TOKEN)


def group_body(fleet_address: str, certificate: str | None) -> dict[str, object]:
    return {"name": "g", "fleet_address": fleet_address, "certificate": certificate}


def test_group_certificate_is_stored_and_listed(tmp_path: Path) -> None:
    pem = make_self_signed(["198.18.0.11"]).cert_pem.decode()
    with registry_app(tmp_path / "r.db") as client:
        created = client.post("/groups", headers=OPERATOR, json=group_body("198.18.0.11:9092", pem))
        assert created.status_code == 201, created.text
        gid = created.json()["group_id"]
        assert client.get(f"/groups/{gid}").json()["certificate"] == pem
        assert [g["certificate"] for g in client.get("/groups").json()] == [pem]
        loopback = client.post("/groups", headers=OPERATOR, json=group_body("127.0.0.1:9093", None))
        assert client.get(f"/groups/{loopback.json()['group_id']}").json()["certificate"] is None


@pytest.mark.parametrize(
    ("certificate", "needle"),
    [
        ("not a certificate", "not a PEM certificate"),
        (make_self_signed(["198.18.0.99"]).cert_pem.decode(), "does not name 198.18.0.11"),
    ],
)
def test_a_certificate_that_cannot_vouch_for_the_group_is_refused(
    tmp_path: Path, certificate: str, needle: str
) -> None:
    with registry_app(tmp_path / "r.db") as client:
        refused = client.post(
            "/groups", headers=OPERATOR, json=group_body("198.18.0.11:9092", certificate)
        )
        assert refused.status_code == 422 and needle in refused.text, refused.text


def test_a_database_from_before_certificates_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the groups table as the first release made it
        conn.execute(
            "CREATE TABLE groups (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
            "fleet_address TEXT NOT NULL, task TEXT NOT NULL, max_capacity INTEGER NOT NULL, "
            "join_policy TEXT NOT NULL, performance_threshold REAL NOT NULL, "
            "token_hash TEXT NOT NULL, invite_hash TEXT, status TEXT NOT NULL DEFAULT "
            "'active', accuracy REAL, loss REAL, round INTEGER, model_sha256 TEXT, "
            "last_report REAL NOT NULL, last_live_at REAL NOT NULL, created_at REAL NOT NULL)"
        )
    conn.close()
    with registry_app(db) as client:
        created = client.post("/groups", headers=OPERATOR, json=group_body("127.0.0.1:9092", None))
        assert created.status_code == 201, created.text
        assert client.get("/groups").json()[0]["certificate"] is None


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_registry_refuses_to_serve_off_loopback_without_tls(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    line = one_line_error(["registry", "--host", "198.18.0.10", "--db", db])
    assert "refusing to expose 198.18.0.10 without TLS" in line
    assert "--ssl-certfile" in line and "--insecure" in line
    line = one_line_error(["registry", "--host", "0.0.0.0", "--db", db])
    assert "--public-host" in line


def test_registry_refuses_unusable_tls_material(tmp_path: Path) -> None:
    made = write_network_certs(tmp_path / "c", ["reg.example"])
    db = str(tmp_path / "r.db")
    base = ["registry", "--host", "0.0.0.0", "--public-host", "other.example", "--db", db]
    cert = ["--ssl-certfile", str(made.server_cert)]
    key = ["--ssl-keyfile", str(made.server_key)]
    assert "both --ssl-certfile and --ssl-keyfile" in one_line_error([*base, *cert])
    assert "does not name other.example" in one_line_error([*base, *cert, *key])
    wrong_key = ["--ssl-keyfile", str(tmp_path / "c" / "ca.key")]
    assert "is not the private key of" in one_line_error([*base, *cert, *wrong_key])
    insecure = one_line_error([*base, *cert, *key, "--insecure"])
    assert "--insecure conflicts" in insecure


def test_certs_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "--out", str(tmp_path), "--host", "reg.example"])
    assert result.exit_code == 0, result.output
    assert "made CA" in result.output and (tmp_path / "server.key").is_file()
    again = runner.invoke(app, ["certs", "--out", str(tmp_path), "--host", "198.18.0.10"])
    assert again.exit_code == 0 and "reused CA" in again.output
    assert "empty --host" in one_line_error(["certs", "--out", str(tmp_path / "x"), "--host", ""])


def test_real_registry_serves_https_to_other_hosts_only(network: Network, tmp_path: Path) -> None:
    with https_registry(network, tmp_path) as (view, certs, proc):
        url = view.url
        assert network.probe("hostA", "health", url, "--ca", certs.ca) == {"healthy": True}
        assert network.probe("hostA", "health", url) == {"healthy": False}  # CA unknown
        plain = network.probe("hostA", "get", url.replace("https://", "http://") + "/health")
        assert "status" not in plain, plain
        assert f"registry on {url}" in proc.read_log()
