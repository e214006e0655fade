"""The CLI answers bad requests and broken configs itself, and says plainly when Airflow is not running and where it
looked."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain_tools.cli import main


def test_rollback_by_a_user_who_may_not_roll_back_is_refused_before_anything_is_triggered(capsys):
    # No Airflow runs in the unit tier: reaching the API would fail differently (connection refused).
    assert main(["rollback", "intent", "--reason", "complaints", "--as", "bob", "--api-url", "http://127.0.0.1:9"]) == 1
    assert "bob may not roll back intent" in capsys.readouterr().err


def test_model_as_option_or_argument_but_not_two_different_ones(capsys):
    with pytest.raises(SystemExit):
        main(["ledger", "verify", "intent", "--model", "sentiment"])
    assert "two different models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rollback", "--reason", "why"])
    assert "a model is required" in capsys.readouterr().err


INTENT = Path(__file__).resolve().parents[2] / "config" / "models" / "intent.yaml"


def config_dir_with(tmp_path, monkeypatch, **configs: str) -> tuple[Path, Path]:
    """A config directory of intent plus ``name=text`` configs, with its DAG files synced; RETRAIN_CONFIG_DIR names
    it."""
    from retrain_tools.dagfiles import sync

    config_dir, dags_dir = tmp_path / "config", tmp_path / "dags"
    config_dir.mkdir()
    (config_dir / "intent.yaml").write_text(INTENT.read_text())
    for name, text in configs.items():
        (config_dir / f"{name}.yaml").write_text(text)
    sync(config_dir, dags_dir)
    monkeypatch.setenv("RETRAIN_CONFIG_DIR", str(config_dir))
    return config_dir, dags_dir


def test_dags_check_validates_every_config_and_names_the_broken_file_and_field(tmp_path, monkeypatch, capsys):
    broken = INTENT.read_text().replace("name: intent", "name: broken").replace("cadence: weekly", "cadence: hourly")
    config_dir, dags_dir = config_dir_with(tmp_path, monkeypatch, broken=broken)
    assert (
        main(["dags", "check", "--dags-dir", str(dags_dir)]) == 1
    )  # its DAG file is there and up to date: the config is not
    out, err = capsys.readouterr()
    assert f"{config_dir / 'broken.yaml'}: invalid model config" in err and "field 'schedule.cadence'" in err
    assert "1 config problem(s)" in out and "one DAG file per config" not in out


def test_dags_check_refuses_two_models_sharing_a_model_package_group(tmp_path, monkeypatch, capsys):
    config_dir, dags_dir = config_dir_with(
        tmp_path, monkeypatch, intent150=INTENT.read_text().replace("name: intent", "name: intent150")
    )
    assert main(["dags", "check", "--dags-dir", str(dags_dir)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{config_dir / 'intent150.yaml'}: field 'aws.model_package_group' is 'retrain-intent', as in "
        f"{config_dir / 'intent.yaml'}" in err
    )


def test_dags_check_passes_valid_configs_with_their_dag_files(tmp_path, monkeypatch, capsys):
    own = (
        INTENT.read_text().replace("name: intent", "name: intent150").replace("retrain-intent\n", "retrain-intent150\n")
    )
    config_dir, dags_dir = config_dir_with(tmp_path, monkeypatch, intent150=own)
    assert main(["dags", "check", "--dags-dir", str(dags_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{dags_dir}: one DAG file per config in {config_dir}, 2 valid"
    (dags_dir / "retrain_intent150.py").unlink()
    assert main(["dags", "check", "--dags-dir", str(dags_dir)]) == 1
    assert "retrain_intent150.py: missing" in capsys.readouterr().err


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_configured_on(tmp_path, monkeypatch, port: int) -> None:
    """AIRFLOW_HOME with an airflow.cfg whose [api] port is ``port``; nothing else in the environment names a URL."""
    (tmp_path / "airflow.cfg").write_text(
        f"[core]\nload_examples = False\n\n[api]\n# base_url = \nhost = 0.0.0.0\nport = {port}\n"
    )
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for name in ("RETRAIN_AIRFLOW_URL", "AIRFLOW_CONFIG", "AIRFLOW__API__PORT", "AIRFLOW__API__BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_runs_list_with_airflow_down_says_so_and_how_to_start_it(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["runs", "list", "intent", "--api-url", url]) == 1
    assert capsys.readouterr().err == f"Airflow is not running at {url}; start it with `make ui`\n"


def test_runs_list_and_status_find_airflow_on_its_configured_port_and_say_it_is_down(tmp_path, monkeypatch, capsys):
    """The demo ran on another port than 8080 (it writes [api] port into airflow.cfg): the CLI asks there."""
    import retrain.registry

    port = closed_port()
    airflow_configured_on(tmp_path, monkeypatch, port)
    assert main(["runs", "list", "intent"]) == 1
    assert capsys.readouterr().err == f"Airflow is not running at http://localhost:{port}; start it with `make ui`\n"

    nothing = {"champion": None, "challenger": None, "versions": [], "ledger": [], "ledger_verified": True}
    monkeypatch.setattr(
        retrain.registry, "status", lambda store, name: {"name": name, **nothing}
    )  # MLflow lives in the job environment
    assert main(["status", "intent"]) == 1
    out = capsys.readouterr().out
    assert "model:      intent" in out  # what does not need Airflow is still shown
    assert "endpoint:   model server not running (bin/retrain serve)\n" in out
    assert f"last runs:  Airflow is not running at http://localhost:{port}; start it with `make ui`\n" in out
    assert "FileNotFoundError" not in out  # an Airflow never started has no passwords file either: not the news


def test_bin_retrain_with_airflow_down_prints_one_line_and_no_traceback(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    port = closed_port()
    airflow_configured_on(tmp_path, monkeypatch, port)
    env = {**os.environ, "PYTHONPATH": f"{INTENT.parents[2] / 'plugins'}:{INTENT.parents[2] / 'tools'}"}
    result = subprocess.run(
        [sys.executable, "-m", "retrain_tools.cli", "runs", "list", "intent"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Airflow is not running at http://localhost:{port}; start it with `make ui`\n",
    )


@pytest.mark.parametrize(("command", "said"), [("approve", "approved"), ("reject", "rejected")])
def test_approve_and_reject_say_what_was_done_in_words(command, said, monkeypatch, capsys):
    """The answer itself goes through the REST hitlDetails endpoint (the integration tier sends it for real); here a
    recording client stands in for Airflow so that only the CLI's own words are checked."""
    import retrain_tools.cli as cli

    sent = []

    class RecordingClient:
        def respond(self, *args):
            sent.append(args)

    monkeypatch.setattr(cli, "client_for", lambda args: RecordingClient())
    assert main([command, "intent", "--run-id", "manual__1", "--as", "alice"]) == 0
    assert capsys.readouterr().out == f"{said} retrain_intent run manual__1 as alice\n"
    assert sent == [("retrain_intent", "manual__1", "await_approval", command.capitalize(), {})]


def _dag(paused: bool, logical: str, run_after: str) -> dict:
    """The fields of Airflow's REST DAG resource that decide what unpausing starts."""
    return {"dag_id": "retrain_intent", "is_paused": paused, "next_dagrun_logical_date": logical,
            "next_dagrun_run_after": run_after}  # fmt: skip


def test_a_due_scheduled_run_joins_the_backfill_last_unless_the_user_lets_it_run_alongside(capsys):
    from datetime import UTC, datetime

    from retrain_tools.cli import backfill_end

    to, due = datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
    dag = _dag(True, "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z")  # complete, so due at once when unpaused
    assert backfill_end(dag, to, "in-order") == due
    assert "scheduled run of 2026-11-30 is due: it joins the backfill" in capsys.readouterr().out
    assert backfill_end(dag, to, "alongside") == to
    assert "starts now, beside the backfill" in capsys.readouterr().out
    assert backfill_end(dag, to, "paused") == to
    assert backfill_end({**dag, "is_paused": False}, to, "in-order") == to  # running already: nothing is held back
    not_due = _dag(True, "2999-01-01T00:00:00Z", "2999-01-08T00:00:00Z")
    assert backfill_end(not_due, to, "in-order") == to
