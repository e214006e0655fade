"""SageMaker's hosting contract for one registry version: what the job image runs when an endpoint starts it as
``serve`` (``images/Dockerfile``).

SageMaker extracts the version's ``model.tar.gz`` into ``/opt/ml/model`` and expects an HTTP server on port 8080
(``SAGEMAKER_BIND_TO_PORT`` when set) that answers ``GET /ping`` with 200 once it can serve, and ``POST /invocations``.
The version is loaded before the server listens, through its task type's ``load``, which refuses weights that differ
from ``RETRAIN_WEIGHTS_DIGEST``: a version that fails its digest never becomes healthy, so SageMaker never routes a
request to it (and an update that brings it fails, leaving the old fleet serving). The code comes from the Model's
additional data source ``code`` (``retrain.aws.endpoints.model_request``), so the container needs no network.

Requests and answers are the local model server's: ``{"instances": [...]}`` in, ``{"predictions": [...], "version":
N}`` out, a 4xx naming the instance and the rule for a bad request, and the version in ``X-Retrain-Version``. The
production variant's name (``v<N>``) also names it, in SageMaker's ``InvokedProductionVariant``.

Environment (set by the Model): ``RETRAIN_MODEL``, ``RETRAIN_VERSION``, ``RETRAIN_TASK``, ``RETRAIN_WEIGHTS_DIGEST``;
``SM_MODEL_DIR`` overrides ``/opt/ml/model`` and ``RETRAIN_BIND_HOST`` the address (tests bind 127.0.0.1).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from retrain import serving
from retrain_serving.server import RequestError, check_instances

log = logging.getLogger("retrain_serving.hosting")
REQUIRED = ("RETRAIN_MODEL", "RETRAIN_VERSION", "RETRAIN_TASK", "RETRAIN_WEIGHTS_DIGEST")


class Hosted:
    """The one version this container serves, loaded and digest-checked."""

    def __init__(self, env: dict[str, str]) -> None:
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise SystemExit(f"refusing to start: the Model's environment lacks {', '.join(missing)}")
        self.model, self.version, self.task = env["RETRAIN_MODEL"], int(env["RETRAIN_VERSION"]), env["RETRAIN_TASK"]
        self.model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        module = importlib.import_module(f"retrain_jobs.tasks.{self.task}.train")
        from retrain_jobs.base import WeightsMismatch

        try:
            self.handle = module.load(str(self.model_dir), env["RETRAIN_WEIGHTS_DIGEST"])
        except WeightsMismatch as exc:
            raise SystemExit(f"refusing to serve {self.model} v{self.version}: {exc}") from None
        self._predict, self._lock = module.predict, threading.Lock()

    def predict(self, instances: list) -> list:
        with self._lock:
            return self._predict(self.handle, instances)


def build_app(hosted: Hosted):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    headers = {serving.VERSION_HEADER: str(hosted.version)}

    async def ping(request) -> Response:
        return Response(status_code=200, headers=headers)

    async def invocations(request) -> Response:
        try:
            raw = await request.body()
            if len(raw) > serving.MAX_BODY_BYTES:
                raise RequestError(f"the body exceeds {serving.MAX_BODY_BYTES} bytes", 413)
            try:
                body: Any = json.loads(raw)
            except ValueError as exc:
                raise RequestError(f"the body is not JSON ({exc})") from None
            if not isinstance(body, dict) or set(body) != {"instances"}:
                raise RequestError('the body must be {"instances": [...]} and nothing else')
            instances = check_instances(hosted.task, body["instances"])
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)
        try:
            predictions = await run_in_threadpool(hosted.predict, instances)
        except Exception as exc:  # a model that fails answers 500 with its reason; SageMaker counts a 5XX
            log.exception("%s v%s failed", hosted.model, hosted.version)
            return JSONResponse({"error": f"{hosted.model} v{hosted.version} failed: {exc}"}, 500, headers=headers)
        return JSONResponse({"predictions": predictions, "version": hosted.version}, headers=headers)

    return Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    hosted = Hosted(dict(os.environ))
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    host = os.environ.get("RETRAIN_BIND_HOST", "0.0.0.0")  # SageMaker reaches the container from outside it
    log.info("serving %s v%s (%s) on %s:%s", hosted.model, hosted.version, hosted.task, host, port)
    uvicorn.run(build_app(hosted), host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
