"""Response headers that make every page safer in a browser, set in one place.

The Content-Security-Policy allows scripts and styles only from this site's own files (no inline
script, no inline style attributes: page data travels in data-* attributes and one JSON block
that browsers never execute), connections only back to this site (Socket.IO, the JSON API), and
no framing by other sites. The analysis report is the one exception: a self-contained HTML file
with its stylesheet and plots inline, so its page may use inline styles (never scripts).
"""

from __future__ import annotations

from flask import Flask, Response, request

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
INLINE_STYLE_ENDPOINTS = {"research.study_report"}  # self-contained report with inline CSS/SVG


def content_security_policy(inline_styles: bool = False) -> str:
    policy = dict(POLICY)
    if inline_styles:
        policy["style-src"] = "'self' 'unsafe-inline'"
    return "; ".join(f"{key} {value}" for key, value in policy.items())


def add_security_headers(response: Response) -> Response:
    inline = request.endpoint in INLINE_STYLE_ENDPOINTS
    response.headers.setdefault("Content-Security-Policy", content_security_policy(inline))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    return response


def register(app: Flask) -> None:
    app.after_request(add_security_headers)
