"""The local model server (include/retrain_serving/server.py) as a real uvicorn process in the job environment, over
a real MLflow registry holding two tiny intent classifiers: routing by weight, the shadow, faults, bad requests, bad
admin calls, a version that fails its digest, metrics and a restart."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from retrain import serving
from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python
from retrain.runner import free_port, stop_process_group
from retrain.serving import EndpointSpec, Faults, ServingClient, ServingError
from trainspec import registry_env  # tests/ is on pytest's pythonpath

REGISTRY = PROJECT_ROOT / "plugins" / "retrain" / "registry.py"
SERVER = INCLUDE_DIR / "retrain_serving" / "server.py"
TEXTS = ["I lost my card", "my card has not arrived", "how do I top up", "the exchange rate was wrong", "card declined"]


def start_server(env: dict[str, str], log: Path, seed: int = 0) -> tuple[subprocess.Popen, ServingClient]:
    address = serving.address_path(Path(env["RETRAIN_HOME"]))
    address.unlink(missing_ok=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [str(job_python()), str(SERVER), "--port", "0", "--seed", str(seed), "--shadow-timeout", "20"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while not address.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return proc, ServingClient(json.loads(address.read_text())["url"], root=Path(env["RETRAIN_HOME"]))


@pytest.fixture(scope="module")
def served(channels, tmp_path_factory, training):
    """Two tiny intent classifiers registered as v1 and v2 (v3: v2's directory under a wrong digest), and a running
    server with no endpoint yet."""
    spec_for, train = training
    root = tmp_path_factory.mktemp("serving")
    env = registry_env(root)
    models = [train(spec_for(channels, root / f"m{seed}", seed=seed, epochs=2), env) for seed in (7, 8)]
    versions = []
    for i, model in enumerate([*models, models[1]]):
        digest = model["weights_digest"] if i < 2 else "0" * 64
        tags = {"dataset_version": "ds-tiny", "git_sha": "abc", "airflow_run_id": f"run-{i}", "weights_digest": digest}
        proc = subprocess.run(
            [str(job_python()), str(REGISTRY), "register", "--model", "intent", "--model-dir", model["model_dir"]]
            + ["--run-id", model["mlflow_run_id"], "--tags-json", json.dumps(tags), "--evidence-json", "{}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        versions.append(json.loads(proc.stdout[proc.stdout.index("{") :])["version"])
    assert versions == [1, 2, 3]
    log = root / "server.log"
    proc, client = start_server(env, log)
    state = {"env": env, "client": client, "log": log, "root": root, "proc": proc, "models": models}
    try:
        yield state
    finally:
        stop_process_group(state["proc"])  # the server running now: a test may have restarted it


def invoke(client: ServingClient, texts: list[str]) -> tuple[int, dict, dict]:
    code, headers, body = client.invoke("intent", texts)
    return code, headers, body  # the client gives header names in lower case


def _put_with(client: ServingClient, header: str | None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": header} if header else {})}
    request = urllib.request.Request(
        client.url + "/admin/endpoints/intent", data=json.dumps({"primary": 1}).encode(), headers=headers, method="PUT"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_admin_token_is_owner_only_and_required(served):
    client, root = served["client"], Path(served["env"]["RETRAIN_HOME"])
    token = serving.token_path(root)
    assert token.stat().st_mode & 0o777 == 0o600
    for header in (None, "Bearer wrong-token", f"Basic {serving.read_token(token)}"):
        code, body = _put_with(client, header)
        assert code == 401 and "Authorization: Bearer" in body["error"], body
    assert "intent" not in client.endpoints()  # nothing was deployed by the refused calls


def test_bad_admin_specs_are_refused_and_change_nothing(served):
    client = served["client"]
    client.set_endpoint(EndpointSpec("intent", primary=1))
    before = client.endpoint("intent")
    for body, words in (
        ({"primary": 1, "colour": "red"}, "unknown endpoint field"),
        ({"canary": 2}, "needs a primary"),
        ({"primary": 1, "canary": 2, "canary_weight": 1.5}, "canary_weight must be within"),
        ({"primary": 1, "canary_weight": 0.2}, "there is no canary"),
        ({"primary": 1, "shadow": 1}, "is the primary version"),
        ({"primary": 1, "faults": {"canary": {"error_rate": 2}}}, "error_rate must be within"),
    ):
        code, _, payload = client._call("PUT", "/admin/endpoints/intent", body, admin=True)
        assert code == 400 and words in payload["error"], (body, payload)
    code, _, payload = client._call("PUT", "/admin/endpoints/intent", {"primary": 99}, admin=True)
    assert code == 409 and "v99 is not in the registry" in payload["error"], payload
    code, _, payload = client._call("PUT", "/admin/endpoints/nosuchmodel", {"primary": 1}, admin=True)
    assert code == 400 and "nosuchmodel" in payload["error"], payload
    assert client.endpoint("intent") == before


def test_a_version_that_fails_its_digest_is_refused_and_traffic_stays(served):
    client = served["client"]
    client.set_endpoint(EndpointSpec("intent", primary=1))
    with pytest.raises(ServingError, match=r"409.*v3 failed its weights digest.*still serves what it served"):
        client.set_endpoint(EndpointSpec("intent", primary=1, canary=3, canary_weight=0.5))
    assert client.endpoint("intent")["canary"] is None
    for _ in range(10):
        code, headers, _ = invoke(client, TEXTS[:1])
        assert code == 200 and headers["x-retrain-version"] == "1"


def test_bad_requests_get_a_4xx_with_a_message(served):
    client = served["client"]
    client.set_endpoint(EndpointSpec("intent", primary=1))
    for instances, code, words in (
        ([], 400, "at least one instance"),
        ([3], 400, "instance 0: a non-empty string"),
        (["ok", "  "], 400, "instance 1"),
        (["x"] * (serving.MAX_INSTANCES + 1), 413, f"at most {serving.MAX_INSTANCES}"),
        (["x" * 5000], 400, "at most 4000"),
    ):
        got, _, body = client.invoke("intent", instances)
        assert got == code and words in body["error"], (instances[:2], body)
    got, _, body = client._call("POST", "/endpoints/intent/invocations", {"texts": ["a"]})
    assert got == 400 and "nothing else" in body["error"]
    got, _, body = client._call("POST", "/endpoints/sentiment/invocations", {"instances": ["a"]})
    assert got == 404 and "no endpoint 'sentiment'" in body["error"]
    import urllib.error
    import urllib.request

    request = urllib.request.Request(client.url + "/endpoints/intent/invocations", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 400 and "not JSON" in json.loads(raised.value.read())["error"]


def test_the_router_honours_the_canary_weight_and_names_the_version(served):
    client, n, weight = served["client"], 400, 0.25
    client.set_endpoint(EndpointSpec("intent", primary=1, canary=2, canary_weight=weight))
    before = client.stats("intent")
    seen = {"primary": 0, "canary": 0}
    for i in range(n):
        code, headers, body = invoke(client, [TEXTS[i % len(TEXTS)]])
        assert code == 200
        variant, version = headers["x-retrain-variant"], int(headers["x-retrain-version"])
        assert version == {"primary": 1, "canary": 2}[variant] == body["version"]
        seen[variant] += 1
    # Binomial(n, weight): four standard deviations either side (a false failure about once in 16,000 runs).
    bound = 4 * math.sqrt(n * weight * (1 - weight))
    assert abs(seen["canary"] - n * weight) <= bound, seen
    after = client.stats("intent")
    canary = serving.window(before, after, "canary", 2)
    assert canary.requests == seen["canary"] and canary.errors == 0 and canary.p99_ms > 0
    assert serving.window(before, after, "primary", 1).requests == seen["primary"]


def test_a_shadow_never_changes_a_response(served):
    client = served["client"]
    client.set_endpoint(EndpointSpec("intent", primary=1))
    alone = {text: invoke(client, [text])[2]["predictions"] for text in TEXTS}
    client.set_endpoint(EndpointSpec("intent", primary=1, shadow=2))
    before = client.stats("intent")
    deadline, i = time.monotonic() + 120, 0
    # Until the shadow has answered a copy of every text: its process starts and loads v2 first, and copies that
    # arrive while it is busy are not sent.
    while (shadow := serving.window(before, client.stats("intent"), "shadow", 2)).compared < len(TEXTS):
        assert time.monotonic() < deadline, shadow
        text = TEXTS[i % len(TEXTS)]
        code, headers, body = invoke(client, [text])
        assert code == 200 and body["predictions"] == alone[text] and headers["x-retrain-version"] == "1"
        i += 1
        time.sleep(0.2)
    assert 0.0 <= shadow.agreement <= 1.0 and shadow.shadow_errors == 0


def test_a_failing_or_slow_shadow_never_fails_or_holds_a_request(served):
    client = served["client"]
    failing = EndpointSpec("intent", primary=1, shadow=2, faults={"shadow": Faults(error_rate=1.0)})
    client.set_endpoint(failing)
    before = client.stats("intent")
    deadline, i = time.monotonic() + 60, 0
    while serving.window(before, client.stats("intent"), "shadow", 2).shadow_errors < 3:
        assert time.monotonic() < deadline
        code, headers, _ = invoke(client, [TEXTS[i % len(TEXTS)]])
        assert code == 200 and headers["x-retrain-version"] == "1"
        i += 1
        time.sleep(0.1)
    # A shadow that sleeps 10 s: the primary's answers all come back while it is still asleep (none compared yet).
    client.set_endpoint(EndpointSpec("intent", primary=1, shadow=2, faults={"shadow": Faults(latency_ms=10_000)}))
    before = client.stats("intent")
    for text in TEXTS:
        code, headers, _ = invoke(client, [text])
        assert code == 200 and headers["x-retrain-version"] == "1"
    window = serving.window(before, client.stats("intent"), "shadow", 2)
    assert window.compared == 0 and window.requests == 0
    skipped = [s for s in client.stats("intent")["slots"] if s["variant"] == "shadow"][0]["shadow_skipped"]
    assert skipped >= len(TEXTS) - 1  # one shadow at a time: the rest sent no copy


def test_an_injected_canary_fault_is_counted_as_its_error(served):
    client = served["client"]
    spec = EndpointSpec("intent", primary=1, canary=2, canary_weight=0.5, faults={"canary": Faults(error_rate=1.0)})
    client.set_endpoint(spec)
    before = client.stats("intent")
    answers = [invoke(client, [TEXTS[i % 5]]) for i in range(40)]
    assert {code for code, _, _ in answers} == {200, 500}
    for code, headers, body in answers:  # every response names the version that answered, a failure too
        assert headers["x-retrain-version"] == ("2" if code == 500 else "1")
        assert code == 200 or "v2 failed: injected fault on the canary" in body["error"]
    window = serving.window(before, client.stats("intent"), "canary", 2)
    assert window.requests > 0 and window.error_rate == 1.0
    assert serving.window(before, client.stats("intent"), "primary", 1).errors == 0


def test_metrics_are_prometheus_text(served):
    from prometheus_client.parser import text_string_to_metric_families

    client = served["client"]
    client.set_endpoint(EndpointSpec("intent", primary=1))
    invoke(client, TEXTS[:2])
    import urllib.request

    with urllib.request.urlopen(client.url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = [s for s in families["retrain_requests"].samples if s.labels.get("variant") == "primary"]
    assert any(s.labels == {"model": "intent", "variant": "primary", "version": "1"} and s.value >= 1 for s in requests)
    assert "retrain_request_latency_seconds" in families


def test_a_restarted_server_serves_its_primary_alone(served):
    """The endpoint survives a restart; a canary does not (no window watched it through the restart)."""
    client, env = served["client"], served["env"]
    client.set_endpoint(EndpointSpec("intent", primary=1, canary=2, canary_weight=0.1))
    stop_process_group(served["proc"])
    proc, client = start_server(env, served["log"])
    served["proc"], served["client"] = proc, client
    described = client.endpoint("intent")
    assert (described["primary"], described["canary"], described["canary_weight"], described["shadow"]) == (
        1,
        None,
        0.0,
        None,
    )
    assert {invoke(client, TEXTS[:1])[1]["x-retrain-version"] for _ in range(10)} == {"1"}
    assert "is not restored; the primary serves alone" in served["log"].read_text()


def test_a_token_others_can_read_stops_the_server_from_starting(served, tmp_path):
    home = tmp_path / "store"
    token = serving.token_path(home)
    token.parent.mkdir(parents=True)
    token.write_text("x" * 40)
    token.chmod(0o644)
    proc = subprocess.run(
        [str(job_python()), str(SERVER), "--port", "0"],
        env={**served["env"], "RETRAIN_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "mode 0644" in proc.stderr and "0600" in proc.stderr


def start_hosting(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """include/retrain_serving/hosting.py as SageMaker starts it (``serve`` in the job image), bound to loopback."""
    port = free_port()
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [str(job_python()), "-m", "retrain_serving.hosting"],
            env={**env, "SAGEMAKER_BIND_TO_PORT": str(port), "RETRAIN_BIND_HOST": "127.0.0.1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def http(method: str, url: str, body: Any = None) -> tuple[int, dict, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                json.loads(raw) if raw else None,
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"null")


def test_the_sagemaker_hosting_contract_serves_one_version_after_checking_its_digest(served, tmp_path):
    """What a SageMaker endpoint runs (retrain.aws.endpoints: the job image as ``serve``): /ping once loaded,
    /invocations with the local server's request and answer shapes, the version in a header, bad requests refused; a
    version whose weights differ from the Model's digest never becomes healthy."""
    model = served["models"][0]
    env = {
        **served["env"],
        "PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}",
        "SM_MODEL_DIR": model["model_dir"],
        "RETRAIN_MODEL": "intent",
        "RETRAIN_VERSION": "1",
        "RETRAIN_TASK": "text_classification",
        "RETRAIN_WEIGHTS_DIGEST": model["weights_digest"],
    }
    proc, url = start_hosting(env, tmp_path / "hosting.log")
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "hosting.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "hosting.log").read_text()[-3000:]
            try:
                if http("GET", f"{url}/ping")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        code, headers, body = http("POST", f"{url}/invocations", {"instances": TEXTS})
        assert code == 200, body
        assert headers[serving.VERSION_HEADER.lower()] == "1" and body["version"] == 1
        _, _, local = invoke_v1(served)
        assert body["predictions"] == local["predictions"]  # the same version answers the same, in either server
        assert http("POST", f"{url}/invocations", {"instances": [""]})[0] == 400
        assert http("POST", f"{url}/invocations", b"not json")[0] == 400
        assert http("POST", f"{url}/invocations", {"instances": TEXTS * 20})[0] == 413
    finally:
        stop_process_group(proc)

    bad, _ = start_hosting({**env, "RETRAIN_WEIGHTS_DIGEST": "0" * 64}, tmp_path / "bad.log")
    assert bad.wait(timeout=180) != 0
    assert "refusing to serve intent v1" in (tmp_path / "bad.log").read_text()


def invoke_v1(served) -> tuple[int, dict, Any]:
    """v1's answers from the local model server, serving it alone."""
    served["client"].set_endpoint(EndpointSpec("intent", primary=1))
    return invoke(served["client"], TEXTS)
