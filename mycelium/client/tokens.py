"""Operator token files: secrets come from files, never from the command line (``ps`` shows
it) or logs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """A token file is missing, unreadable, empty or too short (the message never shows it)."""


def read_token_file(path: Path) -> str:
    """The secret in ``path`` (an operator token), surrounding whitespace stripped."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise TokenFileError(f"token file {path}: {reason}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileError(
            f"token file {path} must hold one token of at least {MIN_TOKEN_CHARS} characters "
            "and no whitespace (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def write_token_file(path: Path) -> str:
    """Write a new random token to ``path`` (mode 0600) and return it: an operator token
    for ``registry --operator-token-file`` and ``group --operator-token-file``."""
    token = secrets.token_urlsafe(32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token
