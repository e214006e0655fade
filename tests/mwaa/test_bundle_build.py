"""``bin/retrain deploy build``: byte-reproducible, complete, and refusing bad input before writing anything."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from retrain_tools.deploy import bundle as bundle_module
from retrain_tools.deploy.bundle import MWAA_PROTECTED, BuildError
from retrain_tools.deploy.checks import BundleCheckFailed
from retrain_tools.deploy.resolve import ResolveError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INTENT = PROJECT_ROOT / "config" / "models" / "intent.yaml"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_builds_of_one_commit_are_byte_identical(mwaa_bundle, tmp_path):
    again = tmp_path / "mwaa"
    bundle_module.build(again, check_resolve=False, allow_dirty=True, log=lambda line: None)
    first, second = tree_bytes(mwaa_bundle), tree_bytes(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


def test_manifest_names_commit_date_configs_and_code(mwaa_bundle):
    manifest = json.loads((mwaa_bundle / "deploy-manifest.json").read_text())
    git = bundle_module.git_identity(PROJECT_ROOT)
    assert manifest["git_sha"] == git.label and manifest["date"] == git.date  # the commit's date, not the build's
    from retrain.config import load_config

    assert manifest["configs"]["intent"]["digest"] == load_config(INTENT).digest()
    code = mwaa_bundle / manifest["code_prefix"]
    assert manifest["code_prefix"] == f"code/{manifest['code_digest']}" and (code / "sourcedir.tar.gz").is_file()
    assert (mwaa_bundle / "dags" / "deploy-manifest.json").read_bytes() == (
        mwaa_bundle / "deploy-manifest.json"
    ).read_bytes()


def test_plugins_zip_holds_both_packages_at_its_root_with_fixed_times(mwaa_bundle):
    with zipfile.ZipFile(mwaa_bundle / "plugins.zip") as archive:
        names = archive.namelist()
        assert "retrain/__init__.py" in names and "retrain_airflow/factory.py" in names
        assert names == sorted(names)
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_plugins_zip_holds_the_runtime_and_no_developer_tooling(mwaa_bundle):
    """What runs on MWAA's workers ships; the CLI, the deploy tool, seeding, DAG-file generation, the REST
    client and the docs generator do not (they live in tools/retrain_tools/)."""
    with zipfile.ZipFile(mwaa_bundle / "plugins.zip") as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"retrain", "retrain_airflow"}, tops
    tooling = [
        n
        for n in names
        if n.rsplit("/", 1)[-1] in {"cli.py", "seed.py", "dagfiles.py", "airflow_api.py", "docs.py", "aws_docs.py"}
        or n.startswith(("retrain/deploy/", "retrain_tools/"))
    ]
    assert tooling == []
    for module in (
        "retrain/jobs.py",
        "retrain/runner.py",
        "retrain/gate.py",
        "retrain/store/__init__.py",
        "retrain/store/s3.py",
        "retrain/tasks/__init__.py",
        "retrain_airflow/aws_operators.py",
    ):
        assert module in names, module


def test_job_code_bundle_has_scripts_sourcedir_glue_zip_and_glue_wheels(mwaa_bundle):
    manifest = json.loads((mwaa_bundle / "deploy-manifest.json").read_text())
    code = mwaa_bundle / manifest["code_prefix"]
    with tarfile.open(code / "sourcedir.tar.gz") as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert {
        "include/retrain_jobs/train.py",
        "include/retrain_jobs/evaluate.py",
        "plugins/retrain/jobs.py",
        "data/banking77/categories.json",
        "data/retrieval/passage_ids.json",
        "data/retrieval/corpus.jsonl",
    } <= set(members)  # every model's data files
    assert {m.mtime for m in members.values()} == {bundle_module.archive.FIXED_EPOCH} and {
        m.uid for m in members.values()
    } == {0}
    # No requirements.txt: the training toolkit would pip-install it from the internet at every start, over the image
    assert "requirements.txt" not in members
    wheels = sorted(p.name for p in (code / "glue-wheels").iterdir())
    assert wheels == manifest["glue_wheels"] and all(name.endswith(".whl") for name in wheels)
    assert {name.split("-")[0].lower() for name in wheels} >= {"pandas", "pyarrow", "boto3", "numpy"}
    startup = (mwaa_bundle / "startup.sh").read_text()
    assert f'export RETRAIN_GLUE_WHEELS="{",".join(wheels)}"' in startup
    assert f'export RETRAIN_JOB_IMAGE_TAG="{manifest["job_image"]["tag"]}"' in startup
    assert set(manifest["job_image"]["images"]) == {
        f"123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain-jobs:{manifest['job_image']['tag']}"
    }
    with zipfile.ZipFile(code / "retrain.zip") as archive:
        assert {"retrain/jobs.py", "etl/build_dataset.py"} <= set(archive.namelist())
    assert (code / "source" / "include" / "etl" / "build_dataset.py").is_file()


def test_requirements_carry_a_constraint_line_and_startup_exports_no_protected_variable(mwaa_bundle):
    requirements = (mwaa_bundle / "requirements.txt").read_text()
    assert "--constraint /usr/local/airflow/dags/constraints.txt" in requirements
    assert (mwaa_bundle / "dags" / "constraints.txt").read_bytes() == (
        PROJECT_ROOT / "constraints" / "airflow.txt"
    ).read_bytes()
    exported = [
        line.split("=", 1)[0].removeprefix("export ")
        for line in (mwaa_bundle / "startup.sh").read_text().splitlines()
        if line.startswith("export ")
    ]
    assert "RETRAIN_BACKEND" in exported and "RETRAIN_CODE_DIGEST" in exported and "RETRAIN_GIT_SHA" in exported
    assert not [name for name in exported if name in MWAA_PROTECTED or name.startswith("AIRFLOW__")]
    ignored = (mwaa_bundle / "dags" / ".airflowignore").read_text().split()
    assert {"config/", "data/", "constraints.txt", "deploy-manifest.json"} <= set(ignored)


def _broken_config_dir(tmp_path: Path, old: str, new: str) -> Path:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    text = INTENT.read_text()
    assert old in text, old
    (config_dir / "intent.yaml").write_text(text.replace(old, new))
    return config_dir


def _existing_bundle(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "dist" / "mwaa"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("a bundle built earlier")
    return out, tree_bytes(tmp_path / "dist")


def test_an_invalid_config_stops_the_build_naming_file_and_field(tmp_path):
    config_dir = _broken_config_dir(
        tmp_path,
        "instance_type: ml.m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
        "instance_type: m5.xlarge\n    instance_count: 1\n    volume_size_gb: 30\n    use_spot",
    )
    out, before = _existing_bundle(tmp_path)
    with pytest.raises(BuildError) as info:
        bundle_module.build(out, config_dir, allow_dirty=True, log=lambda line: None)
    assert str(config_dir / "intent.yaml") in str(info.value) and "field 'aws.training.instance_type'" in str(
        info.value
    )
    assert tree_bytes(tmp_path / "dist") == before  # nothing written, nothing lost, no staging left behind


def test_a_dag_that_fails_to_parse_on_mwaa_stops_the_build(tmp_path):
    """Valid YAML for the schema, but the DAG is an import error under MWAA's FAB login: no approver id."""
    fab_line = next(line + "\n" for line in INTENT.read_text().splitlines() if line.startswith("  fab_user_ids:"))
    config_dir = _broken_config_dir(tmp_path, fab_line, "")
    out, before = _existing_bundle(tmp_path)
    with pytest.raises(BundleCheckFailed) as info:
        bundle_module.build(out, config_dir, allow_dirty=True, check_resolve=False, log=lambda line: None)
    message = str(info.value)
    assert "dags/retrain_intent.py" in message and "dags/config/models/intent.yaml" in message
    assert "field 'approval.fab_user_ids'" in message
    assert tree_bytes(tmp_path / "dist") == before


