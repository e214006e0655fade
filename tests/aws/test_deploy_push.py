"""``bin/retrain deploy push`` against simulators, never AWS: S3 is moto (server mode), and MWAA is
``mwaa_simulator.SimulatedMwaa`` (moto 5.2.5 has no MWAA), which speaks botocore's wire format for
GetEnvironment and UpdateEnvironment. Every UpdateEnvironment the simulator received is checked
against botocore's mwaa model with ``retrain.aws.schema.validate_request``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from mwaa_simulator import SimulatedMwaa

from retrain.aws.schema import validate_request
from retrain_tools.deploy import bundle as bundle_module
from retrain_tools.deploy import push

ENVIRONMENT = "retrain-simulated"


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory) -> Path:
    """One bundle of this tree, DAGs parse-checked; the pip resolve is the mwaa tier's to run."""
    out = tmp_path_factory.mktemp("dist") / "mwaa"
    bundle_module.build(out, check_resolve=False, allow_dirty=True, log=lambda line: None)
    return out


@pytest.fixture
def bundle_copy(built_bundle, tmp_path) -> Path:
    """A copy a test may edit."""
    return Path(shutil.copytree(built_bundle, tmp_path / "mwaa"))


@pytest.fixture
def simulated_mwaa(simulator_env, monkeypatch):
    """The simulated MWAA control plane; AWS_ENDPOINT_URL_MWAA points push.clients() at it."""
    mwaa = SimulatedMwaa(polls_until_done=2)
    monkeypatch.setenv("AWS_ENDPOINT_URL_MWAA", mwaa.start())
    yield mwaa
    mwaa.stop()


