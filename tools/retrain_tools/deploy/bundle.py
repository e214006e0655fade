"""``bin/retrain deploy build``: the MWAA bundle in ``dist/mwaa/``, byte-reproducible per commit.

MWAA sees only ``dags/``, ``plugins.zip``, ``requirements.txt`` and ``startup.sh`` (each an S3 object
version of the environment); the jobs see the code bundle under ``code/<content digest>/`` of the artifact
bucket. Layout of ``dist/mwaa/``::

    dags/                  DAG files, config/models/*.yaml, their data files (labels, corpus), constraints.txt,
                           deploy-manifest.json and .airflowignore (everything but the DAG files)
    plugins.zip            retrain/ and retrain_airflow/ at the root
    requirements.txt       requirements.txt plus a --constraint line naming dags/constraints.txt
    startup.sh             exports RETRAIN_BACKEND=aws, RETRAIN_PROJECT_ROOT, the buckets, MLflow,
                           the git sha and the code digest; never an MWAA-protected variable
    code/<digest>/         retrain.zip (Glue --extra-py-files), sourcedir.tar.gz (SageMaker training's code
                           channel), source/ (the same tree unpacked) and glue-wheels/ (Glue's
                           --additional-python-modules, from the job lock)
    code/base-models/<name>/<weights digest>/
                           the files of each aws base model, copied from its pip package in the job
                           environment after checking them against their pin (retrain/base_models.py)
    deploy-manifest.json   git sha, commit date, config digests, code digest, file digests, the job image's
                           lock tag and pushed digests (`bin/retrain deploy image`), the Glue wheels

Nothing is written to ``dist/mwaa`` until every check passed: configs validate, the DAGs parse
from the staged bundle as MWAA parses them, and requirements.txt resolves under MWAA's
constraints. The bundle is staged beside ``dist/mwaa`` and swapped in by rename; the
previous bundle is kept as ``dist/mwaa.previous``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retrain.aws.images import TAG_ENV, lock_tag
from retrain.aws.requests import GLUE_WHEELS_ENV
from retrain.base_models import known_base_model
from retrain.config import ConfigError, ModelConfig, clashes, config_paths, load_config
from retrain.locks import exclusive
from retrain.paths import PROJECT_ROOT, job_python
from retrain.paths import config_dir as current_config_dir
from retrain.user_input import RUN_ID_PATTERN
from retrain_tools.dagfiles import dag_file_text
from retrain_tools.deploy import archive, image

MWAA_AIRFLOW_HOME = "/usr/local/airflow"  # where MWAA puts dags/ and plugins/ (AIRFLOW_HOME, protected)
CONSTRAINTS_NAME = "constraints.txt"
MANIFEST_NAME = "deploy-manifest.json"
DEFAULT_OUT = PROJECT_ROOT / "dist" / "mwaa"
# MWAA sets these itself and refuses a startup script that changes them (MWAA's documentation names the
# first three); Airflow settings go through the environment's AirflowConfigurationOptions, never AIRFLOW__*.
MWAA_PROTECTED = ("PYTHONPATH", "AIRFLOW_HOME", "AWS_REGION", "AWS_DEFAULT_REGION", "PATH", "JAVA_HOME")
SKIPPED_PARTS = ("__pycache__",)
AIRFLOW_CONFIGURATION_OPTIONS = {"scheduler.allowed_run_id_pattern": RUN_ID_PATTERN}
"""What the MWAA environment must set: run ids that fit AWS's fields (retrain.user_input)."""


class BuildError(ValueError):
    """The bundle cannot be built; the message names the file and, for configs, the field."""


@dataclass(frozen=True)
class GitIdentity:
    """The commit a bundle is built from: sha, whether the tree had local edits, and its commit date."""

    sha: str
    dirty: bool
    date: str

    @property
    def label(self) -> str:
        return f"{self.sha}-dirty" if self.dirty else self.sha


