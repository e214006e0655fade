"""Local secrets stay local: the stack is started the way the demo starts Airflow (retrain_tools.standalone), so what
holds here holds for ``make demo``: the generated passwords and the log that prints them are readable by their owner
only, and the API server answers on this machine only."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

pytestmark = pytest.mark.integration


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_the_passwords_and_the_log_that_prints_them_are_owner_only(stack):
    passwords = stack["client"].airflow_home / "simple_auth_manager_passwords.json.generated"
    log = Path(stack["log"])
    assert "Password for user 'alice'" in log.read_text(errors="replace")  # the log does carry them
    assert (_mode(passwords), _mode(log)) == ("0o600", "0o600")


def test_the_api_server_listens_on_this_machine_only(stack):
    port = urlsplit(stack["client"].base_url).port
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    assert listening == {"127.0.0.1"}, f"port {port} listens on {listening}"
