"""The registry URLs a client may use, in the order it tries them: parsed once where they
enter (``--registry-url URL1,URL2``, ``MYCELIUM_REGISTRY_URL``, a group's run config) and
passed on as a :class:`RegistryEndpoints`, never as a string to split again."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

SEPARATOR = ","


class EndpointError(ValueError):
    """A registry URL list that is empty, holds a URL twice, or holds a URL that is not
    ``http(s)://HOST[:PORT][/PATH]`` (the message names it)."""


@dataclass(frozen=True)
class RegistryEndpoints:
    """Registry base URLs (no trailing ``/``), first tried first. Every registry process in
    the list serves the same data (one PostgreSQL): a client keeps to one while it answers
    and moves to the next when it does not (see :class:`~mycelium.client.RegistryClient`)."""

    urls: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.urls:
            raise EndpointError("no registry URL given")
        for url in self.urls:
            _check(url)
        if len(set(self.urls)) != len(self.urls):
            raise EndpointError(f"registry URLs {self} name one URL twice")

    @classmethod
    def parse(cls, text: str) -> RegistryEndpoints:
        """``URL1,URL2,...`` (spaces around the commas allowed); trailing ``/`` dropped."""
        urls = tuple(part.strip().rstrip("/") for part in text.split(SEPARATOR))
        if not any(urls):
            raise EndpointError("no registry URL given")
        if not all(urls):
            raise EndpointError(f"registry URLs {text.strip()!r} hold an empty entry")
        return cls(urls)

    @classmethod
    def of(cls, value: RegistryEndpoints | str) -> RegistryEndpoints:
        """``value`` itself, or the list a string gives (:meth:`parse`)."""
        return value if isinstance(value, RegistryEndpoints) else cls.parse(value)

    @property
    def primary(self) -> str:
        """The URL tried first."""
        return self.urls[0]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Each URL's host name."""
        return tuple(urlsplit(url).hostname or "" for url in self.urls)

    def __str__(self) -> str:
        """The list as given back to ``--registry-url`` or a run config: ``URL1,URL2``."""
        return SEPARATOR.join(self.urls)

    def __len__(self) -> int:
        return len(self.urls)


def _check(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise EndpointError(f"registry URL {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"registry URL {url!r} must be http(s)://HOST[:PORT]")
    if parts.query or parts.fragment or url.endswith("/") or url != url.strip():
        raise EndpointError(f"registry URL {url!r} must be a base URL (no query, no trailing /)")
