"""Rendering of the status page and who is looking at it: the templates, their helpers, the viewer.

The routes are in ``gigsterpg/api/routers/status_page.py``; this module
holds what they share and what does not need a request to test.
"""
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs, urlencode

import jinja2

from gigsterpg import status_text
from gigsterpg.config import mask_url
from gigsterpg.lib.status import COUNTS
from gigsterpg.web.chart import runs_chart
from gigsterpg.web.session import COOKIE, Signer

REFRESH_S = 5
FORM_BYTES = 8192

_ENVIRONMENT = jinja2.Environment(loader=jinja2.PackageLoader("gigsterpg.web", "templates"),
                                  autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True)
_ENVIRONMENT.globals.update(
    when=status_text.when, number=status_text.number, accounting=status_text.accounting,
    run_notes=status_text.run_notes, progress=status_text.progress, cell_text=status_text.cell_text, counts=COUNTS,
    interrupted_step=status_text.INTERRUPTED_STEP, reject_count=status_text.reject_count,
    projected=status_text.PROJECTED, outcome_text=status_text.outcome_text)


def reject_url(collection: str, reason: str, after: Optional[str] = None) -> str:
    query = {"collection": collection, "reason": reason, **({"after": after} if after else {})}
    return "/page/rejects?" + urlencode(query)


def restart_url(job: dict) -> str:
    return f"/page/jobs/{job['kind']}/{job['id']}/restart"


def param_fields(name: str) -> list:
    """The form of a pipeline's run on the page, from its declared parameters (those the API takes)."""
    from gigsterpg import pipelines
    from gigsterpg.pipelines.contract import CHOICE, FLAG

    found = pipelines.get(name)
    return [{"name": param.name, "input": "checkbox" if param.kind == FLAG else "select" if param.kind == CHOICE
             else "text", "choices": param.choices, "required": param.required, "help": param.description,
             "hint": (param.kind + (", comma-separated" if param.many else "")).replace("_", " ")}
            for param in (found.params if found else ()) if param.http]


def run_params(name: str, fields: dict) -> dict:
    """A pipeline form's fields as POST /runs' parameters: blanks left out, a checkbox true, lists split."""
    from gigsterpg import pipelines
    from gigsterpg.pipelines.contract import FLAG

    found = pipelines.get(name)
    values = {}
    for param in (found.params if found else ()):
        given = fields.get(param.name, "").strip()
        if not param.http or not given:
            continue
        if param.kind == FLAG:
            values[param.name] = True
        elif param.many:
            values[param.name] = [part.strip() for part in given.split(",") if part.strip()]
        else:
            values[param.name] = given
    return values


_ENVIRONMENT.globals.update(reject_url=reject_url, restart_url=restart_url, param_fields=param_fields)


def render(name: str, **context) -> str:
    """The template ``name`` with ``context``; ``nonce`` (for the inline style and script) added."""
    context.setdefault("active", False)
    context.setdefault("refresh_s", REFRESH_S)
    context.setdefault("signed_in_by_cookie", False)
    context.setdefault("csrf", "")
    return _ENVIRONMENT.get_template(name).render(**context)


def security_headers(nonce: str) -> dict:
    """No framing, no sniffing, no caching; only this page's own inline style and script run."""
    return {"Content-Security-Policy": (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}';"
                                        " img-src 'self' data:; connect-src 'self'; form-action 'self';"
                                        " frame-ancestors 'none'; base-uri 'none'"),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
            "X-Frame-Options": "DENY"}


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


@dataclass
class Viewer:
    """Who looks: ``by`` is "bearer" (a script), "cookie" (a person signed in) or "open" (no token set)."""

    by: str
    csrf: str
    nonce: Optional[str] = None


def viewer(signer: Signer, token: Optional[str], authorization: Optional[str],
           cookie: Optional[str]) -> Optional[Viewer]:
    """The viewer of a request, or None when it is not signed in."""
    if token is None:
        return Viewer("open", signer.csrf("open"), "open")
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return Viewer("bearer", signer.csrf("bearer"))
    nonce = signer.session_nonce(cookie)
    if nonce is not None:
        return Viewer("cookie", signer.csrf(nonce), nonce)
    return None


def form_fields(body: bytes) -> dict:
    """An ``application/x-www-form-urlencoded`` body as {name: first value}."""
    parsed = parse_qs(body[:FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def status_context(status: dict, view: Viewer, notice: Optional[str] = None, notice_bad: bool = False) -> dict:
    """What ``status.html`` takes."""
    return {"status": status, "chart": runs_chart(status["runs"]), "active": status["active"],
            "csrf": view.csrf, "signed_in_by_cookie": view.by == "cookie",
            "notice": mask_url(notice) if notice else None, "notice_bad": notice_bad}


__all__ = ["COOKIE", "Signer", "Viewer", "form_fields", "new_nonce", "param_fields", "render", "reject_url",
           "restart_url", "run_params", "security_headers", "status_context", "viewer"]
