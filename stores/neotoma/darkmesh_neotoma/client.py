"""The HTTP client Darkmesh uses against Neotoma (``neotoma.md`` §1–2).

What it never does, on purpose: sign a query string (reads go through
``POST /entities/query``), sign a grants call, read a single entity with a signature
(§1.4 quirk 4), or send an ``expires`` parameter (the signer's ``neotoma`` profile sends
only ``created``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from darkmesh_neotoma.settings import NeotomaSettings, authority_of
from sdl_core import Signer

log = logging.getLogger("darkmesh.neotoma")

WELL_KNOWN = "/.well-known/aauth-resource.json"
MAX_OFFSET = 2000  # Neotoma refuses a larger offset (§2.3)
SIGNER_ROLE = "node"


class NeotomaError(Exception):
    """Neotoma answered with an HTTP error."""

    def __init__(self, status: int, body: str, *, path: str) -> None:
        self.status = status
        self.body = body
        self.path = path
        super().__init__(f"Neotoma {path} answered {status}: {body[:500]}")

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


class NeotomaUnavailable(Exception):
    """Neotoma could not be reached (transport error or timeout)."""


def compact_json(value: Any) -> bytes:
    """The exact bytes sent for a JSON body (stable, so retries are byte-identical)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(kw_only=True)
class Page:
    entities: list[dict[str, Any]]
    next_cursor: str | None
    raw_count: int


@dataclass(kw_only=True)
class Listing:
    """Every entity read for one walk, and how the walk went."""

    entities: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    stopped: str = ""  # why paging stopped: end | cap | empty | repeated_cursor | offset_limit


