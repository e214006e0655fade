"""What people and Airflow type, and what workers read, cannot break an AWS request after the expensive work is done.

Each test here failed on the code before its fix: a reason with a line break stranded an approved run at
promote_model (UpdateModelPackage.ApprovalDescription is one line); a run id with ``~`` passed the project's validator,
which skipped ``\\p{...}`` patterns, and failed at AWS at register_model; ClientToken came from the group and run id
only, so a re-evaluated run sent other content under the same token; the code input prefix ``.../source`` also took
``sourcedir.tar.gz``; the training operator read the whole model.tar.gz into memory. Requests are checked against
botocore's service models; moto (an AWS simulator) stands in for S3 where one is needed, never AWS.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from retrain.aws.locations import CodeBundle
from retrain.aws.requests import model_package_request, update_package_request
from retrain.aws.schema import RequestInvalid, java_pattern, validate_request
from retrain.config import load_config
from retrain.user_input import (
    REASON_PATTERN,
    RUN_ID_MAX_CHARS,
    RUN_ID_PATTERN,
    InputRefused,
    check_reason,
    check_run_id,
    one_line,
)

pytestmark = pytest.mark.aws

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INTENT = PROJECT_ROOT / "config" / "models" / "intent.yaml"
SERVICES = ("sagemaker", "glue", "s3", "sns", "sts")


# --- 1. reasons -----------------------------------------------------------------------------------


def test_an_approval_reason_with_a_line_break_still_promotes():
    """The approval form's text reaches UpdateModelPackage.ApprovalDescription (pattern ``.*``: one line). It used to
    be sent as typed, and the request was refused before sending on every retry of promote_model."""
    aws = load_config(INTENT).aws
    request = update_package_request(aws, 3, True, "beats v2 on cards\r\nand on latency\u2028(see report)")
    assert request["ApprovalDescription"] == "beats v2 on cards and on latency (see report)"
    long = update_package_request(aws, 3, False, "x" * 5000)
    assert len(long["ApprovalDescription"]) <= 1024


def test_a_reason_is_refused_where_it_is_typed_with_what_is_wrong():
    with pytest.raises(InputRefused, match=r"reason: a line break \('\\n'\) at position 5; a reason is one line"):
        check_reason("first\nsecond")
    with pytest.raises(InputRefused, match=r"it is 1001 characters long, over 1000"):
        check_reason("y" * 1001)
    assert check_reason("tab\tis fine: café, 5% better") == "tab\tis fine: café, 5% better"
    assert one_line("  a\n\n b\x00c ") == "a b c"


def test_the_dag_params_carry_the_reason_rule(monkeypatch):
    """The rollback DAG's and the approval form's ``reason`` are validated by Airflow against the same pattern."""
    import re

    from retrain_airflow.factory import build_retraining_dag, build_rollback_dag

    monkeypatch.setenv("RETRAIN_BACKEND", "local")
    config = load_config(INTENT)
    rollback = build_rollback_dag(config).params.get_param("reason").schema
    approval = build_retraining_dag(config).get_task("await_approval").params.get_param("reason").schema
    for schema in (rollback, approval):
        assert schema["pattern"] == REASON_PATTERN and schema["maxLength"] == 1000
        assert re.search(schema["pattern"], "one line") and not re.search(schema["pattern"], "two\nlines")


def test_the_cli_refuses_a_multi_line_reason_before_it_reaches_airflow(capsys):
    from retrain_tools import cli

    code = cli.main(["rollback", "intent", "--reason", "broke\ncards", "--as", "admin"])
    assert code == 1
    assert "--reason: a line break ('\\n') at position 5" in capsys.readouterr().err


# --- 2. run ids -----------------------------------------------------------------------------------


def _package_request(run_id: str) -> dict:
    config = load_config(INTENT)
    lineage = {
        "model_name": "intent",
        "dataset_version": "ds-5f1c0a9e2b7d",
        "golden_version": "v1",
        "base_model": "all-MiniLM-L6-v2",
        "git_sha": "0" * 40,
        "config_digest": config.digest(),
        "airflow_dag_id": "retrain_intent",
        "airflow_run_id": run_id,
    }
    return {
        "ModelPackageGroupName": "retrain-intent",
        "ModelApprovalStatus": "PendingManualApproval",
        "CustomerMetadataProperties": lineage,
        "ModelPackageDescription": "intent challenger",
    }


def test_the_validator_checks_unicode_property_patterns():
    """CustomerMetadataProperties values match ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``: ``re`` cannot compile that, so the
    walk used to skip it and a ``~`` from Airflow's default run id pattern failed only at AWS."""
    validate_request("sagemaker", "CreateModelPackage", _package_request("manual__café-2026"))  # \\p{L}: letters
    refused = r"CustomerMetadataProperties.airflow_run_id: 'manual__a~b' does not match"
    with pytest.raises(RequestInvalid, match=refused):
        validate_request("sagemaker", "CreateModelPackage", _package_request("manual__a~b"))