def git_identity(project_root: Path) -> GitIdentity:
    """HEAD's sha and commit date (ISO 8601), and whether tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project_root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return GitIdentity(
            git("rev-parse", "HEAD"),
            bool(git("status", "--porcelain", "--untracked-files=no")),
            git("show", "-s", "--format=%cI", "HEAD"),
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"{project_root}: not a git checkout, so the bundle has no sha to record ({exc})") from None


def load_configs(config_dir: Path) -> list[ModelConfig]:
    """Every model config, validated, each with an ``aws:`` section, no two sharing a field that is unique per model
    (``retrain.config.UNIQUE_PER_MODEL``); all problems in one BuildError."""
    configs, problems = {}, []
    paths = config_paths(config_dir)
    if not paths:
        raise BuildError(f"{config_dir}: no model configs (*.yaml) to deploy")
    for path in paths:
        try:
            config = load_config(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if config.aws is None:
            problems.append(f"{path}: field 'aws': RETRAIN_BACKEND=aws (MWAA) needs the model's aws section")
        configs[path] = config
    problems += clashes(configs)
    if problems:
        raise BuildError("\n".join(problems))
    return list(configs.values())


SHARED_FIELDS = {  # one value per deployment: startup.sh exports it for every model
    "RETRAIN_DATASET_BUCKET": "dataset_bucket",
    "RETRAIN_ARTIFACT_BUCKET": "artifact_bucket",
    "RETRAIN_GOLDEN_BUCKET": "golden_bucket",
    "MLFLOW_TRACKING_URI": "mlflow_tracking_server_arn",
    "RETRAIN_KMS_KEY_ARN": "kms_key_arn",  # the store encrypts what it writes under it (SSE-KMS)
}


def deployment_settings(configs: list[ModelConfig], config_dir: Path) -> dict[str, str]:
    """The environment's settings from the models' aws sections, which must agree on each of them."""
    first = configs[0]
    settings = {}
    for variable, field in SHARED_FIELDS.items():
        value = getattr(first.aws, field)
        for other in configs[1:]:
            if getattr(other.aws, field) != value:
                raise BuildError(
                    f"{config_dir / (other.name + '.yaml')}: field 'aws.{field}' is {getattr(other.aws, field)!r} but "
                    f"{first.name}.yaml has {value!r}; one MWAA environment exports one {variable}"
                )
        if value is not None:
            settings[variable] = value
    settings["RETRAIN_MLFLOW_ARTIFACT_ROOT"] = f"s3://{first.aws.artifact_bucket}/mlartifacts"
    return settings


def _tree(root: Path, prefix: str, suffixes: tuple[str, ...] = (".py",)) -> dict[str, bytes]:
    """``prefix/<relative path>`` -> bytes of every file under ``root`` with one of ``suffixes``."""
    return {
        f"{prefix}/{path.relative_to(root).as_posix()}": path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in suffixes and not set(path.parts) & set(SKIPPED_PARTS)
    }


def data_files(configs: list[ModelConfig], project_root: Path) -> dict[str, bytes]:
    """The data files of every model (labels file, retrieval corpus), under their project-relative names."""
    return {name: (project_root / name).read_bytes() for config in configs for name in config.data.files()}


def code_files(configs: list[ModelConfig], project_root: Path) -> dict[str, bytes]:
    """The job code: include/ and plugins/retrain/ (PYTHONPATH in the containers) and data files.

    No requirements.txt: the job image carries the job lock, and the training toolkit would pip-install one at
    every job start, from the internet and over the image's pins."""
    return {
        **_tree(project_root / "include", "include"),
        **_tree(project_root / "plugins" / "retrain", "plugins/retrain"),
        **data_files(configs, project_root),
    }


def staging_source(name: str, python: Path) -> Path:
    """Where the job environment (``python``) has the files of base model ``name``, checked against its pin there."""
    probe = "import sys; from retrain_jobs.base import staging_source; print(staging_source(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT / 'plugins'}"}
    try:
        done = subprocess.run([str(python), "-c", probe, name], env=env, capture_output=True, text=True, timeout=300)
    except OSError as exc:
        raise BuildError(f"base model {name}: the job environment ({python}) that holds it cannot run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BuildError(f"base model {name}: its files in the job environment cannot be staged: {last}")
    return Path(done.stdout.strip().splitlines()[-1])


def stage_base_models(stage_dir: Path, configs: list[ModelConfig], python: Path) -> dict[str, dict[str, str]]:
    """Copy the files of every aws base model the configs train into ``code/base-models/<name>/<digest>/``, which
    ``deploy push`` uploads to the artifact bucket and the train and evaluate jobs receive as an input (the same bytes
    the local runs read, so AWS trains the weights they scored); returns the manifest's ``base_models``."""
    staged = {}
    for model in sorted({known_base_model(c.training.aws_base) for c in configs}, key=lambda m: m.name):
        source = staging_source(model.name, python)
        names = model.files or tuple(p.name for p in sorted(source.iterdir()) if p.is_file())
        target = stage_dir / model.staged_key
        target.mkdir(parents=True)
        for name in names:
            shutil.copyfile(source / name, target / name)
        staged[model.name] = {"prefix": model.staged_key, "weights_digest": model.weights_digest}
    return staged


def glue_wheels(project_root: Path, python: str | Path, cache_root: Path) -> dict[str, bytes]:
    """build_dataset's Python modules for Glue (``image.GLUE_PACKAGES`` and their dependencies): the job lock's
    wheels for Glue 5's platform, downloaded once per lock into ``cache_root/<lock tag>``."""
    cache = cache_root / lock_tag(project_root)
    with exclusive(cache_root / ".lock"):  # two builds (or test workers) at once download once
        if not cache.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache_root))
            constraints = project_root / "constraints" / "jobs.txt"
            image.download_wheels(python, image.glue_requirements(project_root), partial, constraints)
            os.rename(partial, cache)
    return {path.name: path.read_bytes() for path in sorted(cache.glob("*.whl"))}


