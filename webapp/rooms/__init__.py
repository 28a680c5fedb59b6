"""Classroom rooms: a teacher-led, shared version of the game.

state.py holds the pure rules, points.py the points and accuracies, commands.py what changes a
room on the database (creating, joining, phases, settings, answers), views.py what its screens
show, routes.py the pages and HTTP API, events.py the Socket.IO events (protocol:
docs/rooms-protocol.md).
"""

from flask import Blueprint

bp = Blueprint("rooms", __name__)

from . import events, routes  # noqa: F401  (registers routes and Socket.IO handlers)
