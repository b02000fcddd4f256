"""``mfpo serve``: the gateway under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the REST gateway (settings from MFPO_* environment variables)."""
    import uvicorn

    from services.gateway.settings import get_gateway_settings

    get_gateway_settings().tenant_keys()  # malformed MFPO_API_KEYS fail here, before binding the port
    uvicorn.run("services.gateway.app:create_app", factory=True, host=host, port=port, workers=workers,
                proxy_headers=True, log_level="info")
