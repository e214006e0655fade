"""How the project starts airflow standalone (retrain_tools.standalone): the pieces that need no running Airflow. The
integration tier checks the running result (test_local_security_local.py)."""

from __future__ import annotations

import stat

from retrain_tools.standalone import private_log, restrict_passwords, standalone_environment


def test_the_api_server_is_bound_to_this_machine_unless_the_environment_chooses():
    assert standalone_environment({"AIRFLOW_HOME": "/x"})["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert standalone_environment({"AIRFLOW__API__HOST": "0.0.0.0"})["AIRFLOW__API__HOST"] == "0.0.0.0"


def test_a_log_and_a_password_file_left_readable_by_others_become_owner_only(tmp_path):
    log, passwords = tmp_path / "standalone.log", tmp_path / "simple_auth_manager_passwords.json.generated"
    for path in (log, passwords):
        path.write_text("old\n")
        path.chmod(0o644)
    with private_log(log) as handle:
        handle.write(b"new\n")
    restrict_passwords(tmp_path)
    assert log.read_text() == "old\nnew\n"  # appended, as the demo's log is across runs
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in (log, passwords)} == {"0o600"}
    with private_log(tmp_path / "fresh.log", truncate=True):
        pass
    assert stat.S_IMODE((tmp_path / "fresh.log").stat().st_mode) == 0o600
