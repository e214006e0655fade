"""AirflowClient.create_backfill against a simulated API server (stdlib http.server, not Airflow) that answers as
Airflow 3.3's does while SQLite is busy: the retried answers, and everything else raised at once."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retrain_tools.airflow_api import AirflowClient, ApiError

BUSY_500 = {"reason": "Database error", "statement": "hidden", "orig_error": "hidden", "message": "Serious error"}
"""Airflow's body for an SQLAlchemy error outside the backfill route's own lock handling (its audit-log insert)."""


def simulated_api_server(answers: list[tuple[int, dict]]) -> tuple[ThreadingHTTPServer, list[str]]:
    """A simulated API server: each POST gets the next (status, body) of ``answers``; returns it and the paths seen."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body = answers[len(seen)]
            seen.append(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _create(server: ThreadingHTTPServer) -> dict:
    client = AirflowClient(f"http://127.0.0.1:{server.server_address[1]}", Path("/nonexistent"))
    day = datetime(2026, 11, 9, tzinfo=UTC)
    return client.create_backfill("retrain_intent", day, day, attempts=3)


def test_a_database_error_of_a_busy_sqlite_is_retried_like_a_locked_refusal():
    server, seen = simulated_api_server([(500, {"detail": BUSY_500}), (503, {"detail": "Database is locked"}),
                                         (200, {"id": 7})])  # fmt: skip
    try:
        assert _create(server) == {"id": 7} and seen == ["/api/v2/backfills"] * 3
    finally:
        server.shutdown()


def test_any_other_error_is_raised_at_once():
    server, seen = simulated_api_server([(500, {"detail": "something else"}), (200, {"id": 7})])
    try:
        with pytest.raises(ApiError, match="HTTP 500"):
            _create(server)
        assert len(seen) == 1
    finally:
        server.shutdown()
