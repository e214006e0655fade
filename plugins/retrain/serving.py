"""The local model server's contract, as plain Python: what an endpoint serves, where the server's state lives, how a
client reaches it, and how an observation window's figures are read from its counters.

The server itself (``include/retrain_serving/server.py``) runs in the job environment, where the models load. Everything
that only talks to it (the DAG's deployment tasks and their triggers, ``bin/retrain serve/traffic/rollback``, the tests)
imports this module, which imports nothing heavy.

An endpoint serves one model through up to three **variants**:

- ``primary``: the champion; it answers every request the canary does not take;
- ``canary`` (optional): another version, answering ``canary_weight`` of the requests, drawn per request;
- ``shadow`` (optional): another version that receives a copy of each request after the primary has answered; its
  answer is compared with the primary's and never returned.

Every response names the version that answered (``X-Retrain-Version``) and its variant (``X-Retrain-Variant``).
"""

from __future__ import annotations

import json
import math
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrain.paths import store_root

VARIANTS = ("primary", "canary", "shadow")
VERSION_HEADER, VARIANT_HEADER = "X-Retrain-Version", "X-Retrain-Variant"
DEFAULT_PORT = 8765
MAX_INSTANCES = 64
"""Most instances one invocation may carry; more is refused (413)."""
MAX_BODY_BYTES = 1 << 20
LATENCY_BUCKETS = tuple(round(0.001 * 1.25**i, 6) for i in range(50))
"""Upper bounds (seconds) of the latency histogram: 1 ms to about 63 s, each 25% above the last, so a quantile read from
it is within 25% of the true one."""


class ServingError(ValueError):
    """A request to the server, or an endpoint spec, is invalid; nothing was changed."""


class ServerUnavailable(ServingError):
    """The model server is not running where its state file says, or has never been started."""


@dataclass(frozen=True)
class Faults:
    """Injected failures of one variant, for tests and drills only: a share of its requests answered 500, and a delay
    added to each. Set only through a config's ``deployment.test_faults`` (absent in every shipped config)."""

    error_rate: float = 0.0
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ServingError(f"faults.error_rate must be within [0, 1], got {self.error_rate}")
        if not 0 <= self.latency_ms <= 60_000:
            raise ServingError(f"faults.latency_ms must be within [0, 60000], got {self.latency_ms}")

    @property
    def active(self) -> bool:
        return bool(self.error_rate or self.latency_ms)


@dataclass(frozen=True)
class EndpointSpec:
    """What one model's endpoint serves: registry versions by number, and the canary's share of traffic."""

    model: str
    primary: int
    canary: int | None = None
    canary_weight: float = 0.0
    shadow: int | None = None
    faults: dict[str, Faults] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("primary", "canary", "shadow"):
            version = getattr(self, name)
            if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
                raise ServingError(
                    f"{self.model}: {name} must be a registry version number (1 or more), got {version!r}"
                )
        if not 0 <= self.canary_weight <= 1:
            raise ServingError(f"{self.model}: canary_weight must be within [0, 1], got {self.canary_weight}")
        if self.canary is None and self.canary_weight:
            raise ServingError(
                f"{self.model}: canary_weight {self.canary_weight} is set but there is no canary version"
            )
        if self.canary is not None and self.canary == self.primary:
            raise ServingError(f"{self.model}: the canary v{self.canary} is the primary version")
        if self.shadow is not None and self.shadow == self.primary:
            raise ServingError(f"{self.model}: the shadow v{self.shadow} is the primary version")
        unknown = set(self.faults) - set(VARIANTS)
        if unknown:
            raise ServingError(f"{self.model}: faults for unknown variants {sorted(unknown)}; variants are {VARIANTS}")

    def versions(self) -> dict[str, int]:
        """variant -> version, for the variants this spec uses."""
        return {v: getattr(self, v) for v in VARIANTS if getattr(self, v) is not None}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["faults"] = {v: asdict(f) for v, f in self.faults.items()}
        return out

    @classmethod
    def from_json(cls, model: str, data: Mapping[str, Any]) -> EndpointSpec:
        """A spec from a JSON body; names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ServingError(f"{model}: an endpoint spec is a JSON object, got {type(data).__name__}")
        known = {"model", "primary", "canary", "canary_weight", "shadow", "faults"}
        extra = set(data) - known
        if extra:
            raise ServingError(f"{model}: unknown endpoint field(s) {sorted(extra)}; known: {sorted(known)}")
        if data.get("model", model) != model:
            raise ServingError(f"the spec names model {data.get('model')!r} but was sent for {model!r}")
        if "primary" not in data:
            raise ServingError(f"{model}: an endpoint spec needs a primary version")
        faults_in = data.get("faults") or {}
        if not isinstance(faults_in, Mapping):
            raise ServingError(f"{model}: faults must map a variant to {{error_rate, latency_ms}}")
        try:
            faults = {str(v): Faults(**dict(f)) for v, f in faults_in.items()}
            weight = float(data.get("canary_weight") or 0.0)
        except (TypeError, ValueError) as exc:
            raise ServingError(f"{model}: {exc}") from None
        return cls(
            model=model,
            primary=data["primary"],
            canary=data.get("canary"),
            canary_weight=weight,
            shadow=data.get("shadow"),
            faults=faults,
        )


def serving_dir(root: Path | None = None) -> Path:
    """The server's own state under the store root: endpoint specs, its address, its admin token."""
    return (root or store_root()) / "serving"