@pytest.fixture
def source_bucket(simulator_s3) -> str:
    name = f"retrain-test-mwaa-{uuid.uuid4().hex[:12]}"
    simulator_s3.create_bucket(Bucket=name)
    simulator_s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def artifact_bucket(simulator_s3, built_bundle) -> str:
    """The bundle's artifact bucket (from its configs), created on the simulator."""
    import json

    name = json.loads((built_bundle / "deploy-manifest.json").read_text())["environment"]["RETRAIN_ARTIFACT_BUCKET"]
    existing = {b["Name"] for b in simulator_s3.list_buckets()["Buckets"]}
    if name not in existing:
        simulator_s3.create_bucket(Bucket=name)
        simulator_s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def keys(s3, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def run_push(bundle: Path, bucket: str, **kwargs):
    s3, mwaa = push.clients("us-east-1")
    plan = push.plan(bundle, s3, mwaa, bucket, ENVIRONMENT)
    return plan, push.push(plan, s3, mwaa, poll_s=0.01, timeout_s=30, log=lambda line: None, **kwargs)


def test_dry_run_prints_the_plan_and_writes_nothing(
    built_bundle, simulated_mwaa, source_bucket, artifact_bucket, simulator_s3, capsys
):
    from retrain_tools.cli import main

    simulated_mwaa.add(ENVIRONMENT, source_bucket)
    code_before = keys(simulator_s3, artifact_bucket)
    assert (
        main(
            [
                "deploy",
                "push",
                "--bucket",
                source_bucket,
                "--environment",
                ENVIRONMENT,
                "--bundle",
                str(built_bundle),
                "--region",
                "us-east-1",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"upload  s3://{source_bucket}/plugins.zip" in out
        and f"upload  s3://{source_bucket}/dags/retrain_intent.py" in out
    )
    assert "dry run: nothing was uploaded" in out
    assert keys(simulator_s3, source_bucket) == [] and keys(simulator_s3, artifact_bucket) == code_before
    assert simulated_mwaa.updates == []


def test_push_uploads_versions_updates_the_environment_and_waits(
    built_bundle, simulated_mwaa, source_bucket, artifact_bucket, simulator_s3, capsys
):
    from retrain_tools.cli import main

    simulated_mwaa.add(ENVIRONMENT, source_bucket)
    assert (
        main(
            [
                "deploy",
                "push",
                "--bucket",
                source_bucket,
                "--environment",
                ENVIRONMENT,
                "--bundle",
                str(built_bundle),
                "--region",
                "us-east-1",
                "--poll-seconds",
                "0.01",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "UPDATING" in out and "AVAILABLE" in out  # the progress display saw the update through
    [update] = simulated_mwaa.updates
    validate_request("mwaa", "UpdateEnvironment", update)
    for name, field in push.TOP_LEVEL.items():
        head = simulator_s3.head_object(Bucket=source_bucket, Key=name)
        assert update[f"{field}S3Path"] == name and update[f"{field}S3ObjectVersion"] == head["VersionId"]
        assert head["VersionId"] not in ("", "null")
    dag_keys = [k for k in keys(simulator_s3, source_bucket) if k.startswith("dags/")]
    assert (
        "dags/retrain_intent.py" in dag_keys
        and "dags/config/models/intent.yaml" in dag_keys
        and "dags/.airflowignore" in dag_keys
    )
    import json

    prefix = json.loads((built_bundle / "deploy-manifest.json").read_text())["code_prefix"]
    assert {
        f"{prefix}/sourcedir.tar.gz",
        f"{prefix}/retrain.zip",
        f"{prefix}/source/include/etl/build_dataset.py",
    } <= set(keys(simulator_s3, artifact_bucket))
    assert simulated_mwaa.environments[ENVIRONMENT]["Status"] == "AVAILABLE"


PINS = {  # weights digest (tensor_file_digest of what the jobs load) and, for a converted model, its file's sha256
    "all-MiniLM-L6-v2": ("fb73e169ded68dcfd772b2ddb91bdc39dbc4f2ab6da6387c5e6139a7a226c116", None),
    "SmolLM2-135M-Instruct": (
        "785e20b3e653276b0579b744214a1186d730ba80af04f397f642d6432e5e0154",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def test_the_bundle_stages_each_aws_base_model_by_digest_and_push_uploads_it_once(
    built_bundle, simulated_mwaa, source_bucket, artifact_bucket, simulator_s3
):
    """The aws jobs download nothing from a model hub: the bundle carries the files of every shipped config's base
    model, as the local runs read them (MiniLM's safetensors directory; SmolLM2's GGUF, which the job converts as
    the local runner does), under a prefix named by the pinned weights digest, and push uploads them when absent."""
    import hashlib
    import json
    import subprocess

    from jobscripts import JOBSIDE
    from retrain.paths import INCLUDE_DIR, PROJECT_ROOT, job_python

    staged = json.loads((built_bundle / "deploy-manifest.json").read_text())["base_models"]
    assert staged == {
        name: {"prefix": f"code/base-models/{name}/{digest}", "weights_digest": digest}
        for name, (digest, _) in PINS.items()
    }
    minilm = built_bundle / staged["all-MiniLM-L6-v2"]["prefix"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in minilm.iterdir()}
    env = {"PYTHONPATH": f"{INCLUDE_DIR}:{PROJECT_ROOT / 'plugins'}", "PATH": "/usr/bin:/bin"}
    digest = subprocess.run(
        [str(job_python()), str(JOBSIDE / "tensor_file_digest.py"), str(minilm)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert digest.stdout.strip() == PINS["all-MiniLM-L6-v2"][0], digest.stderr[-2000:]
    [gguf] = (built_bundle / staged["SmolLM2-135M-Instruct"]["prefix"]).iterdir()
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == PINS["SmolLM2-135M-Instruct"][1]

    simulated_mwaa.add(ENVIRONMENT, source_bucket)
    run_push(built_bundle, source_bucket)
    deployed = set(keys(simulator_s3, artifact_bucket))
    for entry in staged.values():
        assert {f"{entry['prefix']}/{p.name}" for p in (built_bundle / entry["prefix"]).iterdir()} <= deployed
    again, _ = run_push(built_bundle, source_bucket)  # digest-named: nothing is uploaded twice
    assert again.code_uploads == []


def test_second_push_changes_only_what_changed_and_rollback_finds_the_old_version(
    built_bundle, bundle_copy, simulated_mwaa, source_bucket, artifact_bucket, simulator_s3
):
    simulated_mwaa.add(ENVIRONMENT, source_bucket)
    run_push(built_bundle, source_bucket)
    first = dict(simulated_mwaa.updates[-1])

    plan, result = run_push(built_bundle, source_bucket)  # the same bundle again
    assert plan.uploads == [] and plan.code_uploads == [] and result["changed_versions"] == {}
    assert len(simulated_mwaa.updates) == 1  # nothing to update

    startup = bundle_copy / "startup.sh"
    startup.write_text(startup.read_text() + 'export RETRAIN_EXTRA_SETTING="x"\n')
    (bundle_copy / "dags" / "retrain_gone.py").write_text("# a DAG file the next bundle drops\n")
    run_push(bundle_copy, source_bucket)
    (bundle_copy / "dags" / "retrain_gone.py").unlink()
    plan, result = run_push(bundle_copy, source_bucket)
    assert plan.deletes == ["dags/retrain_gone.py"] and "dags/retrain_gone.py" not in keys(simulator_s3, source_bucket)

    second = simulated_mwaa.updates[1]
    assert (
        set(result["changed_versions"]) == set()
        and second["StartupScriptS3ObjectVersion"] != first["StartupScriptS3ObjectVersion"]
    )
    assert second["PluginsS3ObjectVersion"] == first["PluginsS3ObjectVersion"]  # unchanged objects keep their versions
    # Rollback (README): point the environment back at the first versions, which versioning kept.
    old = simulator_s3.get_object(
        Bucket=source_bucket, Key="startup.sh", VersionId=first["StartupScriptS3ObjectVersion"]
    )["Body"].read()
    assert old == (built_bundle / "startup.sh").read_bytes()


def test_a_bucket_without_versioning_is_refused_and_nothing_is_uploaded(
    built_bundle, simulated_mwaa, simulator_s3, artifact_bucket
):
    bucket = f"retrain-test-unversioned-{uuid.uuid4().hex[:12]}"
    simulator_s3.create_bucket(Bucket=bucket)
    simulated_mwaa.add(ENVIRONMENT, bucket)
    code_before = keys(simulator_s3, artifact_bucket)
    s3, mwaa = push.clients("us-east-1")
    with pytest.raises(push.PushError, match=f"bucket {bucket}: versioning is not enabled.*nothing was uploaded"):
        push.plan(built_bundle, s3, mwaa, bucket, ENVIRONMENT)
    assert (
        keys(simulator_s3, bucket) == []
        and keys(simulator_s3, artifact_bucket) == code_before
        and simulated_mwaa.updates == []
    )


def test_an_unknown_environment_is_refused_and_nothing_is_uploaded(
    built_bundle, simulated_mwaa, source_bucket, simulator_s3, capsys
):
    from retrain_tools.cli import main

    assert (
        main(
            [
                "deploy",
                "push",
                "--bucket",
                source_bucket,
                "--environment",
                "no-such-env",
                "--bundle",
                str(built_bundle),
                "--region",
                "us-east-1",
            ]
        )
        == 1
    )
    assert "MWAA environment 'no-such-env' does not exist" in capsys.readouterr().err
    assert keys(simulator_s3, source_bucket) == []


def test_a_bucket_other_than_the_environments_is_refused(built_bundle, simulated_mwaa, source_bucket, simulator_s3):
    simulated_mwaa.add(ENVIRONMENT, "some-other-bucket")
    s3, mwaa = push.clients("us-east-1")
    with pytest.raises(push.PushError, match="reads its DAGs and plugins from bucket 'some-other-bucket'"):
        push.plan(built_bundle, s3, mwaa, source_bucket, ENVIRONMENT)
    assert keys(simulator_s3, source_bucket) == []


def test_a_failed_update_is_reported(built_bundle, simulated_mwaa, source_bucket, artifact_bucket):
    simulated_mwaa.add(ENVIRONMENT, source_bucket)
    simulated_mwaa.fail_next = True
    with pytest.raises(push.PushError, match="UPDATE_FAILED: simulated requirements install failure"):
        run_push(built_bundle, source_bucket)
