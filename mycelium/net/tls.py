"""TLS settings as Flower and httpx want them: command-line flags of a SuperLink and a
SuperNode, the ``flwr`` CLI's connection entry, the registry client's ``verify``, and the
group certificate a founding node makes for its own SuperLink."""

from __future__ import annotations

import ssl
from pathlib import Path

from mycelium.net.addresses import Exposure, is_loopback, is_wildcard, plan_exposure
from mycelium.net.certs import CertificateError, TlsFiles, load_certificate, write_group_certificate

REGISTRY_CA_ENV = "MYCELIUM_REGISTRY_CA"


def plan_group_exposure(*, host: str, public_host: str | None, insecure: bool) -> Exposure:
    """A group's SuperLink: TLS with its own certificate whenever it leaves loopback, unless
    ``insecure`` (then plaintext, explicitly). AddressError as :func:`plan_exposure`."""
    local = is_loopback(host) and is_loopback(public_host or host)
    return plan_exposure(
        what="group",
        host=host,
        public_host=public_host,
        tls=not local and not insecure,
        insecure=insecure,
    )


# The SuperLink of a TLS group listens on loopback behind its Fleet proxy (nginx), which
# checks the upstream's DNS name only, never an IP SAN (docs/security.md).
SUPERLINK_HOST = "127.0.0.1"
SUPERLINK_NAME = "localhost"


def group_certificate_names(exposure: Exposure) -> list[str]:
    """SANs of a group certificate: the advertised host and the bound interface (where
    the Fleet proxy listens), and the loopback address and name of the SuperLink behind
    it, which its own superexec, the ``flwr`` CLI and the proxy dial."""
    names = [exposure.public_host]
    if not is_wildcard(exposure.bind_host):
        names.append(exposure.bind_host)
    names += [SUPERLINK_HOST, SUPERLINK_NAME]
    return list(dict.fromkeys(names))


def make_group_tls(directory: Path, exposure: Exposure) -> TlsFiles | None:
    """The group's key and self-signed certificate in ``directory`` when ``exposure`` is
    TLS, else None (loopback, or explicitly insecure)."""
    if not exposure.tls:
        return None
    return write_group_certificate(directory, group_certificate_names(exposure))


def superlink_tls_args(tls: TlsFiles | None) -> list[str]:
    """``flower-superlink`` flags: the group certificate (also its CA: self-signed), or
    ``--insecure``. One port serves Fleet, Control and Runtime APIs with it."""
    if tls is None:
        return ["--insecure"]
    return [
        "--ssl-ca-certfile",
        str(tls.ca_certfile),
        "--ssl-certfile",
        str(tls.certfile),
        "--ssl-keyfile",
        str(tls.keyfile),
    ]


def supernode_tls_args(root_certificates: Path | None) -> list[str]:
    """``flower-supernode`` flags: trust exactly the group's published certificate, or
    ``--insecure`` (loopback)."""
    if root_certificates is None:
        return ["--insecure"]
    return ["--root-certificates", str(root_certificates)]


def flwr_connection_toml(name: str, address: str, root_certificates: Path | None) -> str:
    """``$FLWR_HOME/config.toml`` with one default connection for the ``flwr`` CLI."""
    tls = (
        f'root-certificates = "{root_certificates}"\n'
        if root_certificates is not None
        else "insecure = true\n"
    )
    return f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n{tls}'


def registry_verify(ca_file: Path | str | None) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for the registry: the system trust store, or exactly ``ca_file``.

    CertificateError (one line) when the file is missing or holds no PEM certificate."""
    if ca_file is None or str(ca_file) == "":
        return True
    path = Path(ca_file)
    try:
        load_certificate(path.read_bytes(), what=f"registry CA {path}")
    except OSError as exc:
        raise CertificateError(f"registry CA {path}: {exc.strerror or exc}") from None
    return ssl.create_default_context(cafile=str(path))
