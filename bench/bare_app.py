"""The limit of the stack: a bare FastAPI endpoint that stores the webhook body and nothing else.

    python -m bench.bare_app --port 8200 --database-url sqlite+aiosqlite:///bench/results/bare.db

Same framework, same uvicorn settings as ``bridge serve`` (``app/cli.py``), same engine settings
(``app.db.create_engine``: SQLite pragmas, PostgreSQL pool), same route, one INSERT of the raw
body in its own transaction, ``202``. No signature check, no parsing, no logging, no metrics, no
worker: whatever the bridge does beyond this is the bridge's own cost.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Column, MetaData, Table, Text, insert

from app.db import create_engine
from app.models import BigId, UTCDateTime, utcnow

metadata = MetaData()
bare_inbound = Table(
    "bench_bare_inbound",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, default=utcnow),
    Column("body", Text),
)


def create_app(database_url: str) -> FastAPI:
    engine = create_engine(database_url)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/caterings", status_code=202)
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        async with engine.begin() as connection:
            await connection.execute(insert(bare_inbound).values(body=body.decode("utf-8")))
        return JSONResponse({"status": "accepted"}, status_code=202)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args(argv)
    # As ``bridge serve`` runs uvicorn (log_config=None: the app's logging, none here).
    uvicorn.run(
        create_app(args.database_url),
        host=args.host,
        port=args.port,
        log_config=None,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
