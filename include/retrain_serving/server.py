"""The local model server: one HTTP process (uvicorn, Starlette) in the job environment that serves every model's
endpoint from the registry, with a primary, an optional weighted canary and an optional shadow per endpoint.

    .venv-jobs/bin/python include/retrain_serving/server.py --port 8765      # what `bin/retrain serve` starts

Routes (contract and client: ``retrain.serving``):

- ``POST /endpoints/<model>/invocations`` ``{"instances": [...]}`` -> ``{"predictions": [...], "version", "variant"}``,
  with the ``X-Retrain-Version`` and ``X-Retrain-Variant`` headers. Open, but only to loopback clients.
- ``GET /endpoints``: what each endpoint serves; ``GET /stats/<model>``: its counters, for observation windows;
  ``GET /metrics``: the same counters in Prometheus's text format; ``GET /health``.
- ``PUT /admin/endpoints/<model>`` (``Authorization: Bearer <token>``, the token in ``serving/admin-token``, 0600):
  serve a new spec. Every version in it is loaded from the registry and its weights digest checked first; if any
  fails, the endpoint keeps serving what it served and the call answers 409 with the reason.

The shadow runs after the primary has answered: the response never waits for it. Shadow predictions run in a process
of their own at the lowest priority (nice 19; no share of the server's GIL), which loads a shadow version when it is
deployed, one at a time (a request that finds one running sends no copy and counts ``shadow_skipped``), and at most
one copy goes out every ``--shadow-interval`` (0.2 s). One that takes longer than ``--shadow-timeout`` is given up and
counted as slow (``shadow_timeouts``; its latency, at least the timeout, goes into the histogram), not failed. So the
shadow takes the primary's cores only when they are idle, for a bounded share of the time, and never its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import importlib
import ipaddress
import json
import logging
import os
import random
import secrets
import socket
import sys
import threading
import time
from bisect import bisect_left
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrain import serving
from retrain.serving import LATENCY_BUCKETS, EndpointSpec, ServingError

log = logging.getLogger("retrain.serve")


class RequestError(ValueError):
    """A bad invocation: answered ``status`` (400 unless said) with its message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- what each task type's requests look like and how two answers are compared ------------------------------------


def check_instances(task: str, instances: Any) -> list:
    """The request's instances, refused (RequestError naming the instance and the rule) unless they fit the task."""
    if not isinstance(instances, list) or not instances:
        raise RequestError('the body must be {"instances": [...]} with at least one instance')
    if len(instances) > serving.MAX_INSTANCES:
        raise RequestError(f"{len(instances)} instances; at most {serving.MAX_INSTANCES} per request", 413)
    for i, instance in enumerate(instances):
        if task == "cross_encoder_reranking":
            if not isinstance(instance, dict) or not isinstance(instance.get("query"), str):
                raise RequestError(f'instance {i}: a reranking request is {{"query": str, "candidates": [...]}}')
            candidates = instance.get("candidates")
            if not isinstance(candidates, list) or not candidates:
                raise RequestError(f"instance {i}: candidates must be a non-empty list")
            for j, c in enumerate(candidates):
                if not isinstance(c, dict) or not {"passage_id", "text"} <= set(c):
                    raise RequestError(f"instance {i}, candidate {j}: needs passage_id and text")
                c.setdefault("score", 0.0)
        else:
            text = instance.get("text") if isinstance(instance, dict) and task == "causal_lm_lora" else instance
            if not isinstance(text, str) or not text.strip():
                raise RequestError(f"instance {i}: a non-empty string is required, got {type(instance).__name__}")
            if len(text) > 4000:
                raise RequestError(f"instance {i}: {len(text)} characters; at most 4000")
    return instances


TOP_K = 10


def _json_or_text(answer: str) -> Any:
    try:
        return json.loads(answer)
    except (TypeError, ValueError):
        return answer


def agreement(task: str, primary: list, shadow: list, neighbours=None) -> float:
    """Mean agreement in [0, 1] of two versions' answers to the same instances: the same label (classifiers), the
    overlap of the top ``TOP_K`` ids (reranking; retrieval, through ``neighbours``: vectors -> corpus ids), the same
    JSON fields (LLM; the same text when an answer is not JSON)."""
    if task == "text_classification":
        scores = [float(a == b) for a, b in zip(primary, shadow, strict=True)]
    elif task == "cross_encoder_reranking":
        scores = []
        for a, b in zip(primary, shadow, strict=True):
            k = min(TOP_K, len(a["passage_ids"]))
            scores.append(len(set(a["passage_ids"][:k]) & set(b["passage_ids"][:k])) / k)
    elif task == "embedding_adapter":
        ids_a, ids_b = neighbours[0](primary), neighbours[1](shadow)
        scores = [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(ids_a, ids_b, strict=True)]
    else:
        scores = [float(_json_or_text(a) == _json_or_text(b)) for a, b in zip(primary, shadow, strict=True)]
    return sum(scores) / len(scores)


