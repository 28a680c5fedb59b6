"""The application factory: settings, database, blueprints, Socket.IO and JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import asset_dir, load_settings
from .extensions import db, limiter, rate_limit_storage, socketio, use_peer_safe_websockets


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Application factory: settings, database, blueprints, JSON errors for the API."""
    app = Flask(
        __name__,
        template_folder=str(asset_dir("templates")),
        static_folder=str(asset_dir("static")),
    )
    app.config.update(load_settings(config))
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # no API request needs more
    # Flask's defaults already hold these keys (SameSite None), so setdefault would do nothing.
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if (app.config.get("PUBLIC_URL") or "").startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    db.configure(app.config["DATABASE_URL"], echo=app.config["LOG_SQL"])

    from . import api, security
    from .play import bp as play_bp
    from .research import bp as research_bp
    from .rooms import bp as rooms_bp

    api.register(app)  # before the blueprints: their <int:...> URLs use the bounded converter
    security.register(app)
    app.register_blueprint(play_bp)
    app.register_blueprint(rooms_bp)
    app.register_blueprint(research_bp)
    # async_handlers=False: each connection's events run in its reader thread, in order, instead
    # of one new thread per event; every handler is short (the slow work, scoring prompts and
    # round timers, runs as background tasks). Measured: a burst of 200 answers is handled with
    # 20-35% less server CPU (benchmarks/room_fanout.py).
    app.config["RATELIMIT_STORAGE_URI"] = rate_limit_storage(app.config)
    limiter.init_app(app)
    socketio.init_app(
        app, message_queue=app.config.get("SOCKETIO_MESSAGE_QUEUE"), async_handlers=False
    )
    use_peer_safe_websockets(socketio.server)
    if app.config["TRUSTED_PROXIES"] > 0:
        # Behind nginx every request comes from the proxy's address, so per-address limits
        # (logins, room joins and answers) would count a whole school as one client. Wrapping
        # outside the Socket.IO middleware fixes the address its connections see too.
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    @app.teardown_appcontext
    def remove_session(_exc: BaseException | None) -> None:
        db.session.remove()

    @app.teardown_request
    def forget_routing_miss(_exc: BaseException | None) -> None:
        """Every Socket.IO event runs in a request context for the /socket.io/ URL, which no
        route matches: Flask keeps the NotFound on the request, and its traceback holds the
        frame that holds the request, a reference cycle per event. Dropping it lets the event's
        objects go at once instead of feeding the garbage collector, whose passes paused a
        class's burst of answers (benchmarks/room_fanout.py)."""
        request.routing_exception = None

    @app.context_processor
    def page_limits() -> dict[str, Any]:
        """The limits forms and page scripts share with the server (maxlength, the answer box):
        from the settings table, never copied into templates (base.html hands them to JS)."""
        from .rooms.commands import MAX_ROUNDS
        from .rooms.state import NICKNAME_MAX_CHARS

        return {"limits": {
            "max_guess_chars": app.config["MAX_GUESS_CHARS"],
            "max_nickname_chars": NICKNAME_MAX_CHARS,
            "max_rounds": MAX_ROUNDS,
        }}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=exc.description or exc.name), exc.code
        if exc.code is None or exc.code < 400:
            return exc
        # Allow (405) and Retry-After (429, 503) stay; the body is a page of the site.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return _error_page(exc.code, exc), exc.code, headers

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        app.logger.exception("unhandled error")
        db.session.rollback()
        if request.path.startswith("/api/"):
            return jsonify(error="internal server error; nothing was stored"), 500
        try:
            return _error_page(500, None), 500
        except Exception:  # the error page itself failed (templates missing, ...): plain text
            app.logger.exception("the error page failed")
            return "Internal server error", 500

    from .cli import register_commands

    register_commands(app)
    return app


_ERROR_TITLES = {
    400: "The request could not be read",
    403: "Not allowed",
    404: "This page does not exist",
    405: "This address does not take that request",
    413: "That was too large",
    429: "Too many requests",
    500: "Something went wrong on the server",
    503: "Not ready yet",
}


def _error_page(code: int, exc: HTTPException | None) -> str:
    """A page of the site for an error on a page address (API addresses answer JSON): what
    happened in plain words and the way on (rooms get the join and host pages)."""
    from flask import render_template

    default = type(exc).description if exc is not None else None
    custom = exc is not None and exc.description and exc.description != default
    if custom:
        message = exc.description[0].upper() + exc.description[1:].rstrip(".") + "."
    elif code == 404:
        message = "There is nothing at this address. Check it for typing mistakes, or go on from here."
    elif code == 405:
        message = f"This address cannot be opened with a {request.method} request."
    elif code == 500:
        message = ("The server hit an error; nothing of this request was stored. Try again; if it "
                   "happens again, tell whoever runs this server (the details are in its log).")
    else:
        message = (exc.description if exc is not None else "") or "The request could not be handled."
    rooms = request.path.startswith(("/rooms", "/join"))
    links = ([{"href": "/join", "label": "Join a room"}, {"href": "/rooms/new", "label": "Host a room"},
              {"href": "/", "label": "Home"}] if rooms else
             [{"href": "/", "label": "Home"}, {"href": "/play", "label": "Play"},
              {"href": "/join", "label": "Join a room"}])
    title = _ERROR_TITLES.get(code) or (exc.name if exc is not None else "Error")
    if rooms and code == 404 and custom and request.path.startswith("/rooms/"):
        title = "This room does not exist"
    return render_template("errors/error.html", code=code, title=title, message=message, links=links)
