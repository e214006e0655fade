"""The job image (images/Dockerfile) is the job environment's lock, and .venv-jobs is that lock too.

No Docker engine runs here, so the image is checked through what decides it: the lock resolves for the image's
platform (linux x86_64, CPython 3.11) as wheels, the Dockerfile installs exactly what the Makefile installs into
.venv-jobs, and .venv-jobs holds exactly the lock at the image's Python minor version. pip's index is needed
(``pip install --dry-run``; pip's local cache serves what it has).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from jobscripts import JOBSIDE  # tests/ is on pytest's pythonpath
from retrain.paths import PROJECT_ROOT, job_python
from retrain_tools.deploy import image

DOCKERFILE = PROJECT_ROOT / "images" / "Dockerfile"
# The image's environment for evaluating dependency markers: CPython 3.11 on linux x86_64.
TARGET = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _requirement_lines(name: str) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in (PROJECT_ROOT / name).read_text().splitlines()]
    return [line for line in lines if line]


def _pip_dry_run(requirements: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet"]
    return subprocess.run(
        [*command, *image.PLATFORM_ARGS, "--report", "-", *requirements], capture_output=True, text=True, timeout=300
    )


def _job_env_facts() -> dict:
    env = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT / 'plugins'}"}
    result = subprocess.run(
        [str(job_python()), str(JOBSIDE / "job_env_facts.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_lock_resolves_as_wheels_for_the_images_platform_and_is_closed_under_its_dependencies():
    started = time.monotonic()
    result = _pip_dry_run(image.wheel_requirements(PROJECT_ROOT))
    assert result.returncode == 0, f"the lock has no wheel for linux x86_64 / CPython 3.11:\n{result.stderr[-3000:]}"
    pins = image.lock_pins(PROJECT_ROOT)
    no_deps = {image.normalise(Requirement(r).name) for r in _requirement_lines("requirements-jobs-nodeps.txt")}
    unmet = []
    for item in json.loads(result.stdout)["install"]:
        if image.normalise(item["metadata"]["name"]) in no_deps:  # installed --no-deps on purpose
            continue
        assert item["download_info"]["url"].split("#")[0].endswith(".whl"), item["metadata"]["name"]
        for line in item["metadata"].get("requires_dist", []):
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({**TARGET, "extra": ""}):
                continue
            pinned = pins.get(image.normalise(requirement.name))
            if pinned is None or not requirement.specifier.contains(pinned, prereleases=True):
                unmet.append(f"{item['metadata']['name']} needs {line}; the lock has {pinned}")
    assert not unmet, "\n".join(unmet)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("name", sorted(image.SDIST_ONLY))
def test_each_sdist_only_pin_really_has_no_wheel(name):
    """The list of pins built from source in the image's build stage is not stale: each has no platform wheel."""
    pin = f"{name}=={image.lock_pins(PROJECT_ROOT)[name]}"
    result = _pip_dry_run([pin])
    assert result.returncode != 0 and "No matching distribution" in result.stderr, f"{pin} now has a wheel"


def _pip_installs(lines: list[str]) -> list[list[str]]:
    """Each ``pip install`` of a shell recipe as its arguments after ``install``, ``-q`` left out."""
    installs = []
    for line in lines:
        for command in re.split(r"&&", line):
            words = shlex.split(command)
            if "pip" in " ".join(words[:1]) and words[1:2] == ["install"]:
                installs.append([w for w in words[2:] if w != "-q"])
    return installs


def _makefile_installs() -> list[list[str]]:
    text = (PROJECT_ROOT / "Makefile").read_text()
    recipe = text.split(".venv-jobs/.installed:", 1)[1].split("\n\n", 1)[0]
    return _pip_installs(recipe.splitlines()[1:])


