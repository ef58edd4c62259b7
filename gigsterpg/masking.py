"""The one masker of gigsterpg: every password of every connection string in a text replaced by ``***``.

A module of its own, importing nothing of gigsterpg, so that the error family (``exc.py``) and the settings
(``config.py``, which keeps these names importable) both use it without importing each other.
"""
import re
from typing import Optional
from urllib.parse import unquote

MASK = "***"
# Names of settings whose value is a secret, in a URL's query or a libpq key=value string: password,
# sslpassword, tlsCertificateKeyFilePassword, passfile (harmless to hide), any *secret* or *token*, and
# MongoDB's authMechanismProperties (it may carry AWS_SESSION_TOKEN:...).
_SECRET_KEY = re.compile(r"pass(?:word|wd|phrase|file)?$|pwd$|secret|token|authmechanismproperties", re.IGNORECASE)
# A URL runs from its scheme to the next white space; a key=value pair's value is single-quoted (backslash
# escapes inside; an unclosed quote runs to the end) or runs to the next unescaped white space (libpq's rules).
# A run of backslashes escapes the next character whatever its length: a repr() doubles them. An unquoted
# value goes on over words not followed by '=' up to a quote or comma (a password with a space: libpq refuses
# it, and its message quotes the string), unless its first word ends with a comma (gigsterpg's "at ..., why").
_URL_OR_PAIR = re.compile(
    r"(?P<url>\b[a-zA-Z][a-zA-Z0-9+.\-]*://\S*)"
    r"|(?P<key>\b[a-zA-Z_][\w.\-]*)(?P<equals>\s*=\s*)")
_VALUE = re.compile(
    r"'(?:[^'\\]|\\+.)*(?:'|\\*$)|(?>(?:[^\s'\\]|\\+.)(?:[^\s\\]|\\+.)*)"
    r"(?:(?<!,)(?:[ \t]+(?![\w.\-]+\s*=)(?:[^\s\\'\",]|\\+.)+)+)?",
    re.DOTALL)
# libpq's complaints about a connection string quote a piece of it, which may be a piece of the password.
_QUOTED_PIECE = re.compile(r'(?P<head>(?:missing "=" after|invalid percent-encoded token:|forbidden value %00 in'
                           r' percent-encoded value:|invalid integer value) ")(?P<piece>[^"]*)(?P<tail>")')
_KNOWN_SECRETS: set = set()
_MIN_KNOWN = 6  # a shorter password is found by its place only: replacing it everywhere would garble text


def mask_secrets(text: str) -> str:
    """``text`` with every password of every connection string in it replaced by ``***``.

    The one masker of gigsterpg: every message, record, log line, page and answer that may hold a
    connection string goes through it. It knows every form libpq and pymongo accept, alone or quoted
    inside a longer message (a driver's error): URLs (``postgresql://``, ``postgres://``, ``mongodb://``,
    ``mongodb+srv://``, any scheme) with ``user:password@`` before one host or several, and secret query
    options (``?password=``, ``sslpassword``, ``tlsCertificateKeyFilePassword``, ``authMechanismProperties``);
    libpq's ``key=value`` strings (``password=…``, ``sslpassword=…``, quoted with backslash escapes or not);
    and the pieces libpq's parse errors quote. When in doubt it hides more, never less. Passwords met in the
    settings (``remember_secrets``) are also replaced wherever they appear, whatever the form.
    """
    text = _apply_rules(text or "")
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


mask_url = mask_secrets  # the older name, kept for the call sites that use it


def mask_secrets_in(value):
    """``value`` with ``mask_secrets`` applied to every string in it (a record's dicts and lists, keys too)."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {mask_secrets_in(key): mask_secrets_in(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets_in(item) for item in value)
    return value


def _apply_rules(text: str, hidden: Optional[list] = None) -> str:
    """The rules of ``mask_secrets``; what they hide is appended to ``hidden``."""
    def hide(piece: str) -> str:
        if hidden is not None:
            hidden.append(piece)
        return MASK

    def one_url(url: str) -> str:
        scheme, rest = url.split("://", 1)
        at = rest.rfind("@")  # the last: a careless password may hold a raw @, / or ? (an @ in a query hides more)
        if at >= 0:
            user, colon, password = rest[:at].partition(":")
            if colon:
                rest = user + ":" + hide(password) + rest[at:]
        head, question, query = rest.partition("?")
        if question:
            pairs = re.split(r"([&;])", query)
            for i in range(0, len(pairs), 2):
                key, equals, value = pairs[i].partition("=")
                if equals and _SECRET_KEY.search(unquote(key)):
                    pairs[i] = key + "=" + hide(value)
            rest = head + "?" + "".join(pairs)
        return scheme + "://" + rest

    # A secret's value is hidden; any other pair's value is scanned on (a URL may be inside, or another pair:
    # a=b=password=x), one match after another: no recursion, no value read twice.
    parts, at = [], 0
    for match in iter(lambda: _URL_OR_PAIR.search(text, at), None):
        parts.append(text[at:match.end()] if match.group("url") is None else text[at:match.start()])
        at = match.end()
        if match.group("url") is not None:
            parts.append(one_url(match.group("url")))
        elif _SECRET_KEY.search(match.group("key")) and re.match(r"\*\*\*['\",]?(?=\s|$)", text[at:at + 5]):
            parts.append(MASK)  # masked already (a message built from masked parts): as it is
            at += len(MASK)
        elif _SECRET_KEY.search(match.group("key")):
            value = _VALUE.match(text, at)
            if value:
                parts.append(hide(value.group()))
                at = value.end()
    text = "".join(parts) + text[at:]
    return _QUOTED_PIECE.sub(lambda m: m.group("head") + hide(m.group("piece")) + m.group("tail"), text)


def _distinct(secret: str) -> bool:
    """Whether ``secret`` may be replaced wherever it appears without garbling the text around it."""
    return len(secret) >= _MIN_KNOWN and not secret.isalpha() and not secret.isdigit()


def remember_secrets(*connection_strings: Optional[str]) -> None:
    """Note the passwords of these connection strings: ``mask_secrets`` then hides them anywhere.

    For what the drivers may print of them that no rule finds by its place (decoded, unescaped, quoted
    in a message of their own). A password that also appears in its string's other parts (a user or host
    of the same name), of fewer than 6 characters, or only letters or only digits (a word, a number: the
    compose file's "password") is left to the rules: replacing it everywhere would garble the messages.
    """
    for value in connection_strings:
        if not value:
            continue
        found: list = []
        masked = _apply_rules(value, found)
        try:
            from psycopg.conninfo import conninfo_to_dict
            found += [str(v) for k, v in conninfo_to_dict(value).items() if _SECRET_KEY.search(k) and v]
        except Exception:  # not libpq's (a MongoDB URL), or malformed: the rules' pieces do
            pass
        found += [unquote(piece) for piece in found] + [piece.strip("'") for piece in found]
        for secret in found:
            if _distinct(secret) and secret not in masked and len(_KNOWN_SECRETS) < 256:
                _KNOWN_SECRETS.add(secret)


def remember_secret(secret: Optional[str]) -> None:
    """Note one secret itself (the API's token): ``mask_secrets`` then hides it anywhere, if it is distinct."""
    if secret and _distinct(secret):
        _KNOWN_SECRETS.add(secret)