def test_requirements_that_do_not_resolve_under_mwaa_are_refused(tmp_path):
    """A project whose requirements.txt asks for a boto3 newer than MWAA's pin: refused at build time."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(
        PROJECT_ROOT,
        project,
        ignore=shutil.ignore_patterns(".venv-*", ".git", "data", "dist", ".retrain", ".airflow", "__pycache__"),
        symlinks=True,
    )
    for model_data in (
        PROJECT_ROOT / "data"
    ).iterdir():  # labels files and SOURCE.md of every model; the bulky samples stay out
        shutil.copytree(model_data, project / "data" / model_data.name, ignore=shutil.ignore_patterns("*.csv", "*.txt"))
    with (project / "requirements.txt").open("a") as f:
        f.write("boto3==1.44.5\n")
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "t"],
        cwd=project,
        check=True,
    )
    out, before = _existing_bundle(tmp_path)
    with pytest.raises(ResolveError) as info:
        bundle_module.build(
            out,
            project / "config" / "models",
            project,
            python=bundle_module_python(),
            allow_dirty=True,
            log=lambda line: None,
        )
    assert "boto3" in str(info.value) and "requirements.txt" in str(info.value)
    assert tree_bytes(tmp_path / "dist") == before


def bundle_module_python() -> Path:
    from retrain_tools.deploy.checks import airflow_python

    return airflow_python(PROJECT_ROOT)


def test_a_rebuild_keeps_the_previous_bundle(tmp_path):
    out, _ = _existing_bundle(tmp_path)
    bundle_module.build(out, check_resolve=False, allow_dirty=True, log=lambda line: None)
    assert (out.with_name("mwaa.previous") / "keep.txt").read_text() == "a bundle built earlier"
    assert (out / "plugins.zip").is_file() and not list(out.parent.glob(".mwaa-build-*"))
