"""``bin/retrain deploy image``: build and push the job image (images/Dockerfile) from the job lock.

The build context is assembled here, outside Docker: the Dockerfile, the lock files, the lock's wheels for the
image's platform (``pip download --only-binary=:all: --platform ...``, so the wheels are the ones the image's
CPython and glibc load, whatever machine builds it) and the sdists of the few pins that publish no wheel. The
Docker build then runs with ``--no-index`` and fetches nothing. Each pushed image's registry digest is recorded in
``dist/images.json``, which ``bin/retrain deploy build`` copies into the deploy manifest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from retrain.aws.images import LOCK_FILES, image_uri

# The platform of both the job image (Debian bookworm, glibc 2.36) and Glue 5 (Amazon Linux 2023, glibc 2.34):
# every manylinux tag up to glibc 2.34, each named, since pip does not widen a --platform to older glibc tags.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
PLATFORM_ARGS = (
    "--only-binary=:all:",
    *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)
# Pins that PyPI has only as source; the Dockerfile's build stage turns them into wheels with its compiler.
SDIST_ONLY = {
    "pyspark": "PyPI publishes pyspark only as an sdist (pure Python, with Spark's jars inside)",
    "sagemaker-training": "published only as an sdist: it compiles a C extension (gethostname) at install",
    "inotify-simple": "pinned to exactly 1.2.1 by sagemaker-training, and 1.2.1 is published only as an sdist",
}
# What build_dataset imports beyond Spark (which Glue brings), at the lock's versions; their dependencies come along.
GLUE_PACKAGES = ("pandas", "pyarrow", "boto3")
DOCKERFILE = Path("images") / "Dockerfile"
IMAGES_RECORD = "images.json"
PIP_TIMEOUT_S = 900


class ImageError(RuntimeError):
    """The image cannot be built or pushed here; the message says why."""


def normalise(name: str) -> str:
    """PEP 503 normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(project_root: Path) -> dict[str, str]:
    """normalised name -> version of every ``name==version`` line of constraints/jobs.txt."""
    pins = {}
    for number, line in enumerate((project_root / "constraints" / "jobs.txt").read_text().splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        name, sep, version = spec.partition("==")
        if not sep or not version.strip():
            raise ImageError(f"constraints/jobs.txt:{number}: {spec!r} is not an exact pin (name==version)")
        pins[normalise(name)] = version.strip()
    return pins


def wheel_requirements(project_root: Path) -> list[str]:
    """Every pin of the lock that must come as a platform wheel (all but SDIST_ONLY)."""
    return [f"{name}=={version}" for name, version in lock_pins(project_root).items() if name not in SDIST_ONLY]


def sdist_requirements(project_root: Path) -> list[str]:
    """The SDIST_ONLY pins, at the lock's versions."""
    pins = lock_pins(project_root)
    return [f"{name}=={pins[name]}" for name in SDIST_ONLY if name in pins]


def _pip(python: str | Path, args: list[str], what: str) -> str:
    result = subprocess.run(
        [str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"{what}: pip failed:\n{result.stderr[-3000:]}")
    return result.stdout


def download_wheels(python: str | Path, requirements: list[str], dest: Path, constraints: Path | None = None) -> None:
    """``pip download`` of ``requirements`` as wheels for the image's platform into ``dest``: with ``constraints``,
    their dependencies too, held to those pins; without, exactly these pins and no dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    flags = ["-c", str(constraints)] if constraints else ["--no-deps"]
    _pip(python, ["download", "-q", *flags, *PLATFORM_ARGS, "-d", str(dest), *requirements], f"wheels for {dest}")


def glue_requirements(project_root: Path) -> list[str]:
    """GLUE_PACKAGES at the lock's versions."""
    pins = lock_pins(project_root)
    return [f"{name}=={pins[name]}" for name in GLUE_PACKAGES]


def build_context(project_root: Path, context: Path, python: str | Path) -> Path:
    """The Docker build context of the job image in ``context`` (replaced): Dockerfile, lock, wheels, sdists."""
    if context.exists():
        shutil.rmtree(context)
    for name in LOCK_FILES:
        target = context / ("Dockerfile" if name == DOCKERFILE.as_posix() else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project_root / name, target)
    download_wheels(python, wheel_requirements(project_root), context / "wheelhouse")
    sdists = context / "sdists"
    sdists.mkdir()
    _pip(
        python,
        ["download", "-q", "--no-deps", "--no-binary=:all:", "-d", str(sdists), *sdist_requirements(project_root)],
        "sdists",
    )
    return context


def docker_engine(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Nothing when a Docker engine answers ``docker info``; ImageError saying why not otherwise."""
    try:
        result = run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(
            "no Docker engine: the docker command is not installed; build the image where Docker runs"
        ) from None
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no answer"]
        raise ImageError(f"no Docker engine: `docker info` failed ({reason[0]}); build the image where Docker runs")


def target_uris(configs, tag: str) -> list[str]:
    """The job image URIs the configs name (one per account and region), each with this lock's ``tag``."""
    uris = set()
    for config in configs:
        for job in (config.aws.training, config.aws.processing):
            account = job.image_uri.split(".", 1)[0]
            uris.add(image_uri(account, config.aws.region, tag))
    return sorted(uris)


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"docker {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def build_and_push(uris: list[str], context: Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """``docker build`` once, tag and push to every URI; uri -> its registry digest (``<repo>@sha256:...``)."""
    first, *others = uris
    log(f"docker build {first} (linux/amd64) from {context}")
    _docker("build", "--platform", "linux/amd64", "--tag", first, str(context))
    digests = {}
    for uri in uris:
        if uri in others:
            _docker("tag", first, uri)
        log(f"docker push {uri}")
        _docker("push", uri)
        repository = uri.rsplit(":", 1)[0]
        pushed = json.loads(_docker("inspect", "--format", "{{json .RepoDigests}}", uri))
        digests[uri] = next(d for d in pushed if d.startswith(repository + "@"))
    return digests


def record(out: Path, tag: str, digests: dict[str, str]) -> Path:
    """Write ``images.json`` (the lock tag and each pushed image's digest) for ``deploy build`` to copy."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / IMAGES_RECORD
    path.write_text(json.dumps({"format": 1, "tag": tag, "images": digests}, indent=2, sort_keys=True) + "\n")
    return path


def recorded_digests(out: Path, tag: str) -> dict[str, str | None]:
    """The digests ``images.json`` records for ``tag``; empty when it is absent or from another lock."""
    path = out / IMAGES_RECORD
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text())
    return recorded["images"] if recorded.get("tag") == tag else {}
