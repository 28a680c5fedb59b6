"""Small helpers shared by the JSON routes: error replies and typed fields of a JSON body."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, jsonify, request


def error(message: str, status: int = 400):
    return jsonify(error=message), status


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        abort(400, description="request body must be JSON (Content-Type: application/json)")
    if not isinstance(body, dict):
        abort(400, description="request body must be a JSON object")
    return body


def field(body: dict, name: str, kind: type | tuple[type, ...], *, required: bool = True, default=None):
    """body[name] if it has the expected type; a 400 naming the field otherwise."""
    if name not in body or body[name] is None:
        if required:
            abort(400, description=f"missing field '{name}'")
        return default
    value = body[name]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        abort(400, description=f"field '{name}' must be a number")
    if not isinstance(value, kind):
        abort(400, description=f"field '{name}' has the wrong type")
    return value


def model_display_name() -> str:
    spec = current_app.config["MODEL"]
    return "Gemma 3 270M (base)" if spec.endswith("gemma-3-270m") else spec
