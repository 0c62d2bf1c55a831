"""Connectors: read a source and ingest it through the node's HTTP API.

:mod:`sdl_core.connectors.common` holds what every ``darkmesh ingest …`` command
shares (flags, auth rule, batching client, progress bar); the built-in CSV connector
is :mod:`sdl_core.connectors.csv`. Third-party connectors register a
:class:`sdl_core.ConnectorSpec` and may reuse :func:`connector_options` and
:class:`IngestClient`.
"""

from sdl_core.connectors.common import (
    ConnectorAuth,
    ConnectorOptions,
    IngestClient,
    IngestError,
    IngestResult,
    batched,
    build_connector_signer,
    connector_options,
    default_connector_sub,
    load_connector_settings,
    prepare_auth,
)

__all__ = [
    "ConnectorAuth",
    "ConnectorOptions",
    "IngestClient",
    "IngestError",
    "IngestResult",
    "batched",
    "build_connector_signer",
    "connector_options",
    "default_connector_sub",
    "load_connector_settings",
    "prepare_auth",
]
