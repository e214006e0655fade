"""What the simulated tests change in a shipped config, in one place, with the reason for each change.

The aws tests run the shipped configs unmodified but for this:

- **Endpoints** never appear in a config: the simulator's endpoint reaches boto3 through ``AWS_ENDPOINT_URL`` and
  Airflow's ``aws_default`` connection.
- **The account id.** The shipped configs name the placeholder account 123456789012 in bucket names and ARNs. Each
  simulated deployment is its own AWS account on the one simulator that serves the session (moto keeps accounts
  apart, as AWS does), so ``SIMULATED_ACCOUNT_EDITS`` replaces that id and nothing else. Two tests' buckets, model
  package groups and alert topics then never meet, under the names the shipped configs give them.

``SimulatedAccount`` is a deployment's account: credentials that moto maps to its id (an assumed role, as a
deployer would hold), and the resources the infrastructure template creates (``provision``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ACCOUNT = "123456789012"  # the placeholder account of config/models/*.yaml; also moto's default account
REGION = "us-east-1"


def simulated_account_edits(account_id: str) -> list[tuple[str, str, str]]:
    """(old, new, reason) edits of a shipped config for one simulated deployment: the whole list."""
    return [
        (
            SHIPPED_ACCOUNT,
            account_id,
            "each test deployment is its own simulated AWS account, so the names the shipped config gives its buckets, "
            "model package group and alert topic are the same in every test and still never meet",
        )
    ]


def shipped_config(config_dir: Path, name: str, account_id: str) -> Path:
    """``config/models/<name>.yaml`` with only ``simulated_account_edits`` applied, written into ``config_dir``."""
    text = (PROJECT_ROOT / "config" / "models" / f"{name}.yaml").read_text()
    for old, new, _reason in simulated_account_edits(account_id):
        assert old in text, f"config/models/{name}.yaml no longer holds {old!r}"
        text = text.replace(old, new)
    path = Path(config_dir) / f"{name}.yaml"
    path.write_text(text)
    return path


def new_account_id() -> str:
    """A fresh 12-digit account id, never the shipped placeholder."""
    while (account := str(secrets.randbelow(9 * 10**11) + 10**11)) == SHIPPED_ACCOUNT:
        pass
    return account


@dataclass(frozen=True)
class SimulatedAccount:
    """One simulated AWS account on the moto server at ``endpoint``: ``credentials`` are an assumed role's
    (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken``), which moto maps to ``account_id``."""

    endpoint: str
    account_id: str
    credentials: dict[str, str]

    @classmethod
    def create(cls, endpoint: str) -> SimulatedAccount:
        import boto3

        account_id = new_account_id()
        sts = boto3.client(
            "sts",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        role = f"arn:aws:iam::{account_id}:role/retrain-deployer"
        credentials = sts.assume_role(RoleArn=role, RoleSessionName="retrain-tests")["Credentials"]
        kept = {k: credentials[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
        account = cls(endpoint, account_id, kept)
        caller = account.client("sts").get_caller_identity()["Account"]
        assert caller == account_id, f"the simulator put the assumed role in account {caller}, not {account_id}"
        return account

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.credentials["AccessKeyId"],
            aws_secret_access_key=self.credentials["SecretAccessKey"],
            aws_session_token=self.credentials["SessionToken"],
        )

    def env(self) -> dict[str, str]:
        """boto3's environment for a process acting in this account (Airflow's, a test's)."""
        return {
            "AWS_ACCESS_KEY_ID": self.credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": self.credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": self.credentials["SessionToken"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def airflow_connection(self) -> dict[str, Any]:
        """Airflow's ``aws_default`` connection in this account (``AIRFLOW_CONN_AWS_DEFAULT`` as JSON)."""
        return {
            "conn_type": "aws",
            "login": self.credentials["AccessKeyId"],
            "password": self.credentials["SecretAccessKey"],
            "extra": {
                "region_name": REGION,
                "endpoint_url": self.endpoint,
                "aws_session_token": self.credentials["SessionToken"],
            },
        }

    def provision(self, configs: list[Any], topics: bool = True, groups: bool = True) -> None:
        """What the infrastructure template creates for these (loaded) configs: the three buckets, golden with Object
        Lock in COMPLIANCE mode; the alert topic; each model's package group."""
        s3 = self.client("s3")
        aws = configs[0].aws
        for bucket in {c.aws.dataset_bucket for c in configs} | {c.aws.artifact_bucket for c in configs}:
            s3.create_bucket(Bucket=bucket)
        for bucket in {c.aws.golden_bucket for c in configs}:
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            s3.put_object_lock_configuration(
                Bucket=bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
                },
            )
        if topics:
            for arn in {c.aws.alerts.sns_topic_arn for c in configs if c.aws.alerts}:
                created = self.client("sns").create_topic(Name=arn.rsplit(":", 1)[1])["TopicArn"]
                assert created == arn, (created, arn)
        if groups:
            for config in configs:
                self.client("sagemaker").create_model_package_group(
                    ModelPackageGroupName=config.aws.model_package_group
                )
        assert aws.region == REGION, aws.region


def register_package(sagemaker: Any, aws: Any, model_data_url: str, status: str) -> str:
    """A model package of ``aws.model_package_group`` for the archive at ``model_data_url``, in ``status``
    (Approved, PendingManualApproval), as register_model and promote_model leave one: its ARN."""
    return sagemaker.create_model_package(
        ModelPackageGroupName=aws.model_package_group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": aws.inference_image_uri, "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
