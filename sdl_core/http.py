"""HTTP helpers shared by the node and relay apps: JSON errors, capped bodies."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sdl_core.errors import HTTPProblem

log = logging.getLogger("darkmesh.http")


def problem_response(problem: HTTPProblem) -> JSONResponse:
    body: dict[str, Any] = {"detail": problem.detail}
    if problem.reason:
        body["reason"] = problem.reason
    return JSONResponse(body, status_code=problem.status, headers=problem.headers)


def validation_response(exc: ValidationError) -> JSONResponse:
    """422 in FastAPI's validation shape (``detail`` a list of objects)."""
    detail = [
        {
            "type": err.get("type"),
            "loc": ["body", *[str(p) for p in err.get("loc", ())]],
            "msg": err.get("msg"),
        }
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def starlette_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.status_code != 404 else "Not Found"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem_response(exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    StarletteHTTPException: starlette_http_error,
    HTTPProblem: problem_error,
}


async def read_capped_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes with 413 (never buffering more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPProblem(
                    413, f"request body exceeds {limit} bytes", reason="body_too_large"
                )
        except ValueError:
            raise HTTPProblem(400, "invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, f"request body exceeds {limit} bytes", reason="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON (RFC 8259) and which no
    # store can hold; refuse them as a parse error instead of failing later.
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes, *, empty_is_object: bool = True) -> dict[str, Any]:
    """Parse a JSON object body: 400 ``invalid JSON body: …`` or ``request body must be a
    JSON object`` (the relay's upstream messages)."""
    if not body.strip():
        if empty_is_object:
            return {}
        raise HTTPProblem(400, "request body must be a JSON object")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPProblem(400, "request body must be a JSON object")
    return value
