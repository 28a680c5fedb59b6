"""The solo game: the home page, the game page and the JSON API they use."""

from flask import Blueprint

bp = Blueprint("play", __name__)

from . import routes  # noqa: F401  (registers the routes on bp)
