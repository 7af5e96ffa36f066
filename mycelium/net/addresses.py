"""Address rules: which interface a process binds, which name it advertises, and whether
that exposure needs TLS.

One pure function, :func:`plan_exposure`, decides for the registry, a group's SuperLink
and a node alike; every refusal is an :class:`AddressError` with a one-line message. The
rule is Flower's own: off loopback, TLS material is required unless ``--insecure`` is
given explicitly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class AddressError(ValueError):
    """A bind or advertise request the exposure rule refuses (message is one line)."""


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_wildcard(host: str) -> bool:
    """True for the bind-all addresses (``0.0.0.0``, ``::``)."""
    return host.strip() in WILDCARD_HOSTS


def is_loopback(host: str) -> bool:
    """True for loopback IPs (127.0.0.0/8, ::1) and the usual loopback names.

    Any other name counts as reachable from other hosts: we do not resolve names here,
    so a name that happens to resolve to loopback is still treated as public (the safe
    side of the rule).
    """
    bare = strip_brackets(host.strip()).lower().rstrip(".")
    if bare in LOOPBACK_NAMES or bare.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 literal."""
    bare = strip_brackets(host)
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def split_host_port(address: str) -> tuple[str, int]:
    """Inverse of :func:`host_port`; AddressError for anything else."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{address!r} is not HOST:PORT")
    return strip_brackets(host), int(port_text)


@dataclass(frozen=True)
class Exposure:
    """Where a process listens and what it tells other hosts, decided by :func:`plan_exposure`."""

    bind_host: str
    public_host: str
    tls: bool

    @property
    def local_only(self) -> bool:
        """True when nothing leaves loopback (the one-machine demo)."""
        return is_loopback(self.bind_host) and is_loopback(self.public_host)

    @property
    def local_host(self) -> str:
        """The address this host itself uses to reach the listener (wildcard -> loopback)."""
        if not is_wildcard(self.bind_host):
            return self.bind_host
        return "::1" if ":" in self.bind_host else "127.0.0.1"

    def advertised(self, port: int) -> str:
        """``PUBLIC_HOST:PORT``, what the registry publishes."""
        return host_port(self.public_host, port)


def plan_exposure(
    *,
    what: str,
    host: str,
    public_host: str | None = None,
    tls: bool,
    insecure: bool = False,
    tls_hint: str = "TLS material",
) -> Exposure:
    """Decide bind and advertised host for ``what`` (e.g. "registry"), or refuse.

    ``public_host`` defaults to ``host`` unless ``host`` is a wildcard. Refused: an empty
    host; advertising a wildcard; binding loopback while advertising another host (nobody
    could connect) or the reverse (others would be told to connect to themselves); any
    exposure off loopback without ``tls`` unless ``insecure``; and ``insecure`` together
    with ``tls`` (contradictory, as in Flower).
    """
    host = host.strip()
    if not host:
        raise AddressError(f"{what}: --host must not be empty")
    if public_host is None or not public_host.strip():
        if is_wildcard(host):
            raise AddressError(
                f"{what}: --host {host} binds every interface; give --public-host, the name "
                "or address other hosts use to reach this one"
            )
        public_host = host
    public_host = public_host.strip()
    if is_wildcard(public_host):
        raise AddressError(f"{what}: --public-host {public_host} is not an address others can use")
    if is_loopback(host) and not is_loopback(public_host):
        raise AddressError(
            f"{what}: binds loopback {host} but advertises {public_host}; other hosts could "
            "not connect (bind the interface they reach, or 0.0.0.0)"
        )
    if is_loopback(public_host) and not is_loopback(host):
        raise AddressError(
            f"{what}: binds {host} but advertises loopback {public_host}; other hosts would "
            "connect to themselves (give --public-host)"
        )
    if tls and insecure:
        raise AddressError(f"{what}: --insecure conflicts with {tls_hint}; give one or the other")
    exposure = Exposure(bind_host=host, public_host=public_host, tls=tls)
    if not tls and not insecure and not exposure.local_only:
        raise AddressError(
            f"{what}: refusing to expose {host} without TLS; give {tls_hint}, "
            "or --insecure to accept plaintext"
        )
    return exposure


def check_registry_url(url: str, *, ca_file: str | None = None, insecure: bool = False) -> str:
    """Validate a registry URL a client is about to use; return it without a trailing /.

    Plain ``http://`` is allowed to loopback only (tokens would cross the wire in clear)
    unless ``insecure``; a CA file makes sense only with ``https://``.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressError(f"registry URL {url!r} must be http(s)://HOST[:PORT]")
    if parts.scheme == "http":
        if ca_file:
            raise AddressError(f"--registry-ca given but the registry URL {url!r} is http://")
        if not insecure and not is_loopback(parts.hostname):
            raise AddressError(
                f"registry URL {url!r} is plain http to another host; use https:// "
                "(with --registry-ca), or --insecure to accept plaintext"
            )
    return url.strip().rstrip("/")


def check_shared_network(what: str, registry_url: str, exposure: Exposure) -> None:
    """Refuse to advertise loopback when the registry, hence the network, is elsewhere:
    members on other hosts would dial themselves."""
    registry_host = urlsplit(registry_url).hostname or ""
    if exposure.local_only and not is_loopback(registry_host):
        raise AddressError(
            f"{what}: the registry is on another host ({registry_host}) but groups would "
            f"bind loopback {exposure.bind_host}; give --host (and --public-host)"
        )
