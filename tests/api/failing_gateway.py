"""`hpcgw serve` as its `run()` starts it (logging set up from HPCGW_LOG_JSON, uvicorn), with one
more route, GET /test/unexpected, that fails as a bug would: for tests/api/test_error_cost.py.
The route lives here, never in the gateway's code. `python failing_gateway.py --port P`, the
settings from HPCGW_* variables."""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI, Request

import gateway.api.app
from gateway.cli.runtime import load_settings
from gateway.cli.serve import run

# What the failing route holds in its local variables, upper-cased at run time: never logged.
LOCAL_SECRET = "local-value-never-to-be-logged"
create_app = gateway.api.app.create_app


def with_failing_route(*args: Any, **kwargs: Any) -> FastAPI:
    app = create_app(*args, **kwargs)

    @app.get("/test/unexpected")
    async def unexpected(request: Request) -> None:
        held = {"secret": LOCAL_SECRET.upper(), "headers": dict(request.headers)}
        raise RuntimeError(f"a bug, with {len(held)} things held")

    return app


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    gateway.api.app.create_app = with_failing_route  # run() imports it when it starts
    run(load_settings(port=port))


if __name__ == "__main__":
    main()