# --- loaded versions ------------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """One registry version, loaded through its task type, its weights digest checked."""

    model: str
    version: int
    task: str
    digest: str
    handle: Any
    model_dir: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    corpus: tuple[list[str], Any] | None = None

    def predict(self, instances: list) -> list:
        with self.lock:  # one prediction at a time per loaded model: torch modules are not re-entrant for generation
            return importlib.import_module(f"retrain_jobs.tasks.{self.task}.train").predict(self.handle, instances)

    def neighbours(self, corpus_file: Path):
        """vectors -> the ids of each one's TOP_K nearest corpus passages, the corpus embedded by this version."""
        import numpy as np

        if self.corpus is None:
            rows = [json.loads(line) for line in corpus_file.read_text().splitlines() if line.strip()]
            ids, texts = [r["passage_id"] for r in rows], [r["text"] for r in rows]
            with self.lock:
                self.corpus = (ids, self.handle.embed(texts).numpy())
        ids, matrix = self.corpus

        def top(vectors: list) -> list[list[str]]:
            scores = np.asarray(vectors, dtype=np.float32) @ matrix.T
            return [[ids[i] for i in np.argsort(-row, kind="stable")[:TOP_K]] for row in scores]

        return top


class Registry:
    """Loads versions by number from the MLflow registry: the task, model directory and weights digest recorded at
    registration. A version without a digest, or whose weights differ from it, is refused."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], Loaded] = {}
        self._lock = threading.Lock()

    def champion(self, model: str) -> int | None:
        from retrain.registry import CHAMPION, alias_version

        return alias_version(model, CHAMPION)

    def load(self, model: str, version: int) -> Loaded:
        with self._lock:
            if (model, version) in self._cache:
                return self._cache[(model, version)]
        from mlflow.exceptions import MlflowException

        from retrain.registry import _client
        from retrain_jobs.base import WeightsMismatch

        try:
            mv = _client().get_model_version(model, str(version))
        except MlflowException:
            raise ServingError(f"{model} v{version} is not in the registry") from None
        task, model_dir, digest = mv.tags.get("task"), mv.tags.get("model_dir"), mv.tags.get("weights_digest")
        if not digest or not model_dir or not task:
            raise ServingError(f"{model} v{version} has no recorded task, model_dir or weights digest; refused")
        started = time.perf_counter()
        try:
            handle = importlib.import_module(f"retrain_jobs.tasks.{task}.train").load(model_dir, digest)
        except WeightsMismatch as exc:
            raise ServingError(f"{model} v{version} failed its weights digest ({exc}); refused") from None
        except OSError as exc:
            raise ServingError(f"{model} v{version}: its model directory cannot be read ({exc}); refused") from None
        loaded = Loaded(model, version, task, digest, handle, model_dir)
        log.info("loaded %s v%s (%s) in %.1f s", model, version, task, time.perf_counter() - started)
        with self._lock:
            self._cache[(model, version)] = loaded
            # Keep only what some endpoint may still need: at most a handful of versions per model.
            stale = sorted(v for m, v in self._cache if m == model)[:-4]
            for v in stale:
                self._cache.pop((model, v), None)
        return loaded


# --- counters ---------------------------------------------------------------------------------------------------------


@dataclass
class Slot:
    """Counters of one variant serving one version."""

    requests: int = 0
    errors: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    compared: int = 0
    agreed: float = 0.0
    shadow_errors: int = 0
    shadow_timeouts: int = 0
    shadow_skipped: int = 0

    def observe(self, seconds: float, error: bool) -> None:
        self.requests += 1
        self.errors += int(error)
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.slots: dict[tuple[str, str, int], Slot] = {}
        self.lock = threading.Lock()

    def slot(self, model: str, variant: str, version: int) -> Slot:
        key = (model, variant, version)
        if key not in self.slots:
            self.slots[key] = Slot()
        return self.slots[key]

    def snapshot(self, model: str) -> dict[str, Any]:
        with self.lock:
            return {
                "model": model,
                "started": self.started,
                "slots": [
                    {
                        "variant": variant,
                        "version": version,
                        "requests": s.requests,
                        "errors": s.errors,
                        "buckets": [[b if b != float("inf") else "+Inf", c] for b, c in s.cumulative()],
                        "latency_sum": s.latency_sum,
                        "compared": s.compared,
                        "agreed": s.agreed,
                        "shadow_errors": s.shadow_errors,
                        "shadow_skipped": s.shadow_skipped,
                        "shadow_timeouts": s.shadow_timeouts,
                    }
                    for (m, variant, version), s in sorted(self.slots.items())
                    if m == model
                ],
            }


class PrometheusCollector:
    """The server's counters in Prometheus's model (prometheus_client's custom-collector protocol)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "variant", "version"]
        requests = CounterMetricFamily("retrain_requests", "Invocations answered, per variant", labels=labels)
        errors = CounterMetricFamily("retrain_errors", "Invocations that failed (5xx), per variant", labels=labels)
        latency = HistogramMetricFamily(
            "retrain_request_latency_seconds", "Server-side latency of an invocation", labels=labels
        )
        compared = CounterMetricFamily(
            "retrain_shadow_compared", "Shadow answers compared with the primary", labels=labels
        )
        agreed = CounterMetricFamily("retrain_shadow_agreement", "Sum of the shadow's agreement scores", labels=labels)
        shadow_errors = CounterMetricFamily(
            "retrain_shadow_errors", "Shadow predictions that failed or timed out", labels=labels
        )
        timeouts = CounterMetricFamily("retrain_shadow_timeouts", "Shadow predictions given up as slow", labels=labels)
        skipped = CounterMetricFamily(
            "retrain_shadow_skipped", "Requests not copied: a shadow was still busy", labels=labels
        )
        with self.stats.lock:
            items = list(self.stats.slots.items())
            for (model, variant, version), s in items:
                key = [model, variant, str(version)]
                requests.add_metric(key, s.requests)
                errors.add_metric(key, s.errors)
                buckets = [("+Inf" if b == float("inf") else repr(b), c) for b, c in s.cumulative()]
                latency.add_metric(key, buckets, s.latency_sum)
                if variant == "shadow":
                    compared.add_metric(key, s.compared)
                    agreed.add_metric(key, s.agreed)
                    shadow_errors.add_metric(key, s.shadow_errors)
                    skipped.add_metric(key, s.shadow_skipped)
                    timeouts.add_metric(key, s.shadow_timeouts)
        up = GaugeMetricFamily("retrain_server_start_time_seconds", "When this server process started")
        up.add_metric([], self.stats.started)
        yield from (requests, errors, latency, compared, agreed, shadow_errors, timeouts, skipped, up)


# --- the app ----------------------------------------------------------------------------------------------------------


class InjectedFault(RuntimeError):
    pass


class VariantFailed(RuntimeError):
    """A variant's prediction failed; carries which version it was, for the response's headers."""

    def __init__(self, cause: Exception, loaded: Loaded, variant: str) -> None:
        super().__init__(str(cause))
        self.cause, self.loaded, self.variant = cause, loaded, variant


class Server:
    def __init__(
        self, root: Path, registry: Registry, shadow_timeout: float, seed: int | None = None, shadow_interval: float = 0
    ) -> None:
        self.root, self.registry, self.shadow_timeout = root, registry, shadow_timeout
        self.shadow_interval, self.last_copy = shadow_interval, {}
        self.specs: dict[str, EndpointSpec] = {}
        self.loaded: dict[str, dict[str, Loaded]] = {}
        self.problems: dict[str, str] = {}
        self.stats = Stats()
        self.rng = random.Random(seed)
        self.shadow_busy: dict[str, bool] = {}
        self.tasks: set[asyncio.Task] = set()
        self.token = serving.read_token(serving.token_path(root))
        self.admin_lock = asyncio.Lock()
        self.shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")  # agreement scores, off the loop
        self.shadow_process = _shadow_process()

    # endpoints --------------------------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Serve each endpoint's primary as before this process started, alone: a canary or shadow it had is dropped
        (logged), since no deployment window can have watched it through the restart; the window that was open sees
        its traffic stop and ends inconclusive. A model with a champion but no endpoint yet starts serving its
        champion, and so does one whose champion alias moved while no server ran. A version that no longer loads
        leaves that endpoint out, with the reason."""
        from retrain.config import config_paths, load_model

        saved = {p.stem: p for p in (serving.serving_dir(self.root) / "endpoints").glob("*.json")}
        for path in config_paths():
            name = path.stem
            try:
                load_model(name)
                champion = self.registry.champion(name)
                spec = EndpointSpec.from_json(name, json.loads(saved[name].read_text())) if name in saved else None
                if champion is not None and (spec is None or spec.primary != champion):
                    # The registry's champion is what the primary serves: an alias moved (a promotion, a rollback)
                    # while this server was down wins over the endpoint it had saved.
                    spec = EndpointSpec(model=name, primary=champion)
                if spec is None:
                    continue
                if spec.canary is not None or spec.shadow is not None:
                    log.warning("%s: the canary/shadow of %s is not restored; the primary serves alone", name, spec)
                    spec = EndpointSpec(model=name, primary=spec.primary)
                    self._persist(spec)
                self._install(spec, self._load_all(spec))
                log.info("serving %s: %s", name, spec.versions())
            except Exception as exc:  # noqa: BLE001 - one endpoint's problem must not keep the others down
                self.problems[name] = str(exc)
                log.error("not serving %s: %s", name, exc)

    def _load_all(self, spec: EndpointSpec) -> dict[str, Loaded]:
        return {variant: self.registry.load(spec.model, version) for variant, version in spec.versions().items()}

    def _install(self, spec: EndpointSpec, loaded: dict[str, Loaded]) -> None:
        self.specs[spec.model], self.loaded[spec.model] = spec, loaded
        self.problems.pop(spec.model, None)

    def _persist(self, spec: EndpointSpec) -> None:
        path = serving.endpoint_path(spec.model, self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, path)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for model, spec in self.specs.items():
            out[model] = {**spec.to_json(), "digests": {v: x.digest for v, x in self.loaded[model].items()}}
        for model, problem in self.problems.items():
            out.setdefault(model, {})["problem"] = problem
        return out

    # invocation -------------------------------------------------------------------------------------------------------

    async def _predict(self, model: str, variant: str, loaded: Loaded, instances: list) -> list:
        faults = self.specs[model].faults.get(variant)
        if faults and faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults and faults.error_rate and self.rng.random() < faults.error_rate:
            raise InjectedFault(f"injected fault on the {variant} (deployment.test_faults)")
        if variant == "shadow":  # in the shadow's own low-priority process: no share of this one's GIL or cores
            return await self._in_shadow_process(loaded, instances)
        return await asyncio.to_thread(loaded.predict, instances)

    async def _in_shadow_process(self, loaded: Loaded, instances: list | None = None) -> Any:
        """A shadow prediction in the shadow process; without ``instances``, the version loaded there."""
        from concurrent.futures.process import BrokenProcessPool

        call = (loaded.task, loaded.model_dir, loaded.digest)
        work, args = (shadow_ready, call) if instances is None else (shadow_predict, (*call, instances))
        try:
            return await asyncio.get_running_loop().run_in_executor(self.shadow_process, work, *args)
        except BrokenProcessPool:
            self.shadow_process = _shadow_process()  # it died (killed, out of memory): the next copy gets a new one
            raise

    async def invoke(self, model: str, instances: list) -> tuple[list, Loaded, str]:
        spec, loaded = self.specs[model], self.loaded[model]
        variant = "canary" if spec.canary is not None and self.rng.random() < spec.canary_weight else "primary"
        chosen = loaded[variant]
        started = time.perf_counter()
        error = True
        try:
            answer = await self._predict(model, variant, chosen, instances)
            error = False
        except Exception as exc:
            raise VariantFailed(exc, chosen, variant) from exc
        finally:
            with self.stats.lock:
                self.stats.slot(model, variant, chosen.version).observe(time.perf_counter() - started, error)
        if spec.shadow is not None:
            self._copy_to_shadow(model, loaded["shadow"], instances, chosen, answer)
        return answer, chosen, variant

    def _copy_to_shadow(self, model: str, shadow: Loaded, instances: list, answered: Loaded, answer: list) -> None:
        now = time.monotonic()
        if self.shadow_busy.get(model) or now - self.last_copy.get(model, -1e9) < self.shadow_interval:
            with self.stats.lock:
                self.stats.slot(model, "shadow", shadow.version).shadow_skipped += 1
            return
        self.shadow_busy[model], self.last_copy[model] = True, now
        task = asyncio.get_running_loop().create_task(self._shadow(model, shadow, instances, answered, answer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _shadow(self, model: str, shadow: Loaded, instances: list, answered: Loaded, answer: list) -> None:
        started = time.perf_counter()
        try:
            theirs = await asyncio.wait_for(self._predict(model, "shadow", shadow, instances), self.shadow_timeout)
            neighbours = None
            if shadow.task == "embedding_adapter":
                corpus = self._corpus_file(model)
                neighbours = (answered.neighbours(corpus), shadow.neighbours(corpus))
            score = await asyncio.get_running_loop().run_in_executor(
                self.shadow_pool, agreement, shadow.task, answer, theirs, neighbours
            )
            with self.stats.lock:
                slot = self.stats.slot(model, "shadow", shadow.version)
                slot.observe(time.perf_counter() - started, False)
                slot.compared += 1
                slot.agreed += score
        except TimeoutError:  # slow, not failed: its latency (at least the timeout) goes into the histogram
            log.warning("shadow %s v%s timed out after %.1f s", model, shadow.version, self.shadow_timeout)
            with self.stats.lock:
                slot = self.stats.slot(model, "shadow", shadow.version)
                slot.observe(time.perf_counter() - started, False)
                slot.shadow_timeouts += 1
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is counted, never raised to the client
            log.warning("shadow %s v%s failed: %s", model, shadow.version, exc or type(exc).__name__)
            with self.stats.lock:
                slot = self.stats.slot(model, "shadow", shadow.version)
                slot.observe(time.perf_counter() - started, True)
                slot.shadow_errors += 1
        finally:
            self.shadow_busy[model] = False

    def _corpus_file(self, model: str) -> Path:
        from retrain.config import load_model

        return load_model(model).data.corpus_path()

    # admin ------------------------------------------------------------------------------------------------------------

    async def set_endpoint(self, model: str, body: Any) -> dict[str, Any]:
        from retrain.config import load_model

        spec = EndpointSpec.from_json(model, body)
        try:
            load_model(model)
        except Exception as exc:  # noqa: BLE001 - ConfigError or an unknown model: refused as a bad request
            raise ServingError(f"{model}: {exc}") from None
        async with self.admin_lock:
            loaded = await asyncio.to_thread(self._load_all, spec)  # raises: nothing changes
            if "shadow" in loaded:  # the shadow process starts and loads it now, so that no copy waits for that
                await self._in_shadow_process(loaded["shadow"])
            self._persist(spec)
            self._install(spec, loaded)
        log.info("endpoint %s now serves %s", model, spec.versions())
        return self.describe()[model]

    def authorised(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(token.encode(), self.token.encode())


_SHADOW_MODELS: dict[tuple[str, str], Any] = {}
"""In the shadow process: the versions it has loaded, by (model directory, digest)."""


def _shadow_init(threads: int) -> None:
    """The shadow process: nice 19, so the server's own process and the clients get the cores first; torch's threads
    as the server's."""
    import torch

    os.nice(19)
    torch.set_num_threads(threads)


def shadow_load(task: str, model_dir: str, digest: str) -> Any:
    """In the shadow process: the version, loaded once (its digest checked)."""
    module = importlib.import_module(f"retrain_jobs.tasks.{task}.train")
    if (model_dir, digest) not in _SHADOW_MODELS:
        _SHADOW_MODELS.clear()  # one shadow version at a time
        _SHADOW_MODELS[(model_dir, digest)] = module.load(model_dir, digest)
    return _SHADOW_MODELS[(model_dir, digest)]


def shadow_ready(task: str, model_dir: str, digest: str) -> bool:
    """Load the version in the shadow process before the endpoint sends it copies (started and loaded, not timed)."""
    shadow_load(task, model_dir, digest)
    return True


def shadow_predict(task: str, model_dir: str, digest: str, instances: list) -> list:
    """A shadow prediction, in the shadow process."""
    module = importlib.import_module(f"retrain_jobs.tasks.{task}.train")
    return module.predict(shadow_load(task, model_dir, digest), instances)


def _shadow_process():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_shadow_init,
        initargs=(torch.get_num_threads(),),
    )


