"""Structured logs: one JSON object per line, request ids, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from sdl_core.logging import configure_logging, secret_values
from sdl_core.node_app import create_node_app
from sdl_core.testing.host import TEST_NODE_KEY, TEST_PEER_KEY, make_host


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = configure_logging("json", "debug", secrets=[TEST_NODE_KEY, SecretStr(TEST_PEER_KEY)],
                                stream=buffer)
    yield buffer
    logging.getLogger("darkmesh").removeHandler(handler)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_json_lines_carry_the_fixed_fields_and_extras(stream: io.StringIO) -> None:
    logging.getLogger("darkmesh.test").info("hello %s", "mesh", extra={"dataset": "contacts",
                                                                       "count": 3})
    (line,) = _lines(stream)
    assert line["msg"] == "hello mesh"
    assert line["level"] == "info" and line["logger"] == "darkmesh.test"
    assert line["request_id"] is None
    assert (line["dataset"], line["count"]) == ("contacts", 3)
    assert str(line["ts"]).endswith("+00:00")


def test_secrets_are_scrubbed_from_messages_and_extras(stream: io.StringIO) -> None:
    log = logging.getLogger("darkmesh.test")
    log.warning("refused key %s", TEST_NODE_KEY, extra={"header": f"Bearer {TEST_PEER_KEY}",
                                                        "token": SecretStr("other-secret")})
    (line,) = _lines(stream)
    text = json.dumps(line)
    assert TEST_NODE_KEY not in text and TEST_PEER_KEY not in text
    assert "other-secret" not in text
    assert line["msg"] == "refused key **********"
    assert line["header"] == "Bearer **********"
    assert line["token"] == "**********"


def test_exceptions_are_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad {TEST_NODE_KEY}")
    except ValueError:
        logging.getLogger("darkmesh.test").exception("failed")
    (line,) = _lines(stream)
    assert "ValueError" in str(line["exc"]) and TEST_NODE_KEY not in json.dumps(line)


@pytest.mark.asyncio
async def test_access_log_has_request_id_and_never_the_key(stream: io.StringIO) -> None:
    host = make_host(node_id="node_log")
    app = create_node_app(host)
    await host.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as c:
        r = await c.get("/darkmesh/capabilities?token=abc",
                        headers={"X-Darkmesh-Key": TEST_NODE_KEY, "X-Request-Id": "req-42"})
    await host.stop()
    assert r.headers["x-request-id"] == "req-42"
    access = [line for line in _lines(stream) if line["logger"] == "darkmesh.access"]
    assert access[-1]["request_id"] == "req-42"
    assert access[-1]["path"] == "/darkmesh/capabilities"  # no query string
    assert access[-1]["status"] == 200 and access[-1]["method"] == "GET"
    assert TEST_NODE_KEY not in stream.getvalue() and "abc" not in str(access[-1]["msg"])


def test_text_format_and_bad_format() -> None:
    buffer = io.StringIO()
    handler = configure_logging("text", "info", stream=buffer)
    try:
        logging.getLogger("darkmesh.test").info("plain")
        assert buffer.getvalue().rstrip().endswith("darkmesh.test: plain")
    finally:
        logging.getLogger("darkmesh").removeHandler(handler)
    with pytest.raises(ValueError, match="log format must be json or text"):
        configure_logging("xml", "info")  # type: ignore[arg-type]


def test_secret_values_collects_every_secret_of_the_settings() -> None:
    host = make_host(relay_key="relay-secret-1")
    values = secret_values(*host.loaded_settings())
    assert set(values) == {TEST_NODE_KEY, TEST_PEER_KEY, "relay-secret-1"}
