"""Config: the real files validate; every kind of bad file fails naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.config import ConfigError, config_paths, load_config

INTENT = Path(__file__).resolve().parents[2] / "config" / "models" / "intent.yaml"


def write(tmp_path: Path, text: str, name: str = "intent") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_every_shipped_config_validates():
    for path in config_paths():
        config = load_config(path)
        assert config.dag_id == f"retrain_{path.stem}"


def test_parse_time_and_run_time_fields_are_apart():
    config = load_config(INTENT)
    assert config.cron == "0 0 * * 1"
    assert config.training.hyperparameters["seed"] == 42
    assert "schedule" not in config.training.hyperparameters


def test_digest_is_stable_and_sensitive(tmp_path):
    original = load_config(INTENT)
    assert load_config(INTENT).digest() == original.digest()
    changed = load_config(write(tmp_path, INTENT.read_text().replace("seed: 42", "seed: 43")))
    assert changed.digest() != original.digest()


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("cadence: weekly", "cadence: hourly", "schedule.cadence"),
        ("max_active_runs: 1", "max_active_runs: 0", "dag.max_active_runs"),
        ("validation_fraction: 0.1", "validation_fraction: 1.5", "data.validation_fraction"),
        ("  owner: ml-platform\n", "", "dag.owner"),
        ("  retries: 2\n", "  retries: 2\n  retires: 3\n", "dag.retires"),
        ("    seed: 42", "    seed: [1, 2]", "training.hyperparameters"),
        ("start_date: 2026-09-07", "start_date: someday", "schedule.start_date"),
    ],
)
def test_invalid_field_names_file_and_field(tmp_path, old, new, field):
    assert f"field '{field}" in broken_config_error(tmp_path, old, new)


def broken_config_error(tmp_path, old: str, new: str) -> str:
    """The ConfigError of intent.yaml with ``old`` replaced by ``new``; it must name the file."""
    text = INTENT.read_text()
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_name_must_match_file(tmp_path):
    path = write(tmp_path, INTENT.read_text(), name="sentiment")
    with pytest.raises(ConfigError, match=r"sentiment\.yaml: field 'name' must equal"):
        load_config(path)


def test_bad_yaml_and_missing_labels_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: intent\n  bad: [indent"))
    path = write(tmp_path, INTENT.read_text().replace("data/banking77/categories.json", "data/nope.json"))
    with pytest.raises(ConfigError, match=r"field 'data.labels_file': no such file"):
        load_config(path)


def test_a_missing_corpus_file_is_named_and_an_unset_one_keeps_the_digest(tmp_path):
    adapter = INTENT.parent / "embedding_adapter.yaml"
    path = write(
        tmp_path,
        adapter.read_text().replace("data/retrieval/corpus.jsonl", "data/retrieval/nope.jsonl"),
        name="embedding_adapter",
    )
    with pytest.raises(
        ConfigError, match=r"embedding_adapter\.yaml: field 'data.corpus_file': no such file .*nope\.jsonl"
    ):
        load_config(path)
    # corpus_file came after configs were in use: left unset, it stays out of the digest, so intent.yaml keeps
    # the digest it has without the field (8b66cd02… from commit 588c736 until intent.yaml dropped its
    # aws_base_model, so that the aws jobs train base_model, and named the job image; 0796c87c… until the job lock
    # gained the model server's packages and the image tag moved; this value since, recomputed from those edits). The
    # deployment section, left at its defaults, stays out the same way.
    intent = load_config(INTENT)
    assert intent.data.corpus_file is None and intent.data.files() == [intent.data.labels_file]
    assert intent.deployment == type(intent.deployment)()
    assert intent.digest() == "18fd06acd4130276ba980a8fef5e5963b3288038899fd019d266b5d146d74cb7"


@pytest.mark.parametrize(
    ("old", "new", "field", "rule"),
    [
        ("  role_arn: arn:aws:iam::123456789012:role/retrain-jobs\n", "", "aws.role_arn", "Field required"),
        (
            "role_arn: arn:aws:iam::123456789012:role/",
            "role_arn: arn:aws:iam::1234:role/",
            "aws.role_arn",
            "IAM role ARN",
        ),
        (
            "role_arn: arn:aws:iam::123456789012:role/",
            "role_arn: arn:aws:s3::123456789012:role/",
            "aws.role_arn",
            "IAM role ARN",
        ),
        (
            "dataset_bucket: retrain-datasets-123456789012",
            "dataset_bucket: Retrain_Datasets",
            "aws.dataset_bucket",
            "S3 bucket name",
        ),
        ("golden_bucket: retrain-golden-123456789012", "golden_bucket: ab", "aws.golden_bucket", "3 to 63 characters"),
        (
            "artifact_bucket: retrain-artifacts-123456789012",
            "artifact_bucket: retrain..artifacts",
            "aws.artifact_bucket",
            "no '..'",
        ),
        ("  dataset_bucket: retrain-datasets-123456789012", "  dataset_bucket_name: x", "aws.dataset_bucket", ""),
        (
            "instance_type: ml.m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
            "instance_type: m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
            "aws.training.instance_type",
            "SageMaker instance type",
        ),
        ('glue_version: "5.0"', "glue_version: 5.0", "aws.glue.glue_version", "quoted string"),
        (
            "max_wait_seconds: 7200",
            "max_wait_seconds: 600",
            "aws.training",
            "max_wait_seconds must be set and >= max_runtime_seconds",
        ),
        (
            "subnets: [subnet-0a1b2c3d4e5f60718, subnet-0f1e2d3c4b5a69788]",
            "subnets: []",
            "aws.vpc",
            "both be set or both be empty",
        ),
        ("kms_key_arn: arn:aws:kms:", "kms_key_arn: arn:aws:kns:", "aws.kms_key_arn", "KMS key"),
    ],
)
def test_invalid_aws_field_names_file_field_and_rule(tmp_path, old, new, field, rule):
    message = broken_config_error(tmp_path, old, new)
    assert f"field '{field}" in message and rule in message


def test_aws_section_is_optional_and_glue_version_stays_a_string(tmp_path):
    text = INTENT.read_text()
    config = load_config(INTENT)
    assert config.aws is not None and config.aws.glue.glue_version == "5.0"
    local_only = write(tmp_path, text[: text.index("\naws:")] + "\n")
    assert load_config(local_only).aws is None


SENTIMENT = INTENT.with_name("sentiment.yaml")


def test_sentiment_is_staggered_a_day_after_intent_and_names_its_escalation_label():
    sentiment, intent = load_config(SENTIMENT), load_config(INTENT)
    assert (intent.cron, sentiment.cron) == ("0 0 * * 1", "0 0 * * 2")  # Monday, Tuesday
    assert sentiment.evaluation.task_options() == {"escalation_label": "negative"}
    assert intent.evaluation.task_options() == {}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("task: text_classification", "task: image_segmentation", "unknown task 'image_segmentation'"),
        (
            "  floors:\n    macro_f1: 0.88",
            "  floors:\n    recall_at_10: 0.88",
            "not headline metrics of task 'text_classification'",
        ),
        ("  escalation_label: negative  #", "  #", "gate.false_escalation needs evaluation.escalation_label"),
        (
            "  escalation_label: negative",
            "  escalation_label: angry",
            "field 'evaluation.escalation_label': 'angry' is not one of the labels",
        ),
        ("  cadence: weekly", "  cadence: monthly", "weekday applies to the weekly cadence only"),
        ("  weekday: tuesday", "  weekday: tues", "field 'schedule.weekday'"),
    ],
)
def test_task_and_schedule_rules_name_the_problem(tmp_path, old, new, message):
    text = SENTIMENT.read_text()
    assert old in text
    path = write(tmp_path, text.replace(old, new), name="sentiment")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_hyperparameter_with_a_line_break_is_refused_naming_the_field(tmp_path):
    """SageMaker's CreateTrainingJob refuses a line break in a hyperparameter value, so the config does first; a
    backslash-n written in single quotes stays one line and is the job's line break (llm_lora's prompt template)."""
    llm = INTENT.parent / "llm_lora.yaml"
    shipped = load_config(llm).training.hyperparameters["prompt_template"]
    assert "\n" not in shipped and "\\n" in shipped
    text = llm.read_text().replace(
        "prompt_template: 'Review: {prompt}\\nJSON", 'prompt_template: "Review: {prompt}\\nJSON'
    )
    text = text.replace("(sentiment, source): '", '(sentiment, source): "', 1)
    with pytest.raises(
        ConfigError,
        match=r"(?s)llm_lora\.yaml: .*field 'training.hyperparameters'.*'prompt_template' holds a line break",
    ):
        load_config(write(tmp_path, text, name="llm_lora"))


def copy_of_intent(config_dir: Path, name: str, package_group: str | None = None) -> Path:
    """intent.yaml as ``<name>.yaml``, as a person adding a model starts; its package group kept unless given."""
    text = INTENT.read_text().replace("name: intent", f"name: {name}")
    assert "model_package_group: retrain-intent\n" in text
    if package_group:
        text = text.replace("model_package_group: retrain-intent\n", f"model_package_group: {package_group}\n")
    return write(config_dir, text, name)


def test_every_shipped_config_is_unique_where_it_must_be():
    from retrain.config import config_problems

    configs, problems = config_problems()
    assert problems == [] and len(configs) == len(config_paths())


def test_two_models_sharing_a_model_package_group_are_refused_naming_both_files_and_the_field(tmp_path):
    """intent150 copied from intent keeps `aws.model_package_group: retrain-intent`: loaded together, refused."""
    from retrain.config import config_problems, load_model, load_model_among_all

    intent = write(tmp_path, INTENT.read_text())
    copy = copy_of_intent(tmp_path, "intent150")
    assert load_model("intent150", tmp_path).aws.model_package_group == "retrain-intent"  # each is valid on its own
    configs, problems = config_problems(tmp_path)
    assert len(configs) == 2 and len(problems) == 1
    assert problems[0].startswith(f"{copy}: field 'aws.model_package_group' is 'retrain-intent', as in {intent}: ")
    for name, mine, theirs in (
        ("intent", intent, copy),
        ("intent150", copy, intent),
    ):  # each model's DAG file refuses it
        with pytest.raises(ConfigError) as info:
            load_model_among_all(name, tmp_path)
        assert str(info.value).startswith(
            f"{mine}: field 'aws.model_package_group' is 'retrain-intent', as in {theirs}"
        )


def test_own_package_groups_a_local_only_model_and_a_broken_neighbour_pass_together(tmp_path):
    from retrain.config import config_problems, load_model_among_all

    write(tmp_path, INTENT.read_text())
    copy_of_intent(tmp_path, "intent150", package_group="retrain-intent150")
    local = INTENT.read_text().replace("name: intent", "name: local_only")
    write(tmp_path, local[: local.index("\naws:")] + "\n", "local_only")  # no aws section: nothing to share
    write(
        tmp_path,
        INTENT.read_text().replace("name: intent", "name: broken").replace("cadence: weekly", "cadence: hourly"),
        "broken",
    )
    configs, problems = config_problems(tmp_path)
    assert [config.name for config in configs] == ["intent", "intent150", "local_only"]
    assert len(problems) == 1 and "broken.yaml" in problems[0] and "field 'schedule.cadence'" in problems[0]
    assert load_model_among_all("intent", tmp_path).aws.model_package_group == "retrain-intent"


def test_the_mwaa_bundle_refuses_two_models_sharing_a_model_package_group(tmp_path):
    from retrain_tools.deploy.bundle import BuildError, load_configs

    write(tmp_path, INTENT.read_text())
    copy = copy_of_intent(tmp_path, "intent150")
    with pytest.raises(
        BuildError,
        match=f"{copy}: field 'aws.model_package_group' is 'retrain-intent', as in {tmp_path / 'intent.yaml'}",
    ):
        load_configs(tmp_path)


# --- the job image: only the project's image, built from this job lock ------------------------------------------

STOCK_DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311-ubuntu22.04-sagemaker"


def _with_image(tmp_path, field: str, uri: str):
    from retrain.aws.images import CHECKOUT_ROOT, lock_tag

    shipped = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain-jobs:{lock_tag(CHECKOUT_ROOT)}"
    text = INTENT.read_text()
    head, section = text.split(f"\n  {field}:\n", 1)
    assert shipped in section.split("\n", 1)[0], "intent.yaml names the job image of this lock"
    return write(tmp_path, f"{head}\n  {field}:\n{section.replace(shipped, uri, 1)}")


@pytest.mark.parametrize("field", ["training", "processing"])
def test_a_stock_deep_learning_container_is_refused_naming_the_field(tmp_path, field):
    with pytest.raises(
        ConfigError, match=rf"intent\.yaml.*\n.*field 'aws\.{field}\.image_uri': .*not the project's job image"
    ):
        load_config(_with_image(tmp_path, field, STOCK_DLC))


def test_an_endpoint_image_other_than_the_job_image_is_refused_naming_the_field(tmp_path):
    """The endpoint runs the job image as `serve`; the stock inference DLC cannot run these models."""
    text = INTENT.read_text()
    line = next(x for x in text.splitlines() if x.startswith("  inference_image_uri:"))
    path = write(tmp_path, text.replace(line, f"  inference_image_uri: {STOCK_DLC}"))
    with pytest.raises(ConfigError, match=r"field 'aws\.inference_image_uri': .*not the project's job image"):
        load_config(path)


def test_a_job_image_tag_built_from_another_lock_is_refused_naming_the_field(tmp_path):
    other = "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain-jobs:lock-00000000000000000000"
    with pytest.raises(ConfigError, match=r"field 'aws\.training\.image_uri': .*was not built from this job lock"):
        load_config(_with_image(tmp_path, "training", other))


def test_a_job_image_by_digest_is_refused_since_its_lock_cannot_be_checked(tmp_path):
    pinned = "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain-jobs@sha256:" + "a" * 64
    with pytest.raises(ConfigError, match=r"field 'aws\.processing\.image_uri'"):
        load_config(_with_image(tmp_path, "processing", pinned))


def test_a_job_image_in_another_region_is_refused(tmp_path):
    from retrain.aws.images import CHECKOUT_ROOT, lock_tag

    elsewhere = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/retrain-jobs:{lock_tag(CHECKOUT_ROOT)}"
    with pytest.raises(ConfigError, match=r"training\.image_uri: its registry is not in region 'us-east-1'"):
        load_config(_with_image(tmp_path, "training", elsewhere))


def test_the_lock_tag_follows_every_lock_file(tmp_path):
    from retrain.aws.images import CHECKOUT_ROOT, LOCK_FILES, LockMissing, lock_tag

    for name in LOCK_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((CHECKOUT_ROOT / name).read_bytes())
    assert lock_tag(tmp_path) == lock_tag(CHECKOUT_ROOT)
    for name in LOCK_FILES:
        before = lock_tag(tmp_path)
        with (tmp_path / name).open("a") as f:
            f.write("\n# changed\n")
        assert lock_tag(tmp_path) != before, name
    (tmp_path / LOCK_FILES[0]).unlink()
    with pytest.raises(LockMissing, match="requirements-jobs.txt: lock file of the job image is missing"):
        lock_tag(tmp_path)


# --- base models: the same weights on both backends, of an architecture the job code builds -----------------


BASE_LINE = "  base_model: all-MiniLM-L6-v2"


def with_base(text: str, *lines: str) -> str:
    """``text`` (a shipped config) with its base_model line replaced by ``lines``."""
    start = text.index(BASE_LINE)
    end = text.index("\n", start)
    return text[:start] + "\n".join(lines) + text[end:]


@pytest.mark.parametrize(
    ("aws_base_model", "why"),
    [
        ("distilbert-base-uncased", "not a catalogued base model"),  # main's shipped value: DistilBERT
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "not a catalogued base model"),  # the hub's bf16, not the local weights
        ("SmolLM2-135M-Instruct", "is a 'llama' model, and the text_classification job code builds only bert"),
    ],
)
def test_an_aws_base_model_the_jobs_cannot_train_as_the_local_runs_do_is_refused_naming_file_and_field(
    tmp_path, aws_base_model, why
):
    """An aws base model must be a catalogued one (a staged copy of the weights the local runs train, checked by its
    digest) of an architecture the task type's job code builds: main's DistilBERT hub id would have failed inside the
    job (``'DistilBertModel' object has no attribute 'encoder'``), and it is refused at load time instead."""
    text = with_base(INTENT.read_text(), BASE_LINE, f"  aws_base_model: {aws_base_model}")
    with pytest.raises(ConfigError, match=r"intent\.yaml: invalid model config") as raised:
        load_config(write(tmp_path, text))
    assert f"field 'training.aws_base_model': {aws_base_model!r} " in str(raised.value) and why in str(raised.value)


def test_a_base_model_directory_of_an_unsupported_architecture_is_refused_and_a_supported_one_is_not(tmp_path):
    """A local-only model may train a model directory; its config.json's model_type must be one its job code builds."""
    for model_type in ("distilbert", "bert"):
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    local_only = INTENT.read_text().split("\naws:")[0] + "\n"
    bad = write(tmp_path, with_base(local_only, f"  base_model: {tmp_path / 'distilbert'}"))
    with pytest.raises(ConfigError, match=r"field 'training.base_model': .* is a 'distilbert' model, and the "):
        load_config(bad)
    assert load_config(write(tmp_path, with_base(local_only, f"  base_model: {tmp_path / 'bert'}"))).aws is None


def test_the_aws_jobs_of_a_model_train_a_catalogued_base_model(tmp_path):
    """With an aws section and no aws_base_model, base_model is what the aws jobs train: a directory or an unknown
    name has no staged copy, so it is refused; each shipped config's aws jobs train its local base model."""
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    text = with_base(INTENT.read_text(), f"  base_model: {tmp_path / 'bert'}")
    with pytest.raises(ConfigError, match=r"field 'training.base_model': .* is not a catalogued base model"):
        load_config(write(tmp_path, text))
    for path in config_paths():
        training = load_config(path).training
        assert (training.aws_base_model, training.aws_base) == (None, training.base_model), path.name
