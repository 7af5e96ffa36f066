"""The hand-parsed hot paths: one pydantic call for a body or a query, instead of FastAPI's
per-field dependency path (which cost more than the rest of the request), and the OpenAPI
entries that document what those routes parse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], raw: bytes) -> ModelT:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid("body", exc) from None


def parse_query(model: type[ModelT], params: Mapping[str, str]) -> ModelT:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise _invalid("query", exc) from None


def _invalid(where: str, exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in exc.errors()])


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body documenting ``model``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


VALIDATION_ERROR: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
}
"""The 422 FastAPI documents for the routes it parses, for a route that parses by hand."""


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters documenting ``model``."""
    props = model.model_json_schema()["properties"]
    return [{"name": k, "in": "query", "required": False, "schema": v} for k, v in props.items()]
