"""The status page's session cookie and its CSRF tokens, signed with a key derived from the API token.

A cookie is ``<issued>.<nonce>.<signature>``: HMAC-SHA256 over issued time
and nonce, so only a holder of the token can make one, and changing the token
signs everyone out. A form's CSRF token is an HMAC of the session's nonce: a
page of another site can neither read it nor guess it.
"""
import hashlib
import hmac
import secrets
import time
from typing import Optional

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
