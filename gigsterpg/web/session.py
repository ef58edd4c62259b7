"""The status page's session cookie and its CSRF tokens, signed with a key derived from the API token.

A cookie is ``<issued>.<nonce>.<signature>``: HMAC-SHA256 over issued time
and nonce, so only a holder of the token can make one, and changing the token
signs everyone out. A form's CSRF token is an HMAC of the session's nonce: a
page of another site can neither read it nor guess it.

A signed cookie is valid only while its session is open in ``page_sessions``
(``open_session`` at sign-in, ``close_session`` at sign-out): signing out ends
the session at once, on every server sharing the database and across restarts,
however long the cookie had left. The table holds a hash of the nonce only.
"""
import hashlib
import hmac
import secrets
import time
from typing import Optional

from sqlalchemy import text

COOKIE = "gigsterpg_session"
MAX_AGE_S = 12 * 3600


class Signer:
    """Signs and checks session cookies and CSRF tokens.

    Args:
        token: the API's bearer token; None (serving without one) signs with a random key of this process.
    """

    def __init__(self, token: Optional[str], max_age_s: int = MAX_AGE_S):
        secret = token.encode() if token is not None else secrets.token_bytes(32)
        self.key = hmac.new(secret, b"gigsterpg status page", hashlib.sha256).digest()
        self.max_age_s = max_age_s

    def _mac(self, message: str) -> str:
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: Optional[float] = None) -> str:
        """A fresh cookie value."""
        body = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac('session.' + body)}"

    def session_nonce(self, value: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """The nonce of a valid, unexpired cookie value; None for anything else."""
        issued, _, rest = (value or "").partition(".")
        nonce, _, signature = rest.partition(".")
        if not (issued.isdigit() and nonce and signature):
            return None
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged cookie would be a 500).
        if not hmac.compare_digest(signature.encode(), self._mac(f"session.{issued}.{nonce}").encode()):
            return None
        age = (now if now is not None else time.time()) - int(issued)
        return nonce if 0 <= age <= self.max_age_s else None

    def csrf(self, nonce: str) -> str:
        """The CSRF token of the session with ``nonce``."""
        return self._mac("csrf." + nonce)

    def csrf_ok(self, nonce: Optional[str], sent: Optional[str]) -> bool:
        return bool(nonce and sent) and hmac.compare_digest(self.csrf(nonce).encode(), sent.encode())


def session_id(nonce: str) -> str:
    """The key of a session in ``page_sessions``: a hash of its nonce (the table cannot make a cookie)."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def open_session(connection, nonce: str, max_age_s: int = MAX_AGE_S) -> None:
    """Record a new session (in the caller's transaction); the expired ones go."""
    connection.execute(text("DELETE FROM page_sessions WHERE expires_at < now()"))
    connection.execute(text("INSERT INTO page_sessions (id, expires_at) VALUES (:id, now() + make_interval(secs =>"
                            " :age))"), {"id": session_id(nonce), "age": max_age_s})


def session_is_open(connection, nonce: str) -> bool:
    """Whether the session with ``nonce`` is signed in: opened, not closed, not expired."""
    return connection.execute(text("SELECT 1 FROM page_sessions WHERE id = :id AND expires_at > now()"),
                              {"id": session_id(nonce)}).first() is not None


def close_session(connection, nonce: str) -> None:
    """End the session with ``nonce``: its cookie signs in nowhere from now on."""
    connection.execute(text("DELETE FROM page_sessions WHERE id = :id"), {"id": session_id(nonce)})
