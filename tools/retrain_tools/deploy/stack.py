"""``bin/retrain deploy stack``: create or update the CloudFormation stack of ``infra/cloudformation/retrain.yaml``.

The first step from an empty account (stack -> image -> build -> push, docs/aws.md):

1. Check the ``--parameter Key=Value`` overrides against the template's own Parameters (names, AllowedValues,
   AllowedPattern, Min/MaxValue) before anything is sent: a typo is refused here, not after minutes of rollback.
2. ``DescribeStacks``: no stack of that name -> ``CreateStack`` (termination protection on); a stack -> ``UpdateStack``
   with every parameter not overridden kept at its previous value. A stack in ``ROLLBACK_COMPLETE`` (a failed first
   create) cannot be updated: it is refused with the reason, to be deleted first.
3. The template is larger than CloudFormation's 51,200-byte ``TemplateBody`` limit, so it goes to S3 first, under its
   content digest (``templates/retrain-<sha256>.yaml``) in ``--template-bucket``, created private, versioned and
   encrypted when absent (default ``<EnvironmentName>-cfn-<account>-<region>``), and the request names it by URL.
4. Wait with CloudFormation's waiter; on failure, the events that failed are the error. Then print the outputs and
   the next commands.

Every request is checked against botocore's service model (``retrain.aws.schema``) before it is sent, as
``deploy push`` does. ``CAPABILITY_NAMED_IAM``: the roles and the policy have fixed names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.aws.schema import validate_request
from retrain_tools import aws_docs

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = PROJECT_ROOT / "infra" / "cloudformation" / "retrain.yaml"
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation's TemplateBody limit, in bytes; larger templates go by TemplateURL
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
NO_CHANGES = "No updates are to be performed"


class StackError(RuntimeError):
    """The stack cannot be created or updated (or its create/update failed); the message says why."""


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["Key=Value", ...]`` -> ``{Key: Value}``; a value may contain '=' and ',' (list parameters)."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StackError(f"--parameter {item!r}: expected Key=Value")
        if key in overrides and overrides[key] != value:
            raise StackError(f"--parameter {key} given twice, as {overrides[key]!r} and {value!r}")
        overrides[key] = value
    return overrides


def check_parameters(declared: dict[str, dict[str, Any]], overrides: dict[str, str]) -> None:
    """Refuse overrides the template does not declare or whose value it would refuse; StackError lists them all."""
    problems = []
    for key, value in overrides.items():
        spec = declared.get(key)
        if spec is None:
            problems.append(f"{key}: the template has no such parameter (it has {', '.join(sorted(declared))})")
            continue
        if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
            problems.append(f"{key}={value!r}: not one of {spec['AllowedValues']}")
        if "AllowedPattern" in spec and spec["Type"] == "String" and not re.fullmatch(spec["AllowedPattern"], value):
            problems.append(f"{key}={value!r}: does not match {spec['AllowedPattern']}")
        if spec["Type"] == "Number":
            try:
                number = float(value)
            except ValueError:
                problems.append(f"{key}={value!r}: not a number")
                continue
            if number < spec.get("MinValue", number) or number > spec.get("MaxValue", number):
                problems.append(f"{key}={value}: outside [{spec.get('MinValue')}, {spec.get('MaxValue')}]")
    if problems:
        raise StackError("parameters refused, nothing was sent:\n  " + "\n  ".join(problems))


def describe_stack(cfn, name: str) -> dict[str, Any] | None:
    """The stack named ``name`` (DescribeStacks), or None when there is none."""
    request = {"StackName": name}
    validate_request("cloudformation", "DescribeStacks", request)
    try:
        return cfn.describe_stacks(**request)["Stacks"][0]
    except Exception as exc:  # botocore's ClientError; imported lazily with boto3
        error = getattr(exc, "response", {}).get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            return None
        raise


def stack_request(
    name: str,
    template: dict[str, str],
    declared: dict[str, dict[str, Any]],
    overrides: dict[str, str],
    existing: dict[str, Any] | None,
) -> dict[str, Any]:
    """The CreateStack (``existing`` None) or UpdateStack request, validated against botocore's model.

    ``template`` is ``{"TemplateBody": ...}`` or ``{"TemplateURL": ...}``. On update, a parameter not overridden keeps
    its previous value (UsePreviousValue), never silently falls back to the template's default.
    """
    parameters = [{"ParameterKey": key, "ParameterValue": overrides[key]} for key in sorted(overrides)]
    if existing is not None:
        previous = {p["ParameterKey"] for p in existing.get("Parameters", [])}
        parameters += [
            {"ParameterKey": key, "UsePreviousValue": True}
            for key in sorted(declared)
            if key not in overrides and key in previous
        ]
    request: dict[str, Any] = {
        "StackName": name,
        **template,
        "Parameters": parameters,
        "Capabilities": CAPABILITIES,
        "Tags": [{"Key": "retrain:stack", "Value": name}],
    }
    if existing is None:
        request["EnableTerminationProtection"] = True  # the stack holds the buckets' policies and the roles
    validate_request("cloudformation", "UpdateStack" if existing is not None else "CreateStack", request)
    return request


def template_bucket_name(environment: str, account: str, region: str) -> str:
    return f"{environment}-cfn-{account}-{region}"


def ensure_template_bucket(s3, bucket: str, region: str, log: Callable[[str], None]) -> None:
    """Create ``bucket`` (private, versioned, SSE-S3, TLS only by its owner's requests) unless it exists."""
    validate_request("s3", "HeadBucket", {"Bucket": bucket})
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    create: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    requests = [
        ("CreateBucket", create, s3.create_bucket),
        (
            "PutPublicAccessBlock",
            {
                "Bucket": bucket,
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            },
            s3.put_public_access_block,
        ),
        (
            "PutBucketVersioning",
            {"Bucket": bucket, "VersioningConfiguration": {"Status": "Enabled"}},
            s3.put_bucket_versioning,
        ),
    ]
    for operation, request, call in requests:
        validate_request("s3", operation, request)
        call(**request)
    log(f"created the template bucket {bucket} (private, versioned)")


def stage_template(s3, bucket: str, region: str, text: str) -> str:
    """Upload the template under its content digest; its TemplateURL."""
    key = f"templates/retrain-{hashlib.sha256(text.encode()).hexdigest()[:20]}.yaml"
    request = {"Bucket": bucket, "Key": key, "Body": text.encode(), "ContentType": "application/x-yaml"}
    validate_request("s3", "PutObject", request)
    s3.put_object(**request)
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def failure_events(cfn, name: str, limit: int = 10) -> list[str]:
    """The newest failed resource events of the stack, oldest first: what to read when a create or update fails."""
    validate_request("cloudformation", "DescribeStackEvents", {"StackName": name})
    events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    failed = [e for e in events if e.get("ResourceStatus", "").endswith("FAILED")][:limit]
    return [
        f"{e['LogicalResourceId']} ({e.get('ResourceType', '?')}): {e['ResourceStatus']}: "
        f"{e.get('ResourceStatusReason', '')}"
        for e in reversed(failed)
    ]


def wait(cfn, name: str, created: bool, poll_s: float, timeout_s: float) -> dict[str, Any]:
    """CloudFormation's waiter for the create or update; the stack as described at the end; StackError on failure."""
    from botocore.exceptions import WaiterError

    waiter = cfn.get_waiter("stack_create_complete" if created else "stack_update_complete")
    try:
        waiter.wait(StackName=name, WaiterConfig={"Delay": poll_s, "MaxAttempts": max(1, int(timeout_s / poll_s))})
    except WaiterError as exc:
        reasons = failure_events(cfn, name)
        raise StackError(
            f"stack {name} {'create' if created else 'update'} did not complete ({exc}):\n  "
            + "\n  ".join(reasons or ["no failed events recorded"])
        ) from None
    return describe_stack(cfn, name)


def deploy(
    cfn,
    s3,
    name: str,
    overrides: dict[str, str],
    *,
    region: str,
    account: str,
    template_path: Path = TEMPLATE,
    template_bucket: str | None = None,
    poll_s: float = 30.0,
    timeout_s: float = 7200.0,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Create or update the stack and wait; its outputs (OutputKey -> OutputValue). ``dry_run`` sends nothing."""
    text = template_path.read_text()
    declared = aws_docs.load_template(template_path)["Parameters"]
    check_parameters(declared, overrides)
    existing = describe_stack(cfn, name)
    if existing is not None and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"):
        raise StackError(
            f"stack {name} is {existing['StackStatus']} (its first create failed); it cannot be updated: delete it "
            f"(aws cloudformation delete-stack --stack-name {name}; the buckets are retained) and run this again"
        )
    if existing is not None and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise StackError(f"stack {name} is {existing['StackStatus']}; wait for it to finish")
    action = "update" if existing is not None else "create"
    if len(text.encode()) <= TEMPLATE_BODY_LIMIT:
        template = {"TemplateBody": text}
    else:
        previous = {p["ParameterKey"]: p.get("ParameterValue") for p in (existing or {}).get("Parameters", [])}
        environment = (
            overrides.get("EnvironmentName")
            or previous.get("EnvironmentName")
            or str(declared["EnvironmentName"]["Default"])
        )
        bucket = template_bucket or template_bucket_name(environment, account, region)
        if dry_run:
            template = {"TemplateURL": f"https://{bucket}.s3.{region}.amazonaws.com/templates/(not uploaded).yaml"}
        else:
            ensure_template_bucket(s3, bucket, region, log)
            template = {"TemplateURL": stage_template(s3, bucket, region, text)}
    request = stack_request(name, template, declared, overrides, existing)
    kept = [p["ParameterKey"] for p in request["Parameters"] if p.get("UsePreviousValue")]
    log(
        f"{action} stack {name} in {region}: "
        + (", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "template defaults")
        + (f"; keeping {', '.join(kept)}" if kept else "")
    )
    if dry_run:
        log("dry run: nothing was sent")
        return {}
    if existing is None:
        cfn.create_stack(**request)
    else:
        try:
            cfn.update_stack(**request)
        except Exception as exc:
            if NO_CHANGES not in getattr(exc, "response", {}).get("Error", {}).get("Message", ""):
                raise
            log(f"stack {name} already matches this template and these parameters: nothing to update")
            return outputs(existing)
    log(f"waiting for {action} of {name} (an MWAA environment takes 20-30 minutes)")
    return outputs(wait(cfn, name, existing is None, poll_s, timeout_s))


def outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def next_steps(found: dict[str, str]) -> list[str]:
    """What to run after the stack, in order, with its outputs filled in."""
    lines = [f"  {key}: {value}" for key, value in sorted(found.items())]
    push = "bin/retrain deploy push --bucket {} --environment {}".format(
        found.get("MwaaSourceBucketName", "<source bucket>"), found.get("MwaaEnvironmentName", "<environment>")
    )
    return [
        "outputs:",
        *lines,
        "next: copy the outputs into each config's aws: section (docs/aws.md), then",
        "  bin/retrain deploy image --tag && bin/retrain deploy image   # the job image, in ECR",
        "  bin/retrain deploy build",
        f"  {push}",
    ]


def clients(region: str | None = None):
    """boto3 CloudFormation, S3 and STS clients (boto3 honours AWS_ENDPOINT_URL, e.g. a simulator's, itself)."""
    import boto3

    return (
        boto3.client("cloudformation", region_name=region),
        boto3.client("s3", region_name=region),
        boto3.client("sts", region_name=region),
    )
