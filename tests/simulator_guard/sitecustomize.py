"""Loaded by every job that ``tests/moto_job_bridge.py`` runs (first on its PYTHONPATH): the simulator's guard.

A SageMaker or Glue job sees only its container: its own directories, its image's interpreter and packages,
its code bundle and its temp directory. A job that opens another existing local path (the checkout's data files,
the developer's home, a path the Airflow side used) would work here and fail on AWS, so this audit hook
refuses it: the ``open`` raises FileNotFoundError, as the file is absent on AWS, and the path is appended
to the violations file, from which the bridge fails the job even when the script caught the error.

Inactive unless ``RETRAIN_SIMULATOR_ALLOWED_PATHS`` is set (an ``os.pathsep`` list of allowed roots).
"""

from __future__ import annotations

import os
import sys

ALLOWED_ENV = "RETRAIN_SIMULATOR_ALLOWED_PATHS"
VIOLATIONS_ENV = "RETRAIN_SIMULATOR_VIOLATIONS"
SYSTEM_ROOTS = ("/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/proc", "/sys", "/dev", "/run")


def _roots() -> tuple[str, ...]:
    """The container's roots plus the interpreter's own prefixes and the operating system's directories."""
    given = [p for p in os.environ.get(ALLOWED_ENV, "").split(os.pathsep) if p]
    interpreter = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    return tuple(sorted({os.path.realpath(p) for p in (*given, *interpreter)} | set(SYSTEM_ROOTS)))


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _install() -> None:
    roots, log, busy = _roots(), os.environ.get(VIOLATIONS_ENV), [False]

    def hook(event: str, args: tuple) -> None:
        if event != "open" or busy[0] or isinstance(args[0], int) or args[0] is None:
            return
        path = os.path.realpath(os.path.abspath(os.fsdecode(args[0])))
        if _inside(path, roots) or not os.path.lexists(path):
            return  # a missing path fails here as on AWS (libraries probe for config files and .git)
        busy[0] = True  # the log's own open must not recurse
        try:
            if log:
                with open(log, "a") as sink:
                    sink.write(path + "\n")
        finally:
            busy[0] = False
        raise FileNotFoundError(f"{path}: not in this job's container (simulator guard; absent on AWS)")

    sys.addaudithook(hook)


if os.environ.get(ALLOWED_ENV):
    _install()
