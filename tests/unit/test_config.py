"""Config: the real files validate; every kind of bad file fails naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.config import ConfigError, config_paths, load_config

INTENT = Path(__file__).resolve().parents[2] / "config" / "models" / "intent.yaml"


def write(tmp_path: Path, text: str, name: str = "intent") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_every_shipped_config_validates():
    for path in config_paths():
        config = load_config(path)
        assert config.dag_id == f"retrain_{path.stem}"


def test_parse_time_and_run_time_fields_are_apart():
    config = load_config(INTENT)
    assert config.cron == "0 0 * * 1"
    assert config.training.hyperparameters["seed"] == 42
    assert "schedule" not in config.training.hyperparameters


def test_digest_is_stable_and_sensitive(tmp_path):
    original = load_config(INTENT)
    assert load_config(INTENT).digest() == original.digest()
    changed = load_config(write(tmp_path, INTENT.read_text().replace("seed: 42", "seed: 43")))
    assert changed.digest() != original.digest()


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("cadence: weekly", "cadence: hourly", "schedule.cadence"),
        ("max_active_runs: 1", "max_active_runs: 0", "dag.max_active_runs"),
        ("validation_fraction: 0.1", "validation_fraction: 1.5", "data.validation_fraction"),
        ("  owner: ml-platform\n", "", "dag.owner"),
        ("  retries: 2\n", "  retries: 2\n  retires: 3\n", "dag.retires"),
        ("    seed: 42", "    seed: [1, 2]", "training.hyperparameters"),
        ("start_date: 2026-09-07", "start_date: someday", "schedule.start_date"),
    ],
)
def test_invalid_field_names_file_and_field(tmp_path, old, new, field):
    text = INTENT.read_text()
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"field '{field}" in message


def test_name_must_match_file(tmp_path):
    path = write(tmp_path, INTENT.read_text(), name="sentiment")
    with pytest.raises(ConfigError, match=r"sentiment\.yaml: field 'name' must equal"):
        load_config(path)


def test_bad_yaml_and_missing_labels_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: intent\n  bad: [indent"))
    path = write(tmp_path, INTENT.read_text().replace("data/banking77/categories.json", "data/nope.json"))
    with pytest.raises(ConfigError, match=r"field 'data.labels_file': no such file"):
        load_config(path)
