"""Online studies: researcher login, study set-up, the dashboard, and the participant journey.

The rules are plain functions on a database session, one module per part of a study's life:
setup.py validates a spec and creates the study, assignment.py chooses a participant's items
(least filled first), participants.py runs a participant through them (entry, answers, checks,
the end), dashboard.py counts what the researcher sees. auth.py holds the accounts and
`login_required`, routes.py the pages and JSON API, cli.py the `humanlm researcher ...` and
`humanlm study ...` commands.

CSRF: every POST to this blueprint (forms and the participant API) must carry the session's
CSRF token (a hidden field, or the X-CSRFToken header from JavaScript). The check is switched on
for this blueprint only (WTF_CSRF_CHECK_DEFAULT is False), so the game's JSON API, the rooms and
Socket.IO keep working exactly as before.
"""

from flask import Blueprint, Flask
from flask_wtf.csrf import CSRFProtect

bp = Blueprint("research", __name__)
csrf = CSRFProtect()


@bp.record_once
def _init_app(state) -> None:
    app: Flask = state.app
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in routes.protect_forms
    # A participant may keep a study page open for longer than an hour; the token lives as long
    # as the session that signs it (researcher logins expire on their own, see auth.py).
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)


from . import routes  # noqa: F401  (registers the routes on bp)
