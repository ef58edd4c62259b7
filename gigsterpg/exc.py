"""The one error family of gigsterpg.

Every error a user can cause or meet ends up as a ``GigsterPgError``; its
``str()`` is the one line the CLI prints after ``FAILED:``. Driver errors
(psycopg, pymongo) are translated into these at the boundary, in
``gigsterpg.connections``.
"""
from gigsterpg.masking import mask_secrets


class GigsterPgError(Exception):
    """Base of every error gigsterpg raises on purpose.

    Args:
        what: what failed, e.g. "cannot connect to PostgreSQL at ...".
        why: the cause, in a few words.
        todo: what the user can do about it.
    """

    def __init__(self, what: str, why: str = "", todo: str = ""):
        # Masked here, once for every place an error goes (a message, a run record, a log, an answer): a
        # connection string in it shows no password.
        self.what, self.why, self.todo = (mask_secrets(part) if part else part for part in (what, why, todo))
        super().__init__(", ".join(part for part in (self.what, self.why, self.todo) if part))


class TransientError(GigsterPgError):
    """A failure that a retry may cure: lost connection, server restarting."""


class TerminalError(GigsterPgError):
    """A failure that a retry will not cure: bad settings, missing rights."""


class ConfigError(TerminalError):
    """A setting or argument is missing or malformed."""

    def __init__(self, what: str, why: str = "", todo: str = "", value=None):
        self.value = value
        super().__init__(what, why, todo)


class ConnectError(TransientError):
    """A database server cannot be reached or refused the login."""

    def __init__(self, what: str, why: str = "", todo: str = "", url: str = ""):
        self.url = url
        super().__init__(what, why, todo)


class AuthError(TerminalError):
    """A database server rejected the credentials."""

    def __init__(self, what: str, why: str = "", todo: str = "", url: str = ""):
        self.url = url
        super().__init__(what, why, todo)


class PrivilegeError(TerminalError):
    """The PostgreSQL role lacks a right the sync needs."""


class SourceError(TerminalError):
    """The MongoDB source is not what the sync expects (missing collection)."""

    def __init__(self, what: str, why: str = "", todo: str = "", collection: str = ""):
        self.collection = collection
        super().__init__(what, why, todo)


class TableNotFoundError(SourceError):
    """The PostgreSQL table an export names does not exist (or the role cannot see it)."""


class NoPrimaryKeyError(SourceError):
    """The PostgreSQL table an export names has no primary key to be the documents' ``_id``."""


class SyncLockedError(TerminalError):
    """Another sync holds the lock on the target database."""


class Interrupted(TerminalError, KeyboardInterrupt):
    """Work stopped on purpose before its end (a server stopping its jobs).

    Also a ``KeyboardInterrupt``, so that whatever records Ctrl-C as an interruption (a sync's
    run record, a snapshot's ledger) records this one the same way.
    """

    def __init__(self, what: str = "interrupted", why: str = "", todo: str = ""):
        super().__init__(what, why, todo)


class RejectedDocument(TerminalError):
    """One document cannot be stored; carries the reason a person reads.

    Raised by the pure document -> row mappings; the bulk path records it as
    a reject and goes on, ``mongo_to_pg`` lets it propagate.
    """

    def __init__(self, reason: str, field: str = "", value=None, detail: str = ""):
        self.reason = reason
        self.field = field
        self.value = value
        self.detail = detail or _describe(reason, field, value)
        # Not masked: the document's own data, recorded as it is (and a reject per document stays cheap).
        self.what, self.why, self.todo = self.detail, "", ""
        Exception.__init__(self, self.detail)


def _describe(reason: str, field: str, value) -> str:
    """``reason: field=value``, the value cut short so a 10 MB string stays one readable line."""
    if not field:
        return reason
    if isinstance(value, str) and len(value) > 100:
        shown = f"{value[:80]!r}... ({len(value)} characters)"
    else:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:100] + "..."
    return f"{reason}: {field}={shown}"