def test_every_pattern_of_the_services_used_compiles():
    """No pattern is skipped any more: each one the project's services declare compiles, Java's surrogate ranges
    rewritten as the code points they mean."""
    import botocore.session

    from retrain.aws.schema import _compiled

    session, seen = botocore.session.get_session(), 0
    for service in SERVICES:
        model = session.get_service_model(service)
        for name in model.shape_names:
            pattern = model.shape_for(name).metadata.get("pattern")
            if pattern:
                _compiled(pattern)
                seen += 1
    assert seen > 500
    supplementary = _compiled("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\t]*")
    assert supplementary.fullmatch("emoji \U0001f600 ok") and not supplementary.fullmatch("bell \x07")
    assert "\\U00010000-\\U0010FFFF" in java_pattern("[\\uD800\\uDC00-\\uDBFF\\uDFFF]")


def test_a_run_id_that_cannot_fit_aws_is_refused_before_any_job():
    with pytest.raises(InputRefused, match=r"run id 'manual__a~b': character '~' at position 9 is not allowed"):
        check_run_id("manual__a~b")
    with pytest.raises(InputRefused, match=r"208 characters long, over 100"):
        check_run_id("manual__" + "x" * 200)
    for fine in ("scheduled__2026-09-14T00:00:00+00:00", "backfill__2026-09-14T00:00:00+00:00", "manual_rerun.2"):
        assert check_run_id(fine) == fine


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "config" / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_longest_allowed_run_id_fits_every_field_it_reaches(path, monkeypatch):
    """A run id of RUN_ID_MAX_CHARS goes into RETRAIN_LINEAGE (CreateTrainingJob's Environment: 512 characters), the
    model package's metadata and its GeneratedBy, for every shipped config: the requests pass the validator."""
    from retrain import jobs
    from retrain.aws.requests import training_config

    config = load_config(path)
    run_id = "manual__" + "9" * (RUN_ID_MAX_CHARS - len("manual__"))
    assert check_run_id(run_id)
    ctx = jobs.RunContext(config.dag_id, run_id, *_interval())
    ctx.upstream.update(
        {
            "snapshot_raw": {"manifest_path": "s3://b/m.json"},
            "build_dataset": {
                "dataset_version": "ds-5f1c0a9e2b7d",
                "dataset_dir": f"s3://{config.aws.dataset_bucket}/datasets/{config.name}/ds-5f1c0a9e2b7d",
            },
            "train_model": {"model_data_url": "s3://b/model.tar.gz", "dataset_version": "ds-5f1c0a9e2b7d"},
            "evaluate_model": {"metrics_path": "s3://b/metrics.json"},
        }
    )
    code = CodeBundle(config.aws.artifact_bucket, "0" * 40, "c0de" * 16, ("a-1-py3-none-any.whl",))
    monkeypatch.setenv("RETRAIN_GIT_SHA", "0" * 40)
    request = training_config(config, ctx, code)  # validated inside
    assert len(request["Environment"]["RETRAIN_LINEAGE"]) <= 512
    package = model_package_request(config, ctx, code)  # validated inside
    assert package["CustomerMetadataProperties"]["airflow_run_id"] == run_id