def token_path(root: Path | None = None) -> Path:
    return serving_dir(root) / "admin-token"


def address_path(root: Path | None = None) -> Path:
    return serving_dir(root) / "server.json"


def endpoint_path(model: str, root: Path | None = None) -> Path:
    return serving_dir(root) / "endpoints" / f"{model}.json"


def read_token(path: Path) -> str:
    """The admin token, refused unless the file is its owner's alone (0600): anyone who reads it can move traffic."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise ServerUnavailable(f"{path} does not exist: start the model server (bin/retrain serve) first") from None
    if mode & 0o077:
        raise ServingError(f"{path} has mode {mode:04o}; the admin token must be readable by its owner only (0600)")
    token = path.read_text().strip()
    if len(token) < 32:
        raise ServingError(f"{path} holds no usable token (fewer than 32 characters)")
    return token


def server_url(root: Path | None = None) -> str:
    """The running server's base URL, from the address file it writes when it starts (``RETRAIN_SERVE_URL`` wins)."""
    if os.environ.get("RETRAIN_SERVE_URL"):
        return os.environ["RETRAIN_SERVE_URL"].rstrip("/")
    path = address_path(root)
    try:
        return json.loads(path.read_text())["url"]
    except FileNotFoundError:
        raise ServerUnavailable(
            f"the model server has not been started under {serving_dir(root)} ({path} is absent); start it with "
            "`bin/retrain serve` (or `make serve`)"
        ) from None


class ServingClient:
    """Talks to the model server: invocations (open on localhost) and the admin routes (bearer token)."""

    def __init__(self, url: str | None = None, root: Path | None = None, timeout: float = 30.0) -> None:
        self.root = root
        self.url = (url or server_url(root)).rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, admin: bool = False) -> tuple[int, dict, Any]:
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = f"Bearer {read_token(token_path(self.root))}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return response.status, headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                detail = json.loads(payload)
            except ValueError:
                detail = {"error": payload.decode(errors="replace")}
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, detail
        except (urllib.error.URLError, ConnectionError) as exc:
            raise ServerUnavailable(
                f"the model server is not answering at {self.url} ({getattr(exc, 'reason', exc)}); start it with "
                "`bin/retrain serve`"
            ) from None

    def _ok(self, method: str, path: str, body: Any = None, admin: bool = False) -> Any:
        code, _, payload = self._call(method, path, body, admin)
        if code >= 400:
            raise ServingError(f"{method} {path} answered {code}: {payload.get('error', payload)}")
        return payload

    def invoke(self, model: str, instances: list) -> tuple[int, dict, Any]:
        """One invocation: (status, headers with lower-case names, body)."""
        return self._call("POST", f"/endpoints/{model}/invocations", {"instances": instances})

    def endpoints(self) -> dict[str, Any]:
        return self._ok("GET", "/endpoints")

    def endpoint(self, model: str) -> dict[str, Any] | None:
        return self.endpoints().get(model)

    def set_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        """Serve ``spec`` once every version in it has loaded and passed its digest; else nothing changes."""
        return self._ok("PUT", f"/admin/endpoints/{spec.model}", spec.to_json(), admin=True)

    def stats(self, model: str) -> dict[str, Any]:
        return self._ok("GET", f"/stats/{model}")


# --- observation windows -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowFigures:
    """What one variant did between two snapshots of the server's counters."""

    version: int
    requests: int
    errors: int
    p99_ms: float | None
    p50_ms: float | None
    compared: int = 0
    agreement: float | None = None
    shadow_errors: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


