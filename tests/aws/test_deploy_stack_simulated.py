"""``bin/retrain deploy stack`` (retrain_tools.deploy.stack) against moto, an AWS simulator, never AWS.

The tool checks the parameters against the template, stages the template in S3 (it is over CloudFormation's
51,200-byte inline limit), creates the stack, waits, returns the outputs; a second run updates it, keeping every
parameter it is not given. Each request is checked against botocore's model first.

moto 5.2.5's CloudFormation cannot create the whole stack, so these tests run what it can, and say what it cannot:
- it has no AWS::MWAA::Environment, AWS::SageMaker::MlflowTrackingServer, AWS::SageMaker::ModelPackageGroup,
  AWS::S3::BucketPolicy, AWS::IAM::RolePolicy nor AWS::EC2::SecurityGroupEgress: it skips them (with a warning),
  and an output reading an attribute of one fails CreateStack, so the template deployed here is the shipped one
  less the outputs MlflowTrackingServerArn, MwaaEnvironmentName and MwaaWebserverUrl (resources unchanged);
- its Fn::Cidr and Fn::GetAZs do not resolve, so the created-VPC branch (the default) cannot run: the tests give
  existing SubnetIds and SecurityGroupIds (no VPC, endpoints or NAT are created);
- it splits no CommaDelimitedList default, knows a default only when the parameter was passed (UsePreviousValue of
  an unpassed one fails) and leaves AWS::NoValue in a list as null: the tests pass every parameter at create and
  RequireNetworkIsolation=true (whose Fn::If has no NoValue branch taken).
Those are moto's gaps, not the template's: tests/aws/test_infrastructure.py resolves the whole template, and cfn-lint
checks it against CloudFormation's schemas. Whether AWS creates it is not tested here.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from retrain.aws.schema import RequestInvalid
from retrain_tools import aws_docs
from retrain_tools.deploy import stack

REGION = "us-east-1"
SIMULATOR_GAPS = ("MlflowTrackingServerArn", "MwaaEnvironmentName", "MwaaWebserverUrl")


def _without_outputs(text: str, names: tuple[str, ...]) -> str:
    head, outputs = text.split("\nOutputs:\n")
    blocks = re.split(r"\n(?=  [A-Za-z0-9]+:\n)", "\n" + outputs)
    kept = [b.strip("\n") for b in blocks if b.strip() and b.strip().split(":")[0] not in names]
    assert len(kept) == len([b for b in blocks if b.strip()]) - len(names), "an output to drop is missing"
    return head + "\nOutputs:\n" + "\n".join(kept) + "\n"


@pytest.fixture
def simulated_template(tmp_path) -> Path:
    path = tmp_path / "retrain.yaml"
    path.write_text(_without_outputs(stack.TEMPLATE.read_text(), SIMULATOR_GAPS))
    return path


@pytest.fixture
def clients(simulator_env):
    return stack.clients(REGION)


def _all_parameters(environment: str) -> dict[str, str]:
    """Every template parameter, explicitly (moto keeps only passed ones), on an existing VPC (see the docstring)."""
    declared = aws_docs.load_template(stack.TEMPLATE)["Parameters"]
    given = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
    return {
        **given,
        "EnvironmentName": environment,
        "SubnetIds": "subnet-0a1b2c3d4e5f60718,subnet-0f1e2d3c4b5a69788",
        "SecurityGroupIds": "sg-0123456789abcdef0",
        "RequireNetworkIsolation": "true",
    }


def test_deploy_stack_creates_then_updates_the_stack_on_the_simulator(clients, simulated_template):
    cfn, s3, sts = clients
    environment = f"rt{uuid.uuid4().hex[:8]}"
    name = f"retrain-{environment}"
    log: list[str] = []
    account = sts.get_caller_identity()["Account"]  # as the CLI asks; the session's credentials choose it
    common = {"region": REGION, "account": account, "template_path": simulated_template, "poll_s": 1, "log": log.append}

    found = stack.deploy(cfn, s3, name, _all_parameters(environment), timeout_s=120, **common)

    assert stack.describe_stack(cfn, name)["StackStatus"] == "CREATE_COMPLETE"
    assert found["JobRoleArn"] == f"arn:aws:iam::{account}:role/{environment}-jobs"
    assert found["DatasetBucketName"] == f"{environment}-datasets-{account}"
    assert found["MwaaSourceBucketName"] == f"airflow-{environment}-{account}"
    assert found["SubnetIds"] == "subnet-0a1b2c3d4e5f60718,subnet-0f1e2d3c4b5a69788"
    # What moto created is what the template says: the buckets, the trust conditions, the policy attached.
    # (moto's CloudFormation ignores a bucket's VersioningConfiguration, so versioning is not checked here.)
    for bucket in (found["DatasetBucketName"], found["GoldenBucketName"], found["MwaaSourceBucketName"]):
        s3.head_bucket(Bucket=bucket)
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    trust = iam.get_role(RoleName=f"{environment}-jobs")["Role"]["AssumeRolePolicyDocument"]
    assert all(s["Condition"]["StringEquals"]["aws:SourceAccount"] == account for s in trust["Statement"])
    attached = iam.list_attached_role_policies(RoleName=f"{environment}-mwaa-execution")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [found["MwaaPolicyArn"]]
    # The template went to a private, versioned bucket under its digest, and the stack was created from it.
    template_bucket = stack.template_bucket_name(environment, account, REGION)
    assert s3.get_bucket_versioning(Bucket=template_bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=template_bucket)["PublicAccessBlockConfiguration"].values())
    (staged,) = s3.list_objects_v2(Bucket=template_bucket)["Contents"]
    assert staged["Key"].startswith("templates/retrain-")

    # The same again: nothing to update, the same outputs.
    assert stack.deploy(cfn, s3, name, {}, timeout_s=120, **common) == found
    assert any("nothing to update" in line for line in log)

    # One parameter changed: an update that keeps every other parameter's value (EnvironmentName above all).
    stack.deploy(cfn, s3, name, {"GoldenRetentionDays": "30"}, timeout_s=120, **common)
    described = stack.describe_stack(cfn, name)
    assert described["StackStatus"] == "UPDATE_COMPLETE"
    values = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert values["GoldenRetentionDays"] == "30" and values["EnvironmentName"] == environment
    assert stack.outputs(described)["JobRoleArn"] == found["JobRoleArn"]


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("GoldenRetentionDay=30", "no such parameter"),
        ("GoldenLockMode=LEGAL_HOLD", "not one of"),
        ("EnvironmentName=Retrain_Prod", "does not match"),
        ("GoldenRetentionDays=0", "outside"),
        ("MwaaMaxWorkers=many", "not a number"),
    ],
)
def test_deploy_stack_refuses_bad_parameters_before_sending_anything(clients, override, complaint):
    cfn, s3, sts = clients
    name = f"retrain-refused-{uuid.uuid4().hex[:8]}"
    account = sts.get_caller_identity()["Account"]
    with pytest.raises(stack.StackError, match=complaint):
        stack.deploy(cfn, s3, name, stack.parse_overrides([override]), region=REGION, account=account, log=print)
    assert stack.describe_stack(cfn, name) is None


def test_stack_requests_are_checked_against_botocores_model():
    declared = aws_docs.load_template(stack.TEMPLATE)["Parameters"]
    template = {"TemplateURL": "https://b.s3.us-east-1.amazonaws.com/templates/retrain-x.yaml"}
    create = stack.stack_request("retrain", template, declared, {"ModelName": "intent"}, None)
    assert create["Capabilities"] == ["CAPABILITY_NAMED_IAM"] and create["EnableTerminationProtection"] is True
    existing = {"Parameters": [{"ParameterKey": "ModelName"}, {"ParameterKey": "EnvironmentName"}]}
    update = stack.stack_request("retrain", template, declared, {"ModelName": "sentiment"}, existing)
    assert update["Parameters"] == [
        {"ParameterKey": "ModelName", "ParameterValue": "sentiment"},
        {"ParameterKey": "EnvironmentName", "UsePreviousValue": True},
    ]
    assert "EnableTerminationProtection" not in update  # not an UpdateStack member: the model check would refuse it
    with pytest.raises(RequestInvalid, match="TemplateURL"):  # over the model's 5,120 characters
        stack.stack_request("retrain", {"TemplateURL": "https://b/" + "x" * 5200}, declared, {}, None)
    with pytest.raises(RequestInvalid, match="Tags"):  # the name is the tag's value: at most 256 characters
        stack.stack_request("r" * 300, template, declared, {}, None)


def test_parse_overrides_keeps_list_values_and_refuses_malformed_ones():
    assert stack.parse_overrides(["SubnetIds=subnet-a,subnet-b", "VpcCidr=10.0.0.0/16"]) == {
        "SubnetIds": "subnet-a,subnet-b",
        "VpcCidr": "10.0.0.0/16",
    }
    with pytest.raises(stack.StackError):
        stack.parse_overrides(["NatGateway"])
    with pytest.raises(stack.StackError):
        stack.parse_overrides(["NatGateway=true", "NatGateway=false"])
