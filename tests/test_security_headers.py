"""Security headers on every response, as a browser receives them."""

from __future__ import annotations

import pytest

PAGES = ["/", "/play", "/rooms/new", "/join", "/research/login", "/api/play/stats",
         "/api/openapi.json", "/static/css/app.css", "/no-such-page", "/api/no-such-route"]


@pytest.mark.parametrize("url", PAGES)
def test_every_response_carries_the_security_headers(client, url):
    headers = client.get(url).headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"


def test_templates_hold_no_inline_script_or_style(scored_app):
    """What the policy forbids is not in any template (browser tests catch what scripts add)."""
    import re
    from pathlib import Path

    folder = Path(scored_app.template_folder)
    for template in folder.rglob("*.html"):
        text = template.read_text()
        scripts = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", text)
        assert scripts == [], (template, scripts)
        assert not re.search(r'\sstyle="', text), template
        assert not re.search(r'\son[a-z]+="', text), template


def test_session_cookie_is_samesite_lax_and_secure_behind_https(scored_app):
    from webapp.app import create_app

    cookie = scored_app.test_client().post("/api/play/next", json={}).headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie and "Secure" not in cookie
    https = create_app({"DATABASE_URL": scored_app.config["DATABASE_URL"], "SECRET_KEY": "t",
                        "MODEL": scored_app.config["MODEL"], "PUBLIC_URL": "https://humanlm.school.org"})
    cookie = https.test_client().post("/api/play/next", json={}).headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "Secure" in cookie


def test_secret_key_file_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    from webapp import config

    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path / "instance")
    key = config._instance_secret_key()
    path = tmp_path / "instance" / "secret_key"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # as an older install left it
    assert config._instance_secret_key() == key
    assert path.stat().st_mode & 0o777 == 0o600