def quantile(buckets: list[tuple[float, int]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count <= bound)], interpolated within its bucket as
    Prometheus's histogram_quantile does; None without observations. Above the last bound: that bound (a floor)."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside if inside else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def _slot(stats: Mapping[str, Any], variant: str, version: int) -> dict[str, Any]:
    for slot in stats.get("slots", []):
        if slot["variant"] == variant and slot["version"] == version:
            return slot
    return {"requests": 0, "errors": 0, "buckets": [], "compared": 0, "agreed": 0.0, "shadow_errors": 0}


def window(before: Mapping[str, Any], after: Mapping[str, Any], variant: str, version: int) -> WindowFigures:
    """The figures of ``variant`` serving ``version`` between two ``/stats`` snapshots (counters only grow while the
    server lives; a restart in between resets them, and ``after`` then stands alone)."""
    a, b = _slot(before, variant, version), _slot(after, variant, version)
    if before.get("started") != after.get("started"):
        a = _slot({}, variant, version)
    requests, errors = b["requests"] - a["requests"], b["errors"] - a["errors"]
    before_counts = {bound: count for bound, count in a["buckets"]}
    buckets = [(bound, count - before_counts.get(bound, 0)) for bound, count in b["buckets"]]
    compared = b["compared"] - a["compared"]
    p99, p50 = quantile(buckets, 0.99), quantile(buckets, 0.50)
    return WindowFigures(
        version=version,
        requests=requests,
        errors=errors,
        p99_ms=None if p99 is None else round(p99 * 1000, 2),
        p50_ms=None if p50 is None else round(p50 * 1000, 2),
        compared=compared,
        agreement=(b["agreed"] - a["agreed"]) / compared if compared else None,
        shadow_errors=b["shadow_errors"] - a["shadow_errors"],
    )


def judge(variant: str, figures: WindowFigures, policy: Mapping[str, Any], elapsed_s: float) -> tuple[str, list[str]]:
    """Where an observation window stands: ``continue``, ``pass``, ``rollback`` or ``inconclusive``, with the reasons.

    - shadow: once ``min_requests`` copies were answered, it rolls back if its error rate, p99 or agreement with the
      champion is out of bounds (agreement only where ``min_agreement`` is set), else passes; after ``max_minutes``
      with fewer, it is inconclusive.
    - canary: once it has ``min_requests`` requests, a breach of the error-rate or p99 ceiling rolls it back at once;
      at the end of ``window_minutes`` it passes, or is inconclusive with fewer than ``min_requests``.
    """
    enough = figures.requests >= policy["min_requests"]
    breaches = []
    if enough:
        if figures.error_rate is not None and figures.error_rate > policy["max_error_rate"]:
            breaches.append(
                f"error rate {figures.error_rate:.1%} > {policy['max_error_rate']:.1%} "
                f"({figures.errors} of {figures.requests} requests)"
            )
        ceiling = policy.get("p99_ms_max")
        if ceiling is not None and figures.p99_ms is not None and figures.p99_ms > ceiling:
            breaches.append(f"p99 latency {figures.p99_ms:.1f} ms > {ceiling:g} ms")
        measured = policy.get("min_agreement") is not None  # None: the backend cannot compare answers (SageMaker)
        if (
            variant == "shadow"
            and measured
            and (figures.agreement is None or figures.agreement < policy["min_agreement"])
        ):
            agreement = "none compared" if figures.agreement is None else f"{figures.agreement:.3f}"
            breaches.append(f"agreement with the champion {agreement} < {policy['min_agreement']:g}")
    if breaches:
        return "rollback", breaches
    limit_s = 60 * (policy["max_minutes"] if variant == "shadow" else policy["window_minutes"])
    if variant == "shadow" and enough:
        return "pass", [f"{figures.requests} copies answered, every criterion within bounds"]
    if elapsed_s < limit_s:
        return "continue", []
    if not enough:
        seen = (
            "no request arrived"
            if not figures.requests
            else f"at {figures.requests} requests an error rate up to {min(1.0, 3 / figures.requests):.0%} can go "
            "unseen (95%, the rule of three)"
        )
        return "inconclusive", [
            f"only {figures.requests} of the {policy['min_requests']} requests needed arrived in {limit_s / 60:g} min: "
            f"too few to judge ({seen})"
        ]
    return "pass", [f"{figures.requests} requests over {limit_s / 60:g} min, every criterion within bounds"]