def _loopback(host: str | None) -> bool:
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _error(code: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=code)


async def _body(request) -> Any:
    """The request's JSON body, refused (RequestError) when too large or not JSON."""
    if int(request.headers.get("content-length") or 0) > serving.MAX_BODY_BYTES:
        raise RequestError(f"the body exceeds {serving.MAX_BODY_BYTES} bytes", 413)
    raw = await request.body()
    if len(raw) > serving.MAX_BODY_BYTES:
        raise RequestError(f"the body exceeds {serving.MAX_BODY_BYTES} bytes", 413)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RequestError(f"the body is not JSON ({exc})") from None


async def invocations(request):
    from starlette.responses import JSONResponse

    server: Server = request.app.state.server
    if not _loopback(request.client.host if request.client else None):
        return _error(403, "invocations are open to this machine only")
    model = request.path_params["model"]
    if model not in server.specs:
        why = server.problems.get(model, "no version has been deployed to it")
        return _error(404, f"no endpoint {model!r} is serving: {why}")
    try:
        body = await _body(request)
        if not isinstance(body, dict) or set(body) != {"instances"}:
            raise RequestError('the body must be {"instances": [...]} and nothing else')
        instances = check_instances(server.loaded[model]["primary"].task, body["instances"])
    except RequestError as exc:
        return _error(exc.status, str(exc))
    try:
        answer, chosen, variant = await server.invoke(model, instances)
    except VariantFailed as failed:  # a model that fails answers 500 with its reason, counted as its error
        if not isinstance(failed.cause, InjectedFault):
            log.error("%s v%s failed: %r", model, failed.loaded.version, failed.cause)
        response = _error(500, f"{model} v{failed.loaded.version} failed: {failed.cause}")
        response.headers[serving.VERSION_HEADER] = str(failed.loaded.version)
        response.headers[serving.VARIANT_HEADER] = failed.variant
        return response
    headers = {serving.VERSION_HEADER: str(chosen.version), serving.VARIANT_HEADER: variant}
    return JSONResponse({"predictions": answer, "version": chosen.version, "variant": variant}, headers=headers)