class NeotomaClient:
    """Async calls to one Neotoma; one instance per node process."""

    def __init__(
        self,
        settings: NeotomaSettings,
        *,
        signer: Signer | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer if signer is not None and signer.has_role(SIGNER_ROLE) else None
        self._transport = transport
        self._authority: str | None = settings.authority or None
        self.discovered_issuer: str | None = None
        #: Set by the admission probe; ``auto`` reads sign only once admitted.
        self.admitted: bool | None = None
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ basics

    @property
    def base_url(self) -> str:
        return self.settings.url

    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (a CLI run and a node each have one loop)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.is_closed or self._loop is not loop:
            self._http = httpx.AsyncClient(
                base_url=self.base_url, transport=self._transport, follow_redirects=False,
            )
            self._loop = loop
        return self._http

    async def aclose(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    def _bearer_headers(self) -> dict[str, str]:
        token = self.settings.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def authority(self) -> str:
        """The ``@authority`` to sign: setting, else the well-known issuer, else
        ``localhost:<port>`` (§1.2). Discovery failures fall through, cached once found."""
        if self._authority:
            return self._authority
        issuer = (await self.well_known() or {}).get("issuer")
        if isinstance(issuer, str) and issuer.strip():
            self.discovered_issuer = issuer.strip()
            self._authority = authority_of(issuer.strip())
            return self._authority
        url = httpx.URL(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        return f"localhost:{port}"

    async def signed_auth(self) -> httpx.Auth:
        if self.signer is None:
            raise RuntimeError("no signer with a node key is installed")
        return self.signer.auth(SIGNER_ROLE, authority=await self.authority(), profile="neotoma")

    def read_mode(self) -> str:
        """The read auth in force: ``bearer``, ``aauth`` or ``none`` (dev loopback)."""
        mode = self.settings.read_auth_mode
        if mode == "bearer":
            return "bearer"
        if mode == "aauth":
            return "aauth"
        if self.signer is not None and self.admitted:
            return "aauth"
        if self.settings.bearer():
            return "bearer"
        return "aauth" if self.signer is not None else "none"

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw_body: bytes | None = None,
        signed: bool,
        bearer: bool,
        timeout: float,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {"Accept": "application/json"}
        content: bytes | None = raw_body
        if body is not None:
            content = compact_json(body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        if bearer:
            headers.update(self._bearer_headers())
        auth: httpx.Auth | None = await self.signed_auth() if signed else None
        client = self._client()
        try:
            request = client.build_request(
                method, path, content=content, headers=headers, params=params, timeout=timeout
            )
            if auth is not None:
                return await client.send(request, auth=auth)
            return await client.send(request)
        except httpx.HTTPError as exc:
            raise NeotomaUnavailable(f"{type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------- reads

    async def _read(self, path: str, body: Any, timeout: float) -> httpx.Response:
        mode = self.read_mode()
        return await self._send(
            "POST", path, body=body, signed=mode == "aauth", bearer=mode == "bearer",
            timeout=timeout,
        )

    async def query_page(
        self, entity_type: str, limit: int, *, cursor: str | None = None, offset: int = 0,
        timeout: float | None = None,
    ) -> Page:
        body: dict[str, Any] = {"entity_type": entity_type, "limit": limit,
                                "include_snapshots": True}
        if cursor is not None:
            body["cursor"] = cursor
        elif offset:
            body["offset"] = offset
        response = await self._read(
            "/entities/query", body, timeout or self.settings.read_timeout_seconds
        )
        if response.status_code >= 400:
            raise NeotomaError(response.status_code, response.text, path="/entities/query")
        try:
            data = response.json()
        except ValueError as exc:
            raise NeotomaError(response.status_code, response.text,
                               path="/entities/query") from exc
        rows = data.get("entities") if isinstance(data, dict) else None
        if rows is None and isinstance(data, dict):
            rows = data.get("results")
        if not isinstance(rows, list):
            raise NeotomaError(response.status_code, response.text[:500], path="/entities/query")
        cursor_out = data.get("next_cursor")
        return Page(
            entities=[row for row in rows if isinstance(row, dict)],
            next_cursor=cursor_out if isinstance(cursor_out, str) and cursor_out else None,
            raw_count=len(rows),
        )

    async def list_entities(
        self, entity_type: str, *, cap: int | None = None, timeout: float | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> Listing:
        """Every entity of ``entity_type`` up to ``cap``, following §2.3 paging.

        ``on_page(n)`` is called with each page's entity count (progress bars)."""
        cap = cap if cap is not None else self.settings.max_entities
        page_size = min(self.settings.page_size, 500)
        listing = Listing()
        cursor: str | None = None
        seen_cursors: set[str] = set()
        offset = 0
        while True:
            limit = min(page_size, cap - len(listing.entities))
            if limit <= 0:
                listing.stopped = "cap"
                break
            page = await self.query_page(
                entity_type, limit, cursor=cursor, offset=offset, timeout=timeout
            )
            listing.pages += 1
            kept = page.entities[: cap - len(listing.entities)]
            listing.entities.extend(kept)
            if on_page is not None:
                on_page(len(kept))
            if page.raw_count == 0:
                listing.stopped = "empty"
                break
            if len(listing.entities) >= cap:
                listing.stopped = "cap"
                break
            if page.next_cursor is not None:
                if page.next_cursor in seen_cursors:
                    listing.stopped = "repeated_cursor"
                    break
                seen_cursors.add(page.next_cursor)
                cursor = page.next_cursor
                continue
            if cursor is None and page.raw_count >= limit:
                # A full page without a cursor: an older server, page by offset.
                offset += page.raw_count
                if offset > MAX_OFFSET:
                    listing.stopped = "offset_limit"
                    break
                continue
            listing.stopped = "end"
            break
        return listing

    # ------------------------------------------------------------ probe, write

    async def session(self, *, signed: bool = True) -> httpx.Response:
        """``GET /session`` (no query string, so nothing unsigned rides along)."""
        return await self._send(
            "GET", "/session", signed=signed and self.signer is not None, bearer=False,
            timeout=self.settings.probe_timeout_seconds,
        )

    async def well_known(self) -> dict[str, Any] | None:
        try:
            response = await self._client().get(
                WELL_KNOWN, timeout=self.settings.probe_timeout_seconds
            )
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def store(self, body: bytes) -> httpx.Response:
        """A signed ``POST /store`` of exactly ``body``; never with Bearer (§3.5)."""
        return await self._send(
            "POST", "/store", raw_body=body, signed=True, bearer=False,
            timeout=self.settings.writeback_timeout_seconds,
        )

    # ------------------------------------------------------------------ grants
    # Grant calls are user-session calls: Bearer (or dev loopback), never signed.

    async def grants_call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return await self._send(
            method, path, body=body, signed=False, bearer=True, params=params,
            timeout=self.settings.read_timeout_seconds,
        )