def glue_py_files(code: dict[str, bytes]) -> dict[str, bytes]:
    """retrain.zip for Glue's --extra-py-files: retrain/ and include/'s packages at the zip root."""
    out = {}
    for name, data in code.items():
        for root in ("plugins/", "include/"):
            if name.startswith(root) and name.endswith(".py"):
                out[name[len(root) :]] = data
    return out


def airflowignore(dag_names: list[str]) -> bytes:
    """Everything in dags/ but the DAG files: MWAA's DAG processor then never opens them."""
    return (
        "# Generated by `bin/retrain deploy build`: only retrain_<model>.py are DAG files.\n"
        f"config/\ndata/\n{CONSTRAINTS_NAME}\n{MANIFEST_NAME}\n"
    ).encode()


def dags_files(configs: list[ModelConfig], config_dir: Path, project_root: Path) -> dict[str, bytes]:
    """dags/: one DAG file per model, its config and data files (RETRAIN_PROJECT_ROOT is dags/ on MWAA), constraints."""
    files = {f"retrain_{c.name}.py": dag_file_text(c.name).encode() for c in configs}
    files |= {f"config/models/{c.name}.yaml": (config_dir / f"{c.name}.yaml").read_bytes() for c in configs}
    files |= data_files(configs, project_root)
    files[CONSTRAINTS_NAME] = (project_root / "constraints" / "airflow.txt").read_bytes()
    files[".airflowignore"] = airflowignore(sorted(files))
    return files


def plugin_files(project_root: Path) -> dict[str, bytes]:
    """plugins.zip: the retrain and retrain_airflow packages at the zip's root."""
    return {
        **_tree(project_root / "plugins" / "retrain", "retrain"),
        **_tree(project_root / "plugins" / "retrain_airflow", "retrain_airflow"),
    }


