"""The JSON API's shared plumbing: reading a body safely, validating it against its declared
pydantic model, error replies, and the OpenAPI document built from those same declarations.

A route declares what it accepts with `@accepts(body=Model)` or `@accepts(query=Model)`; the
declaration is the validation (`parse_body`/`parse_query`) and the documentation
(`/api/openapi.json`), so the two cannot drift apart. Fuzz tests read the document.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, current_app, jsonify, request
from pydantic import BaseModel
from werkzeug.routing import IntegerConverter

from .answers import DB_INT, AnswerRefused, Payload, parse
from .textcheck import storable_text_problem
from .version import __version__

MAX_JSON_DEPTH = 32


class DbIntConverter(IntegerConverter):
    """`<int:...>` in every URL, bounded to what a database integer column holds (32 bits on
    PostgreSQL): a larger number is a 404 like any other unknown id, instead of an overflow
    inside the database driver."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None,
                 max: int | None = DB_INT[1], signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def error(message: str, status: int = 400):
    return jsonify(error=message), status


def json_depth(value: Any, limit: int) -> int:
    """How deeply a parsed JSON value nests (counting stops once past `limit`)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        abort(400, description=f"the JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if body is None:
        abort(400, description="request body must be JSON (Content-Type: application/json)")
    if not isinstance(body, dict):
        abort(400, description="request body must be a JSON object")
    if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        abort(400, description=f"the JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return body


def _validated(model: type[Payload], data: dict) -> Any:
    try:
        return parse(model, data, max_chars=current_app.config["MAX_GUESS_CHARS"])
    except AnswerRefused as refused:
        abort(refused.status, description=refused.message)


def parse_body(model: type[Payload]) -> Any:
    """The JSON body validated against `model`; a 400 naming the first bad field otherwise."""
    return _validated(model, json_body())


def parse_query(model: type[Payload]) -> Any:
    """The query string validated against `model` (each parameter given at most once)."""
    args = request.args
    repeated = [k for k in args if len(args.getlist(k)) > 1]
    if repeated:
        abort(400, description=f"give '{repeated[0]}' once")
    return _validated(model, args.to_dict())


def accepts(*, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
            summary: str = "") -> Callable:
    """Declare what a JSON route accepts (used by the OpenAPI document and the fuzz tests)."""

    def mark(view: Callable) -> Callable:
        view.api_spec = {"body": body, "query": query, "summary": summary}  # type: ignore[attr-defined]
        return view

    return mark


def model_display_name() -> str:
    spec = current_app.config["MODEL"]
    return "Gemma 3 270M (base)" if spec.endswith("gemma-3-270m") else spec


# ------------------------------------------------------------------------------------ OpenAPI

ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
}
MAX_CHARS_FIELDS = ("text",)  # bounded by the MAX_GUESS_CHARS setting, not by a constant


def _schema(model: type[BaseModel], max_chars: int) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in MAX_CHARS_FIELDS:
        if name in schema.get("properties", {}):
            schema["properties"][name]["maxLength"] = max_chars
    return schema


def _path_parameters(rule) -> tuple[str, list[dict]]:
    path, params = rule.rule, []
    for name, converter in rule._converters.items():
        if isinstance(converter, IntegerConverter):
            schema = {"type": "integer", "minimum": 0, "maximum": DB_INT[1]}
        else:
            schema = {"type": "string", "minLength": 1, "maxLength": 200}
        path = path.replace(f"<{_rule_part(rule, name)}>", "{" + name + "}")
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return path, params


def _rule_part(rule, name: str) -> str:
    """The text inside <...> for a variable of a rule, e.g. 'int:study_id' or 'slug'."""
    start = rule.rule.index(name + ">")
    return rule.rule[rule.rule.rindex("<", 0, start) + 1 : start + len(name)]


def openapi_document(app: Flask) -> dict:
    """OpenAPI 3.1 for every route under /api/ (JSON in, JSON out)."""
    max_chars = app.config["MAX_GUESS_CHARS"]
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/") or rule.endpoint == "api_docs.openapi":
            continue
        view = app.view_functions[rule.endpoint]
        spec = getattr(view, "api_spec", {"body": None, "query": None, "summary": ""})
        path, params = _path_parameters(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": spec["summary"] or (view.__doc__ or rule.endpoint).strip().split("\n")[0],
                "parameters": list(params),
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "default": {"description": "an error, with a message for people",
                                "content": {"application/json": {"schema": ERROR_SCHEMA}}},
                },
            }
            if spec["query"] is not None:
                schema = _schema(spec["query"], max_chars)
                for name, prop in schema.get("properties", {}).items():
                    operation["parameters"].append({
                        "name": name, "in": "query", "schema": prop,
                        "required": name in schema.get("required", []),
                    })
            if spec["body"] is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(spec["body"], max_chars)}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "humanlm JSON API", "version": __version__,
                 "description": "Every request body is validated against the schema shown here; "
                                "a refused request gets a 4xx JSON {\"error\": message} and stores nothing."},
        "paths": paths,
    }


def refuse_unstorable_request() -> None:
    """Before every request: an address, query or form field holding NUL or a lone surrogate is
    a 400, not a database error later (PostgreSQL refuses NUL in any text it is asked about)."""
    fields = [("address", request.path)]
    fields += [(f"parameter '{k}'", v) for k, vs in request.args.lists() for v in vs]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields += [(f"field '{k}'", v) for k, vs in request.form.lists() for v in vs]
    for name, value in fields:
        problem = storable_text_problem(value)
        if problem:
            abort(400, description=f"the {name} {problem}")


def register(app: Flask) -> None:
    """Bounded integer URLs everywhere, text checks on every request, and /api/openapi.json."""
    app.url_map.converters["int"] = DbIntConverter
    app.before_request(refuse_unstorable_request)

    def openapi():
        return app.response_class(json.dumps(openapi_document(app), indent=1),
                                  mimetype="application/json")

    app.add_url_rule("/api/openapi.json", "api_docs.openapi", openapi)
