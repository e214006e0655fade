"""Does a requirements.txt install on Amazon MWAA 3.3.1? pip's dry run under MWAA's constraints.

MWAA runs ``pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt`` and adds
its copy of Airflow's constraints only when the file has no constraint line of its own (the
entrypoint of aws/amazon-mwaa-docker-images, images/airflow/3.3.1). ``resolve`` runs that install as
``--dry-run --report -`` with a Python 3.12 interpreter, so a pin MWAA would refuse is refused here first.
It needs the package index pip is configured for; ``IndexUnreachable`` says when it could not be reached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from retrain.paths import PROJECT_ROOT

MWAA_DIR = Path(os.environ.get("RETRAIN_MWAA_CONSTRAINTS", PROJECT_ROOT / "constraints" / "mwaa-3.3.1"))
"""MWAA 3.3.1's two constraint files, vendored with their source and licence (constraints/mwaa-3.3.1/SOURCE.md)."""
ESSENTIAL_NAME = "mwaa_essential_constraints.txt"
AIRFLOW_CONSTRAINTS_NAME = "airflow_constraints.txt"
PIP_TIMEOUT_S = 540  # MWAA gives the requirements install 9 minutes
# pip's words for "the index could not be reached", as opposed to "the pins conflict".
UNREACHABLE = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|Connection refused|ConnectTimeoutError|ReadTimeoutError|ProxyError|SSLError"
    r"|Could not fetch URL|connection broken by"
)


class ResolveError(RuntimeError):
    """pip refused the requirements under MWAA's constraints; the message carries pip's reason."""


class IndexUnreachable(ResolveError):
    """The package index could not be reached, so nothing was decided about the pins."""


@dataclass(frozen=True)
class Resolution:
    """What pip would install: normalised name -> version."""

    installed: dict[str, str]


def normalise(name: str) -> str:
    """PEP 503 normal form, so ``SQLAlchemy`` and ``sqlalchemy`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_lines(requirements_text: str) -> list[str]:
    """The ``-c``/``--constraint`` lines of a requirements file (comments stripped)."""
    lines = [line.split("#", 1)[0].strip() for line in requirements_text.splitlines()]
    return [line for line in lines if line.startswith(("-c", "--constraint"))]


def mwaa_install_command(
    python: str | Path, requirements: Path, mwaa_dir: Path = MWAA_DIR, dry_run: bool = True
) -> list[str]:
    """MWAA's install of ``requirements``: essential constraints always, Airflow's only without a constraint line."""
    command = [
        str(python),
        "-m",
        "pip",
        "install",
        "--timeout",
        "60",
        "--retries",
        "2",
        "-r",
        str(requirements),
        "-c",
        str(mwaa_dir / ESSENTIAL_NAME),
    ]
    if not constraint_lines(Path(requirements).read_text()):
        command += ["-c", str(mwaa_dir / AIRFLOW_CONSTRAINTS_NAME)]
    if dry_run:
        command[4:4] = ["--dry-run", "--ignore-installed", "--quiet", "--report", "-"]
    return command


def resolve(python: str | Path, requirements: Path, mwaa_dir: Path = MWAA_DIR, cwd: Path | None = None) -> Resolution:
    """pip's dry run of MWAA's install; ResolveError (or IndexUnreachable) when it does not resolve."""
    for name in (ESSENTIAL_NAME, AIRFLOW_CONSTRAINTS_NAME):
        if not (mwaa_dir / name).is_file():
            raise ResolveError(
                f"{mwaa_dir / name}: MWAA 3.3.1's constraint file is missing (set RETRAIN_MWAA_CONSTRAINTS)"
            )
    try:
        result = subprocess.run(
            mwaa_install_command(python, requirements, mwaa_dir),
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            cwd=cwd or Path(requirements).parent,
        )
    except subprocess.TimeoutExpired:
        raise ResolveError(
            f"{requirements}: pip did not resolve within {PIP_TIMEOUT_S} s, MWAA's limit for the install"
        ) from None
    stderr = "\n".join(
        line for line in result.stderr.splitlines() if "is ignored: it is neither a file nor a directory" not in line
    )
    if result.returncode != 0:
        kind = IndexUnreachable if UNREACHABLE.search(stderr) else ResolveError
        raise kind(f"{requirements}: does not resolve under MWAA 3.3.1's constraints ({mwaa_dir}):\n{stderr[-3000:]}")
    report = json.loads(result.stdout)
    return Resolution({normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]})