async def admin(request):
    from starlette.responses import JSONResponse

    server: Server = request.app.state.server
    if not server.authorised(request.headers.get("authorization")):
        return _error(401, "the admin routes need 'Authorization: Bearer <token>' (serving/admin-token)")
    try:
        body = await _body(request)
        return JSONResponse(await server.set_endpoint(request.path_params["model"], body))
    except RequestError as exc:
        return _error(400, str(exc))
    except ServingError as exc:
        code = 409 if "refused" in str(exc) or "not in the registry" in str(exc) else 400
        return _error(code, f"{exc}; the endpoint still serves what it served")


def build_app(server: Server):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    metrics_registry = CollectorRegistry(auto_describe=True)
    metrics_registry.register(PrometheusCollector(server.stats))

    async def endpoints(request):
        return JSONResponse(server.describe())

    async def stats(request):
        return JSONResponse(server.stats.snapshot(request.path_params["model"]))

    async def metrics(request):
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request):
        return JSONResponse({"ok": True, "serving": sorted(server.specs), "problems": server.problems})

    app = Starlette(
        routes=[
            Route("/endpoints/{model}/invocations", invocations, methods=["POST"]),
            Route("/endpoints", endpoints, methods=["GET"]),
            Route("/stats/{model}", stats, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/admin/endpoints/{model}", admin, methods=["PUT"]),
        ]
    )
    app.state.server = server
    return app


def ensure_token(root: Path) -> Path:
    """The admin token file, created 0600 with a fresh token when absent; an existing one is kept (clients hold it),
    and refused if others may read it."""
    path = serving.token_path(root)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        serving.read_token(path)
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=serving.DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per prediction")
    parser.add_argument(
        "--shadow-timeout", type=float, default=5.0, help="seconds before a shadow copy is given up as slow"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the canary draw (tests)")
    parser.add_argument(
        "--shadow-interval",
        type=float,
        default=0.2,
        help="fewest seconds between two copies to an endpoint's shadow (default: %(default)s, at most 5 a second)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    root = serving.serving_dir().parent
    try:
        ensure_token(root)
    except ServingError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
        # Listening before the address file names the port: a client that reads it may connect before uvicorn starts,
        # and waits in the backlog instead of being refused (a test's first request was, on a loaded machine).
        sock.listen(2048)
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port} ({exc}); is a model server already running?", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    server = Server(root, Registry(), args.shadow_timeout, args.seed, args.shadow_interval)
    server.restore()
    address = serving.address_path(root)
    address.write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "pid": os.getpid(), "started": time.time()}))
    config = uvicorn.Config(build_app(server), log_level="warning", access_log=False, lifespan="off")
    log.info("model server on http://127.0.0.1:%s serving %s", port, sorted(server.specs))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        try:
            if json.loads(address.read_text()).get("pid") == os.getpid():
                address.unlink()
        except (OSError, ValueError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