def _dockerfile_installs() -> list[list[str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runs = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    offline = ["--no-index", "--find-links", "/wheelhouse"]
    installs = []
    for words in _pip_installs(runs):
        assert words[:3] == offline, f"images/Dockerfile: pip install {' '.join(words)} may reach an index"
        installs.append([w.replace("/lock/", "") for w in words[3:]])
    return installs


def test_the_dockerfile_installs_exactly_the_makefiles_job_lock():
    makefile, dockerfile = _makefile_installs(), _dockerfile_installs()
    assert makefile[1:] == dockerfile[1:]  # -r requirements-jobs.txt -c ..., then --no-deps -r ...-nodeps.txt -c ...
    assert makefile[0] == ["pip", "-c", "constraints/jobs.txt"]
    # The image's first install adds setuptools, the build backend of the sdist-only pins; pinned by the same lock.
    assert dockerfile[0] == ["pip", "setuptools", "-c", "constraints/jobs.txt"]
    assert "setuptools" in image.lock_pins(PROJECT_ROOT)
    copied = " ".join(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY"))
    for name in ("requirements-jobs.txt", "requirements-jobs-nodeps.txt", "constraints/jobs.txt"):
        assert name in copied, name


def test_the_images_python_and_packages_are_the_job_environments():
    facts = _job_env_facts()
    bases = re.findall(r"^FROM python:(\d+)\.(\d+)\.(\d+)-\S+", DOCKERFILE.read_text(), re.MULTILINE)
    assert len(bases) == 2 and len(set(bases)) == 1, "both stages must be the same CPython"
    assert [int(part) for part in bases[0][:2]] == facts["python"][:2]
    pins = image.lock_pins(PROJECT_ROOT)
    installed = {image.normalise(name): version for name, version in facts["installed"].items()}
    off_lock = {name: version for name, version in installed.items() if name not in pins}
    wrong = {
        name: (version, pins[name])
        for name, version in installed.items()
        if name in pins and not SpecifierSet(f"=={pins[name]}").contains(version, prereleases=True)
    }
    assert not off_lock and not wrong, f"job env vs lock: not pinned {off_lock}, other versions {wrong}"
    requested = {
        image.normalise(Requirement(line).name)
        for name in ("requirements-jobs.txt", "requirements-jobs-nodeps.txt")
        for line in _requirement_lines(name)
    }
    assert requested <= set(installed), f"not installed in the job env: {sorted(requested - set(installed))}"


# Imported along the way but not needed from the Glue wheels, each with why.
INCIDENTAL = {
    # setuptools' distutils shim and what it loads, when a module imports distutils; Glue's Python has setuptools
    "setuptools": "Glue's own",
    "packaging": "setuptools' shim",
    "jaraco-context": "setuptools' shim",
    "jaraco-functools": "setuptools' shim",
    "jaraco-text": "setuptools' shim",
    "more-itertools": "setuptools' shim",
    "backports-tarfile": "setuptools' shim",
    "certifi": "botocore's optional CA bundle lookup (it falls back to its own)",
    "cloudpickle": "pyarrow's optional serializer import",
}


def test_glue_gets_every_package_build_dataset_imports_beyond_spark():
    facts = _job_env_facts()
    staged = {image.normalise(name) for name in image.GLUE_PACKAGES}
    # Their dependencies come along (pip download resolves them): read from the job env's metadata.
    closure = _dependency_closure(staged) | set(INCIDENTAL)
    missing = sorted(image.normalise(d) for d in facts["glue_imports"] if image.normalise(d) not in closure)
    assert not missing, f"build_dataset imports modules of {missing}, which neither Spark nor the Glue wheels bring"


def _dependency_closure(names: set[str]) -> set[str]:
    script = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({d.metadata['Name']: d.requires or [] for d in m.distributions()}))"
    )
    result = subprocess.run([str(job_python()), "-c", script], capture_output=True, text=True, timeout=60, check=True)
    requires = {image.normalise(k): v for k, v in json.loads(result.stdout).items()}
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in requires.get(name, []):
            requirement = Requirement(line)
            if not requirement.marker or requirement.marker.evaluate({**TARGET, "extra": ""}):
                todo.append(image.normalise(requirement.name))
    return seen


def test_deploy_image_without_a_docker_engine_is_refused(tmp_path, capsys, monkeypatch):
    from retrain_tools import cli

    monkeypatch.setenv("PATH", str(tmp_path))  # no docker command at all
    assert cli.main(["deploy", "image", "--out", str(tmp_path / "dist")]) == 1
    assert "no Docker engine: the docker command is not installed" in capsys.readouterr().err
    assert not (tmp_path / "dist" / image.IMAGES_RECORD).exists()


def test_a_docker_command_without_a_running_engine_is_refused():
    answers = subprocess.CompletedProcess([], 1, stdout="", stderr="Cannot connect to the Docker daemon")
    with pytest.raises(image.ImageError, match=r"no Docker engine: `docker info` failed \(Cannot connect"):
        image.docker_engine(run=lambda *args, **kwargs: answers)


def test_deploy_image_tag_prints_the_tag_the_configs_name(capsys):
    from retrain.config import config_paths, load_config
    from retrain_tools import cli

    assert cli.main(["deploy", "image", "--tag"]) == 0
    tag = capsys.readouterr().out.strip()
    for path in config_paths(PROJECT_ROOT / "config" / "models"):
        aws = load_config(path).aws
        assert (
            aws.training.image_uri.endswith(f"/retrain-jobs:{tag}")
            and aws.processing.image_uri == aws.training.image_uri
        )
