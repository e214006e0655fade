"""The CloudFormation template (infra/cloudformation/retrain.yaml), checked offline.

cfn-lint validates it against CloudFormation's resource schemas bundled with cfn-lint (types,
required properties, enums, attributes, IAM action names). The rest parses the template and
checks what the README promises: Object Lock on golden, KMS and TLS on every bucket, nobody
in the stack can write raw/ or golden, PassRole goes only to the job role, and every stack
output feeds a real AwsConfig field or an environment variable the code reads. Nothing here
deploys the stack or asks AWS anything; IAM is evaluated by a small matcher below, not by AWS.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from retrain.config import load_model
from retrain_tools import aws_docs as docs

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = PROJECT_ROOT / "infra" / "cloudformation" / "retrain.yaml"
# The shipped config's region and a second one: the template must not lean on one region's resource types.
LINT_REGIONS = ["us-east-1", "eu-west-1"]
BUCKETS = ("DatasetBucket", "ArtifactBucket", "GoldenBucket")
S3_WRITES = (
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutObjectAcl",
    "s3:RestoreObject",
)


@pytest.fixture(scope="module")
def template_text() -> str:
    return TEMPLATE_PATH.read_text()


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return docs.load_template(TEMPLATE_PATH)


# ---- cfn-lint -----------------------------------------------------------------------------------


def _lint(text: str):
    from cfnlint.api import ManualArgs, lint

    return lint(text, config=ManualArgs(regions=LINT_REGIONS, include_checks=["I"]))


def test_cfn_lint_finds_no_errors(template_text):
    pytest.importorskip("cfnlint", reason="cfn-lint (requirements-dev.txt) validates the template offline")
    matches = _lint(template_text)
    errors = [m for m in matches if m.rule.id.startswith("E")]
    # W3037 is an IAM action no service has: a typo that AWS accepts silently and that grants nothing.
    unknown_actions = [m for m in matches if m.rule.id == "W3037"]
    for match in matches:
        if match not in errors and match not in unknown_actions:
            warnings.warn(f"cfn-lint {match.rule.id} line {match.linenumber}: {match.message}", stacklevel=1)
    assert not errors + unknown_actions, "\n".join(
        f"{m.rule.id} line {m.linenumber}: {m.message}" for m in errors + unknown_actions
    )


@pytest.mark.parametrize(
    ("find", "replace", "rule"),
    [
        ("Mode: COMPLIANCE", "Mode: COMPLIANT", "E3030"),  # an enum
        ('      ArtifactStoreUri: !Sub "s3://${ArtifactBucket}/mlartifacts"\n', "", "E3003"),  # a required property
        ("sagemaker:StopTrainingJob", "sagemaker:StopTrainingJobs", "W3037"),  # an IAM action
    ],
)
def test_cfn_lint_catches_a_broken_copy(template_text, find, replace, rule):
    # The lint above is only evidence if it can fail: break one thing and expect its rule.
    pytest.importorskip("cfnlint")
    assert find in template_text, f"the mutation no longer applies: {find!r} is not in the template"
    assert rule in {m.rule.id for m in _lint(template_text.replace(find, replace, 1))}


# ---- resolving the template with its default parameters -----------------------------------------


class Stack:
    """The template resolved for one account and region, with each parameter's default.

    Physical names and ARNs are formed as CloudFormation documents each type's Ref and
    GetAtt; a created KMS key gets a placeholder id, since AWS chooses it.
    """

    def __init__(self, template: dict[str, Any], account: str, region: str, conditions: dict[str, bool] | None = None):
        self.t, self.account, self.region = template, account, region
        self.params = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
        self.conditions = conditions or {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise KeyError(f"condition {name}: say whether it holds for this check")
        return self.conditions[name]

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": "aws",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        resource = self.t["Resources"][name]
        props = resource["Properties"]
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            return self.resolve(props["BucketName"])
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{self.account}:{self.resolve(props['TopicName'])}"
        if kind == "AWS::IAM::ManagedPolicy":
            return f"arn:aws:iam::{self.account}:policy/{self.resolve(props['ManagedPolicyName'])}"
        if kind in ("AWS::IAM::Role", "AWS::KMS::Key"):
            return self.resolve(props.get("RoleName")) if kind == "AWS::IAM::Role" else "created-key-id"
        raise NotImplementedError(f"Ref of {kind}")

    def getatt(self, name: str, attribute: str) -> str:
        resource = self.t["Resources"][name]
        props = resource["Properties"]
        kind = resource["Type"]
        if (kind, attribute) == ("AWS::S3::Bucket", "Arn"):
            return f"arn:aws:s3:::{self.ref(name)}"
        if (kind, attribute) == ("AWS::IAM::Role", "Arn"):
            return f"arn:aws:iam::{self.account}:role/{self.resolve(props['RoleName'])}"
        if (kind, attribute) == ("AWS::KMS::Key", "Arn"):
            return f"arn:aws:kms:{self.region}:{self.account}:key/created-key-id"
        if (kind, attribute) == ("AWS::SageMaker::MlflowTrackingServer", "TrackingServerArn"):
            name = self.resolve(props["TrackingServerName"])
            return f"arn:aws:sagemaker:{self.region}:{self.account}:mlflow-tracking-server/{name}"
        raise NotImplementedError(f"GetAtt {kind}.{attribute}")

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match) -> str:
            key = match.group(1)
            if key in variables:
                return str(self.resolve(variables[key]))
            if "." in key and not key.startswith("AWS::"):
                return self.getatt(*key.split(".", 1))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, node: Any) -> Any:
        """The value of ``node`` with every intrinsic function evaluated; None where it is AWS::NoValue."""
        if isinstance(node, list):
            return [value for value in (self.resolve(item) for item in node) if value is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self.ref(value)
            if key == "Fn::GetAtt":
                return self.getatt(*value)
            if key == "Fn::Sub":
                return self._sub(value, {}) if isinstance(value, str) else self._sub(value[0], value[1])
            if key == "Fn::If":
                return self.resolve(value[1] if self.condition(value[0]) else value[2])
            if key == "Fn::Join":
                return value[0].join(self.resolve(value[1]))
        return {key: value for key, value in ((k, self.resolve(v)) for k, v in node.items()) if value is not None}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policies(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Every IAM policy in the stack (inline, role and managed), by name, statements resolved."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, resource in stack.t["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
            found[name] = _as_list(stack.resolve(props["PolicyDocument"])["Statement"])
        for inline in props.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []:
            found[f"{name}/{inline['PolicyName']}"] = _as_list(stack.resolve(inline["PolicyDocument"])["Statement"])
    return found


def _matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    # IAM wildcards: '*' spans any characters, '/' included (fnmatch's '*' does too); '?' is one character.
    if ignore_case:
        return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in _as_list(patterns))
    return any(fnmatch.fnmatchcase(value, p) for p in _as_list(patterns))


def allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether some Allow statement grants ``action`` on ``resource`` and no Deny statement refuses it.

    Conditions on Allow are ignored, which can only over-grant: a check that something is
    NOT allowed stays sound. (Denies with conditions are ignored too; none guards S3 here.)
    """

    def hits(statement: dict[str, Any]) -> bool:
        if "NotAction" in statement or "NotResource" in statement:
            raise NotImplementedError("NotAction/NotResource: extend this matcher before using them")
        # Action names are case-insensitive in IAM; resource ARNs are not.
        return _matches(statement["Action"], action, ignore_case=True) and _matches(statement["Resource"], resource)

    denied = any(s["Effect"] == "Deny" and "Condition" not in s and hits(s) for s in statements)
    return not denied and any(s["Effect"] == "Allow" and hits(s) for s in statements)


