"""``mycelium certs``: a network CA and a server certificate for the registry's names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium.cli._common import fail


def certs(
    out: Annotated[
        Path,
        typer.Option(
            resolve_path=True,
            help="Folder for ca.pem, ca.key, server.pem, server.key (an existing CA there "
            "is reused).",
        ),
    ],
    host: Annotated[
        list[str],
        typer.Option(help="Name or IP the server is reached at; repeat for several."),
    ],
) -> None:
    """Make a network CA and a server certificate for --host names (registry HTTPS).

    Give ca.pem to every node and group host (--registry-ca); keep ca.key offline.
    """
    from mycelium.net.certs import CertificateError, write_network_certs

    try:
        made = write_network_certs(out, host)
    except (CertificateError, OSError) as exc:
        raise fail(str(exc)) from None
    verb = "made" if made.ca_created else "reused"
    typer.echo(f"{verb} CA {made.ca}")
    typer.echo(f"server certificate {made.server_cert} for {', '.join(host)}")
    typer.echo(f"server key {made.server_key} (mode 0600)")