def requirements_text(project_root: Path) -> str:
    """requirements.txt for MWAA: the project's, plus a --constraint line naming the constraints shipped in dags/."""
    body = "".join(
        line + "\n"
        for line in (project_root / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return (
        "# Generated by `bin/retrain deploy build` from requirements.txt. MWAA installs it with\n"
        "# `pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt`; the line below\n"
        "# names constraints/airflow.txt (MWAA's pins plus ours), shipped as dags/constraints.txt.\n"
        f"--constraint {MWAA_AIRFLOW_HOME}/dags/{CONSTRAINTS_NAME}\n\n" + body
    )


def localized_requirements(text: str, airflow_home: Path) -> str:
    """The bundle's requirements.txt with MWAA's AIRFLOW_HOME replaced by ``airflow_home`` (for checks off MWAA)."""
    return text.replace(f"{MWAA_AIRFLOW_HOME}/", f"{airflow_home}/")


def startup_script(settings: dict[str, str], git: GitIdentity, code_digest: str) -> str:
    """startup.sh: what the Airflow processes on MWAA need in their environment; no protected variable."""
    exports = {
        "RETRAIN_BACKEND": "aws",
        "RETRAIN_PROJECT_ROOT": "${AIRFLOW_HOME}/dags",
        "RETRAIN_GIT_SHA": git.label,
        "RETRAIN_CODE_DIGEST": code_digest,
        **settings,
    }
    bad = sorted(name for name in exports if name in MWAA_PROTECTED or name.startswith("AIRFLOW__"))
    if bad:
        raise BuildError(f"startup.sh: {', '.join(bad)} are MWAA's to set")
    lines = [
        "#!/bin/sh",
        "# Generated by `bin/retrain deploy build`; MWAA sources it before starting each Airflow process.",
        "# RETRAIN_PROJECT_ROOT is dags/, where the bundle puts config/models/ and the data files.",
        *(f'export {name}="{value}"' for name, value in exports.items()),
    ]
    return "\n".join(lines) + "\n"


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in sorted(files.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(archive.FILE_MODE)


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file in the bundle, by relative path; the manifest and code/<digest>/source/
    (which code_digest covers) left out."""
    return {
        p.relative_to(root).as_posix(): archive.sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME and "source" not in p.relative_to(root).parts[2:3]
    }


def job_image(configs: list[ModelConfig], project_root: Path) -> dict:
    """The manifest's record of the job image: the lock's tag and each URI the configs name, with the digest
    `bin/retrain deploy image` recorded for it (None: not pushed from this checkout's dist/)."""
    tag = lock_tag(project_root)
    recorded = image.recorded_digests(project_root / "dist", tag)
    return {"tag": tag, "images": {uri: recorded.get(uri) for uri in image.target_uris(configs, tag)}}


def stage(
    stage_dir: Path,
    configs: list[ModelConfig],
    config_dir: Path,
    project_root: Path,
    git: GitIdentity,
    python: Path,
    job_env_python: Path | None = None,
) -> dict:
    """Write the whole bundle into ``stage_dir`` (the Glue wheels downloaded by ``python``'s pip, the base models' files
    from ``job_env_python``'s environment); return its manifest."""
    base_models = stage_base_models(stage_dir, configs, job_env_python or job_python())
    code = code_files(configs, project_root)
    wheels = glue_wheels(project_root, python, project_root / "dist" / "glue-wheels")
    code_digest = archive.tree_digest({**code, **{f"glue-wheels/{name}": data for name, data in wheels.items()}})
    images = job_image(configs, project_root)
    settings = {
        **deployment_settings(configs, config_dir),
        TAG_ENV: images["tag"],
        GLUE_WHEELS_ENV: ",".join(sorted(wheels)),
    }
    code_dir = stage_dir / "code" / code_digest
    write_files(code_dir / "source", code)
    write_files(code_dir / "glue-wheels", wheels)
    archive.write_tar_gz(code_dir / "sourcedir.tar.gz", code)
    archive.write_zip(code_dir / "retrain.zip", glue_py_files(code))
    write_files(stage_dir / "dags", dags_files(configs, config_dir, project_root))
    archive.write_zip(stage_dir / "plugins.zip", plugin_files(project_root))
    (stage_dir / "requirements.txt").write_text(requirements_text(project_root))
    (stage_dir / "startup.sh").write_text(startup_script(settings, git, code_digest))
    manifest = {
        "format": 1,
        "git_sha": git.label,
        "date": git.date,
        "code_digest": code_digest,
        "code_prefix": f"code/{code_digest}",
        "base_models": base_models,
        "configs": {c.name: {"file": f"dags/config/models/{c.name}.yaml", "digest": c.digest()} for c in configs},
        "environment": {"RETRAIN_BACKEND": "aws", **settings},
        # The MWAA environment's AirflowConfigurationOptions (Airflow settings never go through startup.sh).
        "airflow_configuration_options": AIRFLOW_CONFIGURATION_OPTIONS,
        "job_image": images,
        "glue_wheels": sorted(wheels),
        "files": file_digests(stage_dir),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    for path in (stage_dir / MANIFEST_NAME, stage_dir / "dags" / MANIFEST_NAME):
        path.write_text(text)
    for path in stage_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.name == "startup.sh" else archive.FILE_MODE)
    return manifest


def swap_in(stage_dir: Path, out_dir: Path, log: Callable[[str], None]) -> None:
    """Replace ``out_dir`` by ``stage_dir`` with two renames; the old bundle becomes ``<out>.previous``."""
    previous = out_dir.with_name(out_dir.name + ".previous")
    if out_dir.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.rename(out_dir, previous)
        log(f"previous bundle kept in {previous}")
    os.rename(stage_dir, out_dir)


def build(
    out_dir: Path = DEFAULT_OUT,
    config_dir: Path | None = None,
    project_root: Path = PROJECT_ROOT,
    *,
    python: str | Path | None = None,
    check_resolve: bool = True,
    allow_dirty: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Build, check and swap in the bundle; BuildError (nothing written to ``out_dir``) on bad input."""
    from retrain_tools.deploy import checks

    out_dir, config_dir = Path(out_dir).absolute(), Path(config_dir or current_config_dir())
    git = git_identity(project_root)
    if git.dirty and not allow_dirty:
        raise BuildError(
            f"{project_root}: tracked files have local edits; commit them (the manifest names a commit), "
            "or pass --allow-dirty for a bundle that jobs will refuse to run (git sha '<sha>-dirty')"
        )
    configs = load_configs(config_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-build-", dir=out_dir.parent))
    try:
        python = python or checks.airflow_python(project_root)
        manifest = stage(stage_dir, configs, config_dir, project_root, git, python)
        log(f"parsing the bundle's DAGs as MWAA does (RETRAIN_BACKEND=aws, FAB auth manager) with {python}")
        checks.require_clean_parse(stage_dir, python)
        if check_resolve:
            log("resolving requirements.txt under MWAA 3.3.1's constraints (pip --dry-run)")
            checks.require_resolve(stage_dir, python)
        swap_in(stage_dir, out_dir, log)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    return manifest
