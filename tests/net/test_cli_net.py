"""node and group refuse network options that would expose plaintext or advertise loopback
to other hosts: one line, exit 1, before anything starts or connects."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.flower.errors import GroupHostError
from mycelium.flower.group_host import GroupHost
from mycelium.net.certs import write_network_certs

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("command", ["node", "group"])
def test_plain_http_to_another_host_is_refused(command: str, tmp_path: Path) -> None:
    line = one_line_error(
        [command, "--registry-url", "http://198.18.0.10:8000", "--host", "198.18.0.11"]
    )
    assert "plain http to another host" in line and "--insecure" in line


@pytest.mark.parametrize("command", ["node", "group"])
@pytest.mark.parametrize(
    ("urls", "says"),
    [
        ("http://127.0.0.1:8000,ftp://127.0.0.1:8001", "must be http(s)://HOST"),
        ("http://127.0.0.1:8000,", "empty entry"),
        ("http://127.0.0.1:8000,http://127.0.0.1:8000/", "twice"),
        # The rules hold for every URL of the list, not just the first.
        ("http://127.0.0.1:8000,http://198.18.0.10:8000", "plain http to another host"),
    ],
)
def test_every_registry_url_of_a_list_is_checked(command: str, urls: str, says: str) -> None:
    line = one_line_error([command, "--registry-url", urls, "--host", "198.18.0.11"])
    assert says in line


@pytest.mark.parametrize("command", ["node", "group"])
def test_a_ca_file_is_for_https_urls_only(command: str, tmp_path: Path) -> None:
    made = write_network_certs(tmp_path, ["reg.example"])
    urls = "https://198.18.0.10:8443,http://198.18.0.12:8000"
    line = one_line_error(
        [command, "--registry-url", urls, "--host", "198.18.0.11", "--registry-ca", str(made.ca)]
    )
    assert "--registry-ca given but the registry URL 'http://198.18.0.12:8000'" in line


@pytest.mark.parametrize("command", ["node", "group"])
def test_loopback_groups_with_a_remote_registry_are_refused(command: str) -> None:
    line = one_line_error([command, "--registry-url", "https://198.18.0.10:8443"])
    assert "the registry is on another host" in line and "--host" in line


@pytest.mark.parametrize("command", ["node", "group"])
def test_registry_ca_must_be_a_certificate(command: str, tmp_path: Path) -> None:
    made = write_network_certs(tmp_path, ["reg.example"])
    base = [command, "--registry-url", "https://198.18.0.10:8443", "--host", "198.18.0.11"]
    missing = one_line_error([*base, "--registry-ca", str(tmp_path / "nope.pem")])
    assert "No such file" in missing
    assert "not a PEM certificate" in one_line_error([*base, "--registry-ca", str(made.server_key)])


def test_wildcard_host_needs_a_public_host() -> None:
    line = one_line_error(
        ["group", "--registry-url", "https://198.18.0.10:8443", "--host", "0.0.0.0"]
    )
    assert "--public-host" in line


def test_group_host_refuses_to_advertise_loopback(tmp_path: Path) -> None:
    with pytest.raises(GroupHostError, match="advertises loopback"):
        GroupHost(
            "http://127.0.0.1:8000",
            name="g",
            work_dir=tmp_path,
            host="198.18.0.11",
            public_host="127.0.0.1",
        )
