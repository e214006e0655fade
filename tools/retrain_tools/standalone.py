"""How this project starts ``airflow standalone``: reachable from this machine only, secrets readable by their owner.

Airflow's simple auth manager writes every user's generated password into
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` and prints each one to standalone's output (even where
standalone itself says it is "not outputting user passwords"), and the API server listens on every interface unless
``[api] host`` says otherwise. Anyone who can read a password and reach the port could approve or roll back as the
approver. So standalone starts here with the API server on 127.0.0.1 (unless ``AIRFLOW__API__HOST`` is set), under
umask 077 (the password file, Airflow's logs and the metadata DB are created owner-only), and its output goes to a log
that is 0600 too. The demo, the test tiers and the benchmarks start it here; ``make ui`` does the same in the shell.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

LOCAL_HOST = "127.0.0.1"
PRIVATE_UMASK = 0o077
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def standalone_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the API server bound to this machine, unless ``AIRFLOW__API__HOST`` chooses another address."""
    return {"AIRFLOW__API__HOST": LOCAL_HOST, **env}


def private_log(path: Path, truncate: bool = False) -> BinaryIO:
    """A log file only its owner can read (0600), also where it existed before with wider permissions: standalone's
    output carries the generated passwords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def restrict_passwords(airflow_home: Path) -> None:
    """A password file left by an earlier start with wider permissions becomes owner-only before Airflow reuses it."""
    passwords = airflow_home / PASSWORDS_FILE
    if passwords.exists():
        passwords.chmod(0o600)


def start_standalone(env: Mapping[str, str], log_path: Path, truncate: bool = False) -> subprocess.Popen:
    """``airflow standalone`` in a session of its own (stop it with ``retrain.runner.stop_process_group``), with
    ``env`` (which sets AIRFLOW_HOME), logged to ``log_path``; see the module's doc for what keeps it private."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    restrict_passwords(home)
    with private_log(log_path, truncate) as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            ["airflow", "standalone"],
            env=standalone_environment(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
