"""The CLI answers bad requests itself, before it contacts Airflow."""

from __future__ import annotations

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