def _interval():
    from datetime import UTC, datetime

    return datetime(2026, 9, 7, tzinfo=UTC), datetime(2026, 9, 14, tzinfo=UTC)


def test_the_local_airflow_and_mwaa_get_the_same_run_id_pattern():
    env_sh = (PROJECT_ROOT / "scripts" / "env.sh").read_text()
    assert f"export AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN='{RUN_ID_PATTERN}'" in env_sh
    from retrain_tools.deploy.bundle import AIRFLOW_CONFIGURATION_OPTIONS

    assert AIRFLOW_CONFIGURATION_OPTIONS["scheduler.allowed_run_id_pattern"] == RUN_ID_PATTERN


# --- 3. idempotency -----------------------------------------------------------------------------------


def test_client_token_follows_the_requests_content():
    """A retry sends the same request under the same token; a re-evaluated run (other metrics, same run id) gets a
    new token, since AWS refuses a token reused for other content."""
    from retrain.aws import sagemaker

    config = load_config(INTENT)
    lineage = _package_request("scheduled__2026-09-14T00:00:00+00:00")["CustomerMetadataProperties"]
    args = (config.aws, config.aws.inference_image_uri, "s3://b/model.tar.gz")
    first = sagemaker.model_package_request(*args, "s3://b/try-1/metrics.json", lineage, "d")
    retry = sagemaker.model_package_request(*args, "s3://b/try-1/metrics.json", lineage, "d")
    evaluated_again = sagemaker.model_package_request(*args, "s3://b/try-2/metrics.json", lineage, "d")
    assert first["ClientToken"] == retry["ClientToken"] != evaluated_again["ClientToken"]


def test_the_code_input_prefix_ends_with_a_slash():
    """An S3Prefix input takes every key that starts with it: ``.../source`` took ``sourcedir.tar.gz`` too."""
    code = CodeBundle("artifacts", "0" * 40, "c0de" * 16, ())
    assert code.source_uri.endswith("/source/") and not code.sourcedir_uri.startswith(code.source_uri)
    assert code.script_uri("include/etl/build_dataset.py").endswith("/source/include/etl/build_dataset.py")


# --- 5. worker memory ------------------------------------------------------------------------------------


class _NoWholeReads(io.RawIOBase):
    """A streaming body that refuses to be read whole (``read()`` or ``read(-1)``), as a 2 GB worker must."""

    def __init__(self, data: bytes) -> None:
        self._data, self.read_bytes, self.closed_by_caller = io.BytesIO(data), 0, False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the whole object was read into memory")
        chunk = self._data.read(size)
        self.read_bytes += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed_by_caller = True
        super().close()


def test_the_training_summary_is_streamed_out_of_model_tar_gz(monkeypatch):
    import os

    from retrain_airflow import aws_operators

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        summary = json.dumps({"weights_sha256": "ab" * 32}).encode()
        for name, data in (("training_summary.json", summary), ("model.safetensors", os.urandom(4 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = _NoWholeReads(buffer.getvalue())

    class _Object:
        def get(self):
            return {"Body": body}

    class _Hook:
        def __init__(self, aws_conn_id):
            pass

        def get_key(self, key, bucket):
            return _Object()

    monkeypatch.setattr("airflow.providers.amazon.aws.hooks.s3.S3Hook", _Hook)
    got = aws_operators.read_training_summary("s3://artifacts/runs/x/model.tar.gz")
    assert got == {"weights_sha256": "ab" * 32}
    assert body.read_bytes < len(buffer.getvalue()) // 2 and body.closed_by_caller  # stopped after the summary