ACCOUNT, REGION = "123456789012", "us-east-1"
ALL_TRUE = {"CreateKmsKey": True, "HasVpc": True, "HasMwaaRole": True, "IsolationRequired": True}


@pytest.fixture(scope="module")
def stack(template) -> Stack:
    return Stack(template, ACCOUNT, REGION, ALL_TRUE)


def _object_arn(stack: Stack, bucket: str, key: str) -> str:
    return f"{stack.getatt(bucket, 'Arn')}/{key}"


# ---- buckets --------------------------------------------------------------------------------------


def test_golden_bucket_has_object_lock_in_compliance_mode(template):
    golden = template["Resources"]["GoldenBucket"]["Properties"]
    assert golden["ObjectLockEnabled"] is True
    assert golden["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    retention = golden["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention["Mode"] == "COMPLIANCE"  # GOVERNANCE could be bypassed with s3:BypassGovernanceRetention
    assert retention["Days"] == {"Ref": "GoldenRetentionDays"}
    assert template["Parameters"]["GoldenRetentionDays"]["MinValue"] >= 1


@pytest.mark.parametrize("bucket", BUCKETS)
def test_every_bucket_is_versioned_kms_encrypted_private_and_tls_only(template, stack, bucket):
    props = template["Resources"][bucket]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    default = rule["ServerSideEncryptionByDefault"]
    assert default["SSEAlgorithm"] == "aws:kms"
    # The stack's key, created or given: the same expression the KmsKeyArn output returns.
    assert default["KMSMasterKeyID"] == template["Outputs"]["KmsKeyArn"]["Value"]
    assert (
        set(props["PublicAccessBlockConfiguration"].values()) == {True}
        and len(props["PublicAccessBlockConfiguration"]) == 4
    )
    bucket_policies = [
        stack.resolve(r["Properties"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert len(bucket_policies) == 1, f"{bucket}: expected one bucket policy"
    arn = stack.getatt(bucket, "Arn")
    tls = [
        s
        for s in bucket_policies[0]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s["Principal"] == "*"
        and s["Action"] == "s3:*"
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert tls and set(tls[0]["Resource"]) == {arn, f"{arn}/*"}


# ---- IAM ------------------------------------------------------------------------------------------


def test_job_role_is_assumed_only_by_glue_and_sagemaker(template):
    (statement,) = template["Resources"]["JobRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRole"
    assert sorted(statement["Principal"]["Service"]) == ["glue.amazonaws.com", "sagemaker.amazonaws.com"]


def test_job_role_reads_inputs_and_writes_only_its_prefixes(stack):
    job = policies(stack)["JobRolePolicy"]
    for bucket, key in [
        ("DatasetBucket", "raw/intent/dt=2026-01-05/part.csv"),
        ("DatasetBucket", "datasets/intent/v1/train.jsonl"),
        ("GoldenBucket", "golden/intent/v1/golden.csv"),
        ("ArtifactBucket", "code/abc123/retrain.zip"),
    ]:
        assert allows(job, "s3:GetObject", _object_arn(stack, bucket, key)), f"job role cannot read {bucket}/{key}"
    for bucket, key in [
        ("DatasetBucket", "datasets/intent/v2/train.jsonl"),  # build_dataset publishes versions
        ("ArtifactBucket", "runs/intent/r1/train_model/try-1/model.tar.gz"),
        ("ArtifactBucket", "mlartifacts/retrain_intent/1/model"),
    ]:
        assert allows(job, "s3:PutObject", _object_arn(stack, bucket, key)), f"job role cannot write {bucket}/{key}"
    # The ledger is the Airflow side's record of promotions, and code/ is what the deploy tool uploaded.
    for bucket, key in [("ArtifactBucket", "ledger/intent.jsonl"), ("ArtifactBucket", "code/abc123/retrain.zip")]:
        assert not any(allows(job, action, _object_arn(stack, bucket, key)) for action in S3_WRITES), (
            f"job role may write {bucket}/{key}"
        )


@pytest.mark.parametrize(
    "conditions", [ALL_TRUE, {name: False for name in ALL_TRUE}], ids=["all-conditions-true", "all-false"]
)
def test_nothing_in_the_stack_can_write_raw_data_or_golden_sets(template, conditions):
    # raw/ is the evidence of what each run saw, golden/ what every model is judged on: both are
    # landed by people with their own credentials, never by the jobs, Airflow or MLflow.
    stack = Stack(template, ACCOUNT, REGION, conditions)
    protected = [
        _object_arn(stack, "DatasetBucket", "raw/intent/dt=2026-01-05/part.csv"),
        _object_arn(stack, "GoldenBucket", "golden/intent/v1/golden.csv"),
        _object_arn(stack, "GoldenBucket", "anything-else"),
    ]
    for name, statements in policies(stack).items():
        for arn in protected:
            granted = [action for action in S3_WRITES if allows(statements, action, arn)]
            assert not granted, f"{name} may {granted} on {arn}"


def test_nobody_in_the_stack_can_delete_a_ledger_entry(stack):
    # The ledger is append-only (one write-once object per entry); a delete would cut the chain.
    entry = _object_arn(stack, "ArtifactBucket", "ledger/intent/00000001.json")
    for name, statements in policies(stack).items():
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not allows(statements, action, entry), f"{name} may {action} {entry}"


def test_the_write_check_catches_a_widened_grant(template):
    # Widen the job role's dataset write from datasets/ to the whole bucket: raw/ must show up as writable.
    stack = Stack(template, ACCOUNT, REGION, ALL_TRUE)
    job = policies(stack)["JobRolePolicy"]
    widened = [
        dict(s, Resource=stack.getatt("DatasetBucket", "Arn") + "/*") if s.get("Sid") == "PublishDatasetVersions" else s
        for s in job
    ]
    assert allows(widened, "s3:PutObject", _object_arn(stack, "DatasetBucket", "raw/intent/dt=2026-01-05/part.csv"))


def test_pass_role_is_limited_to_the_job_role_and_its_two_services(stack):
    job_role_arn = stack.getatt("JobRole", "Arn")
    passing = [
        (name, s)
        for name, statements in policies(stack).items()
        for s in statements
        if s["Effect"] == "Allow" and _matches(s["Action"], "iam:PassRole", ignore_case=True)
    ]
    assert passing, "no policy lets Airflow pass the job role to Glue and SageMaker"
    for name, statement in passing:
        assert _as_list(statement["Resource"]) == [job_role_arn], f"{name} may pass {statement['Resource']}"
        services = statement["Condition"]["StringEquals"]["iam:PassedToService"]
        assert sorted(services) == ["glue.amazonaws.com", "sagemaker.amazonaws.com"], f"{name}: {services}"


def test_mwaa_policy_covers_the_shipped_config(stack):
    # The calls the DAGs make for intent, on the names the shipped config uses.
    mwaa = policies(stack)["MwaaPolicy"]
    config = load_model("intent").aws
    group = config.model_package_group
    region, account = config.region, config.role_arn.split(":")[4]
    assert allows(mwaa, "sagemaker:CreateModelPackage", f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/1")
    assert allows(mwaa, "sagemaker:UpdateModelPackage", f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/1")
    assert allows(mwaa, "glue:StartJobRun", f"arn:aws:glue:{region}:{account}:job/retrain-intent-build-dataset-abc123")
    assert allows(
        mwaa, "sagemaker:CreateTrainingJob", f"arn:aws:sagemaker:{region}:{account}:training-job/intent-train-model-x"
    )
    assert allows(mwaa, "sns:Publish", config.alerts.sns_topic_arn)
    assert allows(mwaa, "s3:PutObject", f"arn:aws:s3:::{config.artifact_bucket}/ledger/intent.jsonl")
    assert not allows(
        mwaa, "sagemaker:DeleteModelPackage", f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/1"
    )


def test_mwaa_policy_refuses_jobs_without_the_data_key(template):
    stack = Stack(template, ACCOUNT, REGION, ALL_TRUE)
    (deny,) = [s for s in policies(stack)["MwaaPolicy"] if s.get("Sid") == "DenyJobsWithoutDataKey"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {
        "StringNotEquals": {"sagemaker:VolumeKmsKey": stack.resolve(template["Outputs"]["KmsKeyArn"]["Value"])}
    }


# ---- outputs, config fields and environment variables ---------------------------------------------


def test_every_output_target_is_a_config_field_or_a_variable_the_code_reads(template):
    targets = template["Metadata"]["Retrain::OutputTargets"]
    fields = docs.config_field_paths()
    code = "\n".join(path.read_text() for path in (PROJECT_ROOT / "plugins" / "retrain").rglob("*.py"))
    assert set(targets) <= set(template["Outputs"]), (
        f"outputs named in metadata but missing: {set(targets) - set(template['Outputs'])}"
    )
    for output, names in targets.items():
        assert names, f"{output}: maps to nothing"
        for name in names:
            kind, _, rest = name.partition(".")
            if kind == "aws":
                assert name in fields, f"{output} -> {name}: AwsConfig has no such field"
            elif kind == "env":
                assert f'"{rest}"' in code, f"{output} -> {name}: no module under plugins/retrain reads {rest}"
            else:
                raise AssertionError(f"{output} -> {name}: a target is aws.<field> or env.<VARIABLE>")
    # Outputs that feed nothing must say so here: today only the policy to attach by hand.
    assert set(template["Outputs"]) - set(targets) == {"MwaaPolicyArn"}


def test_every_config_field_is_fed_by_an_output_or_chosen_per_model(template):
    mapped = {
        name
        for names in template["Metadata"]["Retrain::OutputTargets"].values()
        for name in names
        if name.startswith("aws.")
    }
    chosen = set(template["Metadata"]["Retrain::ChosenPerModel"])
    fields = docs.config_field_paths()
    assert chosen <= fields, f"Retrain::ChosenPerModel names no field: {chosen - fields}"
    assert not mapped & chosen, f"both fed by an output and chosen per model: {mapped & chosen}"
    unclassified = [row.path for row in docs.field_rows(template) if row.source == "unclassified"]
    assert not unclassified, f"AwsConfig fields the template's metadata does not place: {unclassified}"


def test_outputs_reproduce_the_shipped_config_with_default_parameters(template):
    # Deployed with its defaults in the config's account and region, the stack yields the names the
    # shipped intent config already holds, so the example config and the template agree.
    config = load_model("intent").aws
    account = config.role_arn.split(":")[4]
    stack = Stack(template, account, config.region, {"CreateKmsKey": True, "HasVpc": True})
    outputs = {name: stack.resolve(spec["Value"]) for name, spec in template["Outputs"].items()}
    for output, names in template["Metadata"]["Retrain::OutputTargets"].items():
        for name in names:
            if not name.startswith("aws.") or name in (
                "aws.kms_key_arn",
                "aws.vpc.subnets",
                "aws.vpc.security_group_ids",
            ):
                continue  # the key id is AWS's choice; subnets and groups are parameters the config repeats
            value = config
            for part in name.split(".")[1:]:
                value = getattr(value, part)
            assert outputs[output] == value, f"{output} = {outputs[output]!r}, but intent.yaml has {name} = {value!r}"


def test_readme_config_table_matches_the_config_and_template(template):
    # Regenerate with: source scripts/env.sh && python -m retrain_tools.aws_docs --write
    current = docs.readme_table()
    assert current is not None, "docs/aws.md has no generated aws: config table"
    assert current == docs.render_table(template), (
        "docs/aws.md's aws: table is stale: run python -m retrain_tools.aws_docs --write"
    )
