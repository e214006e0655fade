"""What the simulated tests change in a shipped config, in one place, with the reason for each change.

The aws tests run the shipped configs unmodified but for this: endpoints never appear in a config (the
simulator's endpoint reaches boto3 through ``AWS_ENDPOINT_URL`` and Airflow's ``aws_default`` connection),
and the account id appears only in the bucket names, which ``SIMULATED_ACCOUNT_EDITS`` replace.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ACCOUNT = "123456789012"  # the placeholder account of config/models/*.yaml; also moto's default account


def simulated_account_edits(account_suffix: str) -> list[tuple[str, str, str]]:
    """(old, new, reason) edits of a shipped config for one simulated deployment."""
    reason = (
        "bucket names end in the account id and are global; one simulator serves the whole session, so each test "
        "deployment gets its own suffix and write-once objects of two tests never meet"
    )
    return [
        (
            f"{kind}_bucket: retrain-{kind}s-{SHIPPED_ACCOUNT}",
            f"{kind}_bucket: retrain-{kind}s-{account_suffix}",
            reason,
        )
        for kind in ("dataset", "artifact")
    ] + [
        (f"golden_bucket: retrain-golden-{SHIPPED_ACCOUNT}", f"golden_bucket: retrain-golden-{account_suffix}", reason)
    ]


def shipped_config(config_dir: Path, name: str, account_suffix: str) -> Path:
    """``config/models/<name>.yaml`` with only ``simulated_account_edits`` applied, written into ``config_dir``."""
    text = (PROJECT_ROOT / "config" / "models" / f"{name}.yaml").read_text()
    for old, new, _reason in simulated_account_edits(account_suffix):
        assert old in text, f"config/models/{name}.yaml no longer holds {old!r}"
        text = text.replace(old, new)
    path = Path(config_dir) / f"{name}.yaml"
    path.write_text(text)
    return path
