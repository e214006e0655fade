"""A simulated Amazon MWAA control plane for ``deploy push`` tests: moto 5.2.5 has no MWAA.

It answers botocore's real wire format (restJson1) for the two operations the push uses:
``GET /environments/{Name}`` (GetEnvironment) and ``PATCH /environments/{Name}``
(UpdateEnvironment). An update moves the environment to UPDATING, and after
``polls_until_done`` GetEnvironment calls to AVAILABLE (or UPDATE_FAILED when ``fail_next``).
Every UpdateEnvironment body is kept in ``updates``. It checks nothing about the bundle itself;
it only stands in for MWAA's API so the push's requests, errors and waiting can be exercised.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class SimulatedMwaa:
    """Environments by name; start() serves them on 127.0.0.1 and returns the endpoint URL."""

    def __init__(self, polls_until_done: int = 2):
        self.environments: dict[str, dict] = {}
        self.updates: list[dict] = []
        self.polls_until_done = polls_until_done
        self.fail_next = False
        self._pending: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    def add(self, name: str, bucket: str, **fields) -> dict:
        env = {
            "Name": name,
            "Status": "AVAILABLE",
            "Arn": f"arn:aws:airflow:us-east-1:123456789012:environment/{name}",
            "AirflowVersion": "3.3.1",
            "SourceBucketArn": f"arn:aws:s3:::{bucket}",
            "DagS3Path": "dags",
            **fields,
        }
        self.environments[name] = env
        return env

    def _get(self, name: str) -> dict:
        env = self.environments[name]
        if env["Status"] == "UPDATING":
            self._pending[name] -= 1
            if self._pending[name] <= 0:
                failed = env.pop("_fail", False)
                env["Status"] = "UPDATE_FAILED" if failed else "AVAILABLE"
                env["LastUpdate"] = {
                    "Status": "FAILED" if failed else "SUCCESS",
                    **(
                        {"Error": {"ErrorCode": "Simulated", "ErrorMessage": "simulated requirements install failure"}}
                        if failed
                        else {}
                    ),
                }
                if not failed:
                    env.update(env.pop("_next"))
                else:
                    env.pop("_next")
        return {"Environment": {k: v for k, v in env.items() if not k.startswith("_")}}

    def _update(self, name: str, body: dict) -> dict:
        env = self.environments[name]
        self.updates.append({"Name": name, **body})  # Name travels in the URI
        env["Status"], env["_next"], env["_fail"] = (
            "UPDATING",
            {k: v for k, v in body.items() if k != "Name"},
            self.fail_next,
        )
        self.fail_next = False
        self._pending[name] = self.polls_until_done
        return {"Arn": env["Arn"]}

    def start(self) -> str:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body: dict, error: str | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if error:
                    self.send_header("x-amzn-ErrorType", error)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _name(self) -> str | None:
                parts = self.path.split("?")[0].strip("/").split("/")
                return unquote(parts[1]) if len(parts) == 2 and parts[0] == "environments" else None

            def _dispatch(self, action):
                name = self._name()
                if name is None or name not in simulator.environments:
                    return self._answer(404, {"message": f"Environment {name} not found"}, "ResourceNotFoundException")
                return self._answer(200, action(name))

            def do_GET(self):
                self._dispatch(simulator._get)

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._dispatch(lambda name: simulator._update(name, body))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
