"""The CloudFormation template (infra/cloudformation/retrain.yaml), checked offline.

cfn-lint validates it against CloudFormation's resource schemas bundled with cfn-lint (types,
required properties, enums, attributes, IAM action names). The rest parses the template and
checks what the README promises: Object Lock on golden, KMS and TLS on every bucket, nobody
in the stack can write raw/ or golden, PassRole goes only to the job role, the least-privilege
scoping of every role (job names, instance types, subnets, MLflow actions, trust conditions, the
append-only ledger), the VPC and the MWAA environment, and that every stack output feeds a real
AwsConfig field or an environment variable the code reads. Nothing here deploys the stack or asks
AWS anything: IAM is evaluated by the evaluator below (conditions, explicit Deny, NotAction and
NotResource), itself tested against AWS's documented examples, not by AWS.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
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
        ("TrackingServerSize: !Ref MlflowTrackingServerSize", "TrackingServerSize: Tiny", "E3030"),  # an enum
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

    def __init__(
        self,
        template: dict[str, Any],
        account: str,
        region: str,
        conditions: dict[str, bool] | None = None,
        parameters: dict[str, Any] | None = None,
    ):
        self.t, self.account, self.region = template, account, region
        self.params = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
        self.params.update(parameters or {})
        for name, spec in template["Parameters"].items():  # a list parameter's Ref is a list
            if spec["Type"] == "CommaDelimitedList" and isinstance(self.params[name], str):
                self.params[name] = self.params[name].split(",")
        self.conditions = conditions or {}

    def condition(self, name: str) -> bool:
        """A condition given for this check, else the template's own, evaluated on the parameters."""
        if name in self.conditions:
            return self.conditions[name]
        return self._truth(self.t["Conditions"][name])

    def _truth(self, node: dict[str, Any]) -> bool:
        ((key, value),) = node.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(v) for v in value)
            return left == right
        if key == "Fn::Not":
            return not self._truth(value[0])
        if key == "Fn::And":
            return all(self._truth(v) for v in value)
        if key == "Fn::Or":
            return any(self._truth(v) for v in value)
        if key in ("Condition", "Fn::Condition"):
            return self.condition(value)
        raise NotImplementedError(f"condition function {key}")

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
        if kind == "AWS::MWAA::Environment":
            return self.resolve(props["Name"])
        # EC2 resources: AWS chooses the id; a placeholder with the id's prefix and the logical name.
        prefixes = {"AWS::EC2::VPC": "vpc", "AWS::EC2::Subnet": "subnet", "AWS::EC2::SecurityGroup": "sg"}
        if kind in prefixes:
            return f"{prefixes[kind]}-created-{name.lower()}"
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
        if (kind, attribute) == ("AWS::EC2::SecurityGroup", "GroupId"):
            return self.ref(name)
        if (kind, attribute) == ("AWS::MWAA::Environment", "WebserverUrl"):
            return f"created-{self.ref(name)}.airflow.{self.region}.on.aws"
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
            if key == "Fn::Split":
                return self.resolve(value[1]).split(value[0])
        return {key: value for key, value in ((k, self.resolve(v)) for k, v in node.items()) if value is not None}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def bucket_policy(stack: Stack, bucket: str) -> list[dict[str, Any]]:
    """The resolved statements of ``bucket``'s bucket policy (a resource policy: every statement names a Principal)."""
    (found,) = [
        r["Properties"]["PolicyDocument"]
        for r in stack.t["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    return _as_list(stack.resolve(found)["Statement"])


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


# ---- an IAM evaluator: statements, conditions, explicit Deny over Allow ------------------------------
#
# What AWS documents, and nothing more: the policy evaluation logic for one account
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html): an explicit Deny
# in any applicable policy wins, else an Allow in an identity or (same-account) resource policy, else the implicit
# deny; and the Condition element
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html,
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_logic_multiple_context_keys_or_values.html,
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html):
# operators AND together, keys within an operator AND together, the values of one key OR together (AND for the
# negated operators), a key missing from the request makes an operator false (true for a negated one) except
# ...IfExists (true when missing), Null (tests presence) and ForAllValues (true when missing). SCPs, permission
# boundaries, session policies and policy variables are not modelled; an operator it does not know is an error.
# test_the_evaluator_agrees_with_aws_documented_examples checks it against the documents' own examples.

ALLOW, EXPLICIT_DENY, IMPLICIT_DENY = "allow", "explicit deny", "implicit deny"


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: '*' is any run of characters ('/' and ':' included), '?' one character; no other specials."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL
    return re.fullmatch(regex, value, flags) is not None


def _matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    return any(_wildcard(p, value, ignore_case) for p in _as_list(patterns))


def _arn_like(pattern: str, value: str) -> bool:
    # ArnEquals/ArnLike: each of the six colon-delimited fields is matched on its own, wildcards included.
    p_fields, v_fields = pattern.split(":", 5), value.split(":", 5)
    return len(p_fields) == len(v_fields) == 6 and all(map(_wildcard, p_fields, v_fields))


_VALUE_MATCHERS = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringLike": _wildcard,
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: str(p).lower() == str(v).lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _key_holds(qualifier: str, base: str, if_exists: bool, policy_values: Any, request_values: Any) -> bool:
    """One context key of one operator; ``request_values`` is None when the request lacks the key."""
    if base == "Null":
        return str(policy_values).lower() == ("true" if request_values is None else "false")
    negated = base in _NEGATED
    matcher = _VALUE_MATCHERS.get(_NEGATED.get(base, base))
    if matcher is None:
        raise NotImplementedError(f"condition operator {base}")
    if request_values is None:
        return if_exists or qualifier == "ForAllValues" or (negated and qualifier != "ForAnyValue")
    if qualifier == "" and isinstance(request_values, list):
        raise ValueError("a multivalued key needs ForAllValues or ForAnyValue in the policy")

    def one(value: Any) -> bool:
        hit = any(matcher(str(p), str(value)) for p in _as_list(policy_values))
        return not hit if negated else hit

    values = [one(v) for v in _as_list(request_values)]
    return any(values) if qualifier == "ForAnyValue" else all(values)


def _operator_holds(operator: str, block: dict[str, Any], context: dict[str, Any]) -> bool:
    """One operator of a Condition element against the request context (keys case-insensitive); keys AND together."""
    qualifier, _, base = operator.rpartition(":")
    if qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise NotImplementedError(f"condition qualifier {qualifier}")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    lowered = {key.lower(): value for key, value in context.items()}
    return all(
        _key_holds(qualifier, base, if_exists, values, lowered.get(key.lower())) for key, values in block.items()
    )


def _principal_matches(principal: Any, who: dict[str, str] | None) -> bool:
    if principal is None:  # an identity policy: it applies to its own principal
        return True
    if principal == "*":
        return True
    if who is None:
        return False
    return any(_matches(principal.get(kind, []), name) for kind, name in who.items())


def _applies(statement: dict[str, Any], request: Request) -> bool:
    if "Action" in statement:
        action_ok = _matches(statement["Action"], request.action, ignore_case=True)  # action names ignore case
    else:
        action_ok = not _matches(statement["NotAction"], request.action, ignore_case=True)
    if "Resource" in statement:
        resource_ok = _matches(statement["Resource"], request.resource)
    elif "NotResource" in statement:
        resource_ok = not _matches(statement["NotResource"], request.resource)
    else:  # a trust policy names no resource: the role itself
        resource_ok = True
    return (
        action_ok
        and resource_ok
        and _principal_matches(statement.get("Principal"), request.principal)
        and all(_operator_holds(op, block, request.context) for op, block in statement.get("Condition", {}).items())
    )


@dataclass(frozen=True)
class Request:
    """One request as IAM sees it: action, resource ARN, request context and, for resource policies, the caller."""

    action: str
    resource: str = "*"
    context: dict[str, Any] = field(default_factory=dict)
    principal: dict[str, str] | None = None  # {"Service": "sagemaker.amazonaws.com"} or {"AWS": "<arn>"}


def decide(statements: list[dict[str, Any]], request: Request) -> str:
    """ALLOW, EXPLICIT_DENY or IMPLICIT_DENY for ``request`` under ``statements`` (all the applicable policies)."""
    applying = [s for s in statements if _applies(s, request)]
    if any(s["Effect"] == "Deny" for s in applying):
        return EXPLICIT_DENY
    return ALLOW if any(s["Effect"] == "Allow" for s in applying) else IMPLICIT_DENY


def allows(statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, Any] | None = None) -> bool:
    """With ``context``: whether that request is allowed. Without: whether ANY request context could be allowed.

    The second is the sound form of "nobody may": every Allow's conditions are assumed met and every
    conditional Deny assumed not to apply, so a False here holds whatever the request carries.
    """
    if context is not None:
        return decide(statements, Request(action, resource, context)) == ALLOW
    unconditional = [
        {k: v for k, v in s.items() if k != "Condition"}
        for s in statements
        if s["Effect"] == "Allow" or "Condition" not in s
    ]
    return decide(unconditional, Request(action, resource)) == ALLOW


# The evaluator checked against AWS's own examples: (policy statements, request, documented outcome).
_EVALUATION_LOGIC = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html"
_OPERATORS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html"
_MULTIVALUED = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition_examples-multi-valued-context-keys.html"
_NOTACTION = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html"
_MFA_DENY = [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {
        "Effect": "Deny",
        "Action": "ec2:*",
        "Resource": "*",
        "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
    },
]
_RUN_INSTANCES_IF_EXISTS = [  # the operators page's ...IfExists example
    {
        "Effect": "Allow",
        "Action": "ec2:RunInstances",
        "Resource": "*",
        "Condition": {"StringLikeIfExists": {"ec2:InstanceType": ["t1.*", "t2.*", "m3.*"]}},
    }
]
_NO_TEMPORARY_CREDENTIALS = [  # the operators page's Null example: EC2 only without temporary credentials
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*", "Condition": {"Null": {"aws:TokenIssueTime": "true"}}}
]
_TAG_KEYS_ALL = [  # multivalued keys: every requested tag key must be one of the listed ones
    {
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": "*",
        "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}},
    }
]
_TAG_KEYS_ANY = [
    {**_TAG_KEYS_ALL[0], "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}}}
]
_PRINCIPAL_TAG_NOT = [  # negated operator, several values: true only when the value is none of them (AND)
    {
        "Effect": "Allow",
        "Action": "iam:*AccessKey*",
        "Resource": "arn:aws:iam::111122223333:user/*",
        "Condition": {"StringNotEquals": {"aws:PrincipalTag/job-category": ["iamuser-admin", "audit"]}},
    }
]
_SOURCE_ARN_SNS = [  # ARN operators: the operators page's ArnEquals example on aws:SourceArn
    {
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
        "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:sns:REGION:123456789012:TOPIC-ID"}},
    }
]
_SNS = {"Service": "sns.amazonaws.com"}
DOCUMENTED_EXAMPLES = [
    # Evaluation logic: an explicit Deny overrides any Allow; with neither, the request is implicitly denied.
    (
        _EVALUATION_LOGIC,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
        ],
        Request("s3:DeleteObject", "arn:aws:s3:::amzn-s3-demo-bucket/x"),
        EXPLICIT_DENY,
    ),
    (
        _EVALUATION_LOGIC,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
        ],
        Request("s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/x"),
        ALLOW,
    ),
    (
        _EVALUATION_LOGIC,
        [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
        Request("s3:PutObject", "x"),
        IMPLICIT_DENY,
    ),
    # ...IfExists: an instance type, when the request has one, must be t1/t2/m3; a request without the key passes.
    (_OPERATORS, _RUN_INSTANCES_IF_EXISTS, Request("ec2:RunInstances", "*", {"ec2:InstanceType": "t2.micro"}), ALLOW),
    (
        _OPERATORS,
        _RUN_INSTANCES_IF_EXISTS,
        Request("ec2:RunInstances", "*", {"ec2:InstanceType": "m5.large"}),
        IMPLICIT_DENY,
    ),
    (_OPERATORS, _RUN_INSTANCES_IF_EXISTS, Request("ec2:RunInstances", "*", {}), ALLOW),
    # The same without IfExists: a missing key makes a positive operator false.
    (
        _OPERATORS,
        [{**_RUN_INSTANCES_IF_EXISTS[0], "Condition": {"StringLike": {"ec2:InstanceType": ["t1.*", "t2.*", "m3.*"]}}}],
        Request("ec2:RunInstances", "*", {}),
        IMPLICIT_DENY,
    ),
    # Null: "true" holds when the key is absent (long-term credentials), not when present (temporary ones).
    (_OPERATORS, _NO_TEMPORARY_CREDENTIALS, Request("ec2:DescribeInstances", "*", {}), ALLOW),
    (
        _OPERATORS,
        _NO_TEMPORARY_CREDENTIALS,
        Request("ec2:DescribeInstances", "*", {"aws:TokenIssueTime": "2026-11-23T10:00:00Z"}),
        IMPLICIT_DENY,
    ),
    # Bool vs BoolIfExists on a Deny: long-term credentials carry no aws:MultiFactorAuthPresent; only
    # BoolIfExists denies them, while Bool lets them through.
    (_OPERATORS, _MFA_DENY, Request("ec2:StopInstances", "*", {}), EXPLICIT_DENY),
    (_OPERATORS, _MFA_DENY, Request("ec2:StopInstances", "*", {"aws:MultiFactorAuthPresent": "true"}), ALLOW),
    (
        _OPERATORS,
        [_MFA_DENY[0], {**_MFA_DENY[1], "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "false"}}}],
        Request("ec2:StopInstances", "*", {}),
        ALLOW,
    ),
    # A negated operator with a missing key is true; with several values it holds only if none matches.
    (_OPERATORS, _PRINCIPAL_TAG_NOT, Request("iam:CreateAccessKey", "arn:aws:iam::111122223333:user/bob", {}), ALLOW),
    (
        _OPERATORS,
        _PRINCIPAL_TAG_NOT,
        Request(
            "iam:CreateAccessKey", "arn:aws:iam::111122223333:user/bob", {"aws:PrincipalTag/job-category": "audit"}
        ),
        IMPLICIT_DENY,
    ),
    (
        _OPERATORS,
        _PRINCIPAL_TAG_NOT,
        Request("iam:CreateAccessKey", "arn:aws:iam::111122223333:user/bob", {"aws:PrincipalTag/job-category": "dev"}),
        ALLOW,
    ),
    # ARN operators and a resource policy's Principal.
    (
        _OPERATORS,
        _SOURCE_ARN_SNS,
        Request(
            "sqs:SendMessage",
            "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
            {"aws:SourceArn": "arn:aws:sns:REGION:123456789012:TOPIC-ID"},
            _SNS,
        ),
        ALLOW,
    ),
    (
        _OPERATORS,
        _SOURCE_ARN_SNS,
        Request(
            "sqs:SendMessage",
            "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
            {"aws:SourceArn": "arn:aws:sns:REGION:999999999999:TOPIC-ID"},
            _SNS,
        ),
        IMPLICIT_DENY,
    ),
    (
        _OPERATORS,
        _SOURCE_ARN_SNS,
        Request(
            "sqs:SendMessage",
            "arn:aws:sqs:REGION:123456789012:QUEUE-ID",
            {"aws:SourceArn": "arn:aws:sns:REGION:123456789012:TOPIC-ID"},
            {"Service": "events.amazonaws.com"},
        ),
        IMPLICIT_DENY,
    ),
    # Multivalued keys: ForAllValues needs every request value listed and is true when the key is missing;
    # ForAnyValue needs one listed value and is false when the key is missing.
    (_MULTIVALUED, _TAG_KEYS_ALL, Request("ec2:CreateTags", "*", {"aws:TagKeys": ["environment"]}), ALLOW),
    (
        _MULTIVALUED,
        _TAG_KEYS_ALL,
        Request("ec2:CreateTags", "*", {"aws:TagKeys": ["environment", "dept"]}),
        IMPLICIT_DENY,
    ),
    (_MULTIVALUED, _TAG_KEYS_ALL, Request("ec2:CreateTags", "*", {}), ALLOW),
    (_MULTIVALUED, _TAG_KEYS_ANY, Request("ec2:CreateTags", "*", {"aws:TagKeys": ["environment", "dept"]}), ALLOW),
    (_MULTIVALUED, _TAG_KEYS_ANY, Request("ec2:CreateTags", "*", {"aws:TagKeys": ["dept"]}), IMPLICIT_DENY),
    (_MULTIVALUED, _TAG_KEYS_ANY, Request("ec2:CreateTags", "*", {}), IMPLICIT_DENY),
    # NotAction with Allow: everything except the listed actions (the NotAction page's "all but IAM").
    (
        _NOTACTION,
        [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}],
        Request("s3:ListAllMyBuckets", "*"),
        ALLOW,
    ),
    (
        _NOTACTION,
        [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}],
        Request("iam:CreateUser", "*"),
        IMPLICIT_DENY,
    ),
]


@pytest.mark.parametrize(("source", "statements", "request_", "outcome"), DOCUMENTED_EXAMPLES)
def test_the_evaluator_agrees_with_aws_documented_examples(source, statements, request_, outcome):
    assert decide(statements, request_) == outcome, f"{source}: {request_} should be {outcome}"


def test_the_evaluator_refuses_what_it_does_not_model():
    # An unknown operator must be an error, never a silent True or False.
    statement = {
        "Effect": "Allow",
        "Action": "s3:*",
        "Resource": "*",
        "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}},
    }
    with pytest.raises(NotImplementedError):
        decide([statement], Request("s3:GetObject", "x", {"aws:CurrentTime": "2026-01-01"}))


ACCOUNT, REGION = "123456789012", "us-east-1"
# Conditions a check decides itself; the others (CreateVpc, CreateNat, CreateEnvironment) follow the parameters.
ALL_TRUE = {"CreateKmsKey": True, "HasMwaaRole": True, "IsolationRequired": True}
# The shipped intent config's subnets and security group, given as the stack's parameters.
SUBNETS, SECURITY_GROUPS = ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"], ["sg-0123456789abcdef0"]
VPC_PARAMETERS = {"SubnetIds": SUBNETS, "SecurityGroupIds": SECURITY_GROUPS}


@pytest.fixture(scope="module")
def stack(template) -> Stack:
    return Stack(template, ACCOUNT, REGION, ALL_TRUE, VPC_PARAMETERS)


def _object_arn(stack: Stack, bucket: str, key: str) -> str:
    return f"{stack.getatt(bucket, 'Arn')}/{key}"


# ---- buckets --------------------------------------------------------------------------------------


def test_golden_bucket_has_object_lock_in_compliance_mode_by_default(template, stack):
    golden = template["Resources"]["GoldenBucket"]["Properties"]
    assert golden["ObjectLockEnabled"] is True
    assert golden["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    retention = stack.resolve(golden["ObjectLockConfiguration"]["Rule"]["DefaultRetention"])
    # The defaults stay safe: COMPLIANCE for ten years (GOVERNANCE yields to s3:BypassGovernanceRetention).
    assert retention == {"Mode": "COMPLIANCE", "Days": 3650}
    assert template["Parameters"]["GoldenRetentionDays"]["MinValue"] >= 1


def test_golden_lock_mode_and_retention_are_parameters(template):
    # Publish markers are golden objects too, locked as long as the versions: a trial account must be able to
    # choose GOVERNANCE and a short retention without editing the template.
    retention = template["Resources"]["GoldenBucket"]["Properties"]["ObjectLockConfiguration"]["Rule"]
    assert retention["DefaultRetention"] == {"Mode": {"Ref": "GoldenLockMode"}, "Days": {"Ref": "GoldenRetentionDays"}}
    assert template["Parameters"]["GoldenLockMode"]["AllowedValues"] == ["COMPLIANCE", "GOVERNANCE"]
    with_governance = Stack(template, ACCOUNT, REGION, ALL_TRUE, {**VPC_PARAMETERS, "GoldenLockMode": "GOVERNANCE"})
    assert with_governance.resolve(retention["DefaultRetention"])["Mode"] == "GOVERNANCE"


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
    _assert_tls_only(stack, bucket)


def _assert_tls_only(stack: Stack, bucket: str) -> None:
    # Every request without TLS is denied, whoever makes it: evaluated, on the bucket and on an object.
    statements = bucket_policy(stack, bucket)
    arn = stack.getatt(bucket, "Arn")
    someone = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/anyone"}
    for resource in (arn, f"{arn}/raw/x.csv"):
        for action in ("s3:GetObject", "s3:ListBucket", "s3:PutObjectAcl"):
            plain = Request(action, resource, {"aws:SecureTransport": "false"}, someone)
            assert decide(statements, plain) == EXPLICIT_DENY, f"{bucket}: {action} over plain HTTP is not denied"
            tls = Request(action, resource, {"aws:SecureTransport": "true"}, someone)
            assert decide(statements, tls) != EXPLICIT_DENY, f"{bucket}: {action} over TLS is denied"


@pytest.mark.parametrize("bucket", BUCKETS)
def test_tls_deny_also_holds_when_the_request_carries_no_secure_transport_key(stack, bucket):
    # BoolIfExists, not Bool: with Bool a request whose context lacks aws:SecureTransport would escape the Deny.
    arn = stack.getatt(bucket, "Arn")
    request = Request("s3:GetObject", f"{arn}/any", {}, {"AWS": f"arn:aws:iam::{ACCOUNT}:role/anyone"})
    assert decide(bucket_policy(stack, bucket), request) == EXPLICIT_DENY


# ---- IAM ------------------------------------------------------------------------------------------


def _trust(stack: Stack, role: str) -> list[dict[str, Any]]:
    return _as_list(stack.resolve(stack.t["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])["Statement"])


def test_job_role_is_assumed_only_by_glue_and_sagemaker(stack):
    trust = _trust(stack, "JobRole")
    assert all(s["Effect"] == "Allow" and s["Action"] == "sts:AssumeRole" for s in trust)
    services = sorted(name for s in trust for name in _as_list(s["Principal"]["Service"]))
    assert services == ["glue.amazonaws.com", "sagemaker.amazonaws.com"]


def _assume(service: str, context: dict[str, Any]) -> Request:
    return Request("sts:AssumeRole", "*", context, {"Service": f"{service}.amazonaws.com"})


def test_job_role_trust_refuses_a_confused_deputy(stack):
    # aws:SourceAccount / aws:SourceArn: SageMaker or Glue acting for another account's job cannot get this role.
    trust = _trust(stack, "JobRole")
    own_training = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/intent-train-model-x"
    own_processing = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/intent-evaluate-model-x"
    other = "210987654321"
    for arn in (own_training, own_processing):
        assert decide(trust, _assume("sagemaker", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": arn})) == ALLOW
    assert decide(trust, _assume("glue", {"aws:SourceAccount": ACCOUNT})) == ALLOW
    glue_job = f"arn:aws:glue:{REGION}:{ACCOUNT}:job/retrain-intent-build-dataset-abc"
    assert decide(trust, _assume("glue", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": glue_job})) == ALLOW
    denied = [
        _assume("sagemaker", {}),
        _assume("sagemaker", {"aws:SourceAccount": other, "aws:SourceArn": own_training.replace(ACCOUNT, other)}),
        _assume("sagemaker", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": own_training.replace(ACCOUNT, other)}),
        _assume("sagemaker", {"aws:SourceAccount": ACCOUNT}),  # SageMaker names its job: a request without it is odd
        _assume("glue", {}),
        _assume("glue", {"aws:SourceAccount": other}),
        _assume("glue", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": glue_job.replace(ACCOUNT, other)}),
        _assume("ec2", {"aws:SourceAccount": ACCOUNT}),
    ]
    for request in denied:
        assert decide(trust, request) == IMPLICIT_DENY, f"the job role's trust admits {request}"


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


MODELS = sorted(path.stem for path in (PROJECT_ROOT / "config" / "models").glob("*.yaml"))
SAGEMAKER_JOBS = {"train_model": "training-job", "validate_raw": "processing-job", "evaluate_model": "processing-job"}
CREATE = {"training-job": "sagemaker:CreateTrainingJob", "processing-job": "sagemaker:CreateProcessingJob"}


def _shipped_stack(template, **conditions: bool) -> Stack:
    """The stack as the shipped intent config describes it: its account, region, key, subnets and groups."""
    config = load_model("intent").aws
    parameters = {"KmsKeyArn": config.kms_key_arn, "SubnetIds": SUBNETS, "SecurityGroupIds": SECURITY_GROUPS}
    decided = {**ALL_TRUE, "CreateKmsKey": False, "IsolationRequired": config.enable_network_isolation, **conditions}
    return Stack(template, config.role_arn.split(":")[4], config.region, decided, parameters)


def _job_request(model: str, task: str, run_id: str = "scheduled__2026-09-14T00:00:00+00:00", **context) -> Request:
    """The Create*Job request MWAA sends for ``model``'s ``task``, with the context keys SageMaker puts on it."""
    from retrain.aws.names import job_name

    config = load_model(model).aws
    kind = SAGEMAKER_JOBS[task]
    sizing = config.training if kind == "training-job" else config.processing
    arn = f"arn:aws:sagemaker:{config.region}:{config.role_arn.split(':')[4]}:{kind}/{job_name(model, task, run_id, 1)}"
    base = {
        "aws:RequestedRegion": config.region,
        "sagemaker:InstanceTypes": [sizing.instance_type],
        "sagemaker:VolumeKmsKey": config.kms_key_arn,
        "sagemaker:NetworkIsolation": str(config.enable_network_isolation).lower(),
    }
    return Request(CREATE[kind], arn, {**base, **context})


def test_mwaa_policy_covers_the_shipped_config(template):
    # The calls the DAGs make for intent, on the names the shipped config uses, each with its request context.
    stack = _shipped_stack(template)
    mwaa = policies(stack)["MwaaPolicy"]
    config = load_model("intent").aws
    group = config.model_package_group
    region, account = config.region, config.role_arn.split(":")[4]
    in_region = {"aws:RequestedRegion": region}
    package = f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/1"
    assert allows(mwaa, "sagemaker:CreateModelPackage", package, in_region)
    assert allows(mwaa, "sagemaker:UpdateModelPackage", package, in_region)
    glue_job = f"arn:aws:glue:{region}:{account}:job/retrain-intent-build-dataset-abc123"
    assert allows(mwaa, "glue:StartJobRun", glue_job, in_region)
    for task in SAGEMAKER_JOBS:
        request = _job_request("intent", task)
        assert decide(mwaa, request) == ALLOW, f"MWAA may not start intent's {task}: {request}"
    assert allows(mwaa, "sns:Publish", config.alerts.sns_topic_arn, in_region)
    assert not allows(mwaa, "sagemaker:DeleteModelPackage", package)


def test_mwaa_policy_covers_the_deployment_stage_and_never_deletes_what_serves(template):
    # The calls retrain_airflow.aws_deployment makes for intent, on the names retrain.aws.endpoints gives.
    from retrain.aws import endpoints

    mwaa = policies(_shipped_stack(template))["MwaaPolicy"]
    config = load_model("intent").aws
    region, account = config.region, config.role_arn.split(":")[4]
    arn = f"arn:aws:sagemaker:{region}:{account}:"
    endpoint = arn + "endpoint/" + endpoints.endpoint_name("intent")
    model = arn + "model/" + endpoints.model_name("intent", 7)
    endpoint_config = arn + "endpoint-config/" + endpoints.endpoint_config_name("intent", "v6-v7-s7", "run")
    for action, resource in (
        ("sagemaker:CreateModel", model),
        ("sagemaker:CreateEndpointConfig", endpoint_config),
        ("sagemaker:CreateEndpoint", endpoint),
        ("sagemaker:UpdateEndpoint", endpoint),
        ("sagemaker:UpdateEndpointWeightsAndCapacities", endpoint),
        ("sagemaker:DescribeEndpoint", endpoint),
    ):
        assert allows(mwaa, action, resource, {}), f"MWAA may not {action} {resource}"
    alarm = f"arn:aws:cloudwatch:{region}:{account}:alarm:" + endpoints.alarm_names("intent", "v7")["p99"]
    assert allows(mwaa, "cloudwatch:PutMetricAlarm", alarm, {})
    assert allows(mwaa, "cloudwatch:GetMetricData", "*", {})
    for action, resource in (
        ("sagemaker:DeleteEndpointConfig", endpoint_config),
        ("sagemaker:DeleteEndpoint", endpoint),
    ):
        assert not allows(mwaa, action, resource), f"MWAA may {action}"
    assert not allows(mwaa, "sagemaker:CreateEndpoint", arn + "endpoint/someone-elses", {})


@pytest.mark.parametrize("model", MODELS)
def test_mwaa_may_start_every_shipped_models_jobs(template, model):
    # Job-name prefixes (JobModelNames) and instance types (AllowedInstanceTypes) cover every shipped config.
    mwaa = policies(_shipped_stack(template))["MwaaPolicy"]
    for task in SAGEMAKER_JOBS:
        request = _job_request(model, task)
        assert decide(mwaa, request) == ALLOW, f"MWAA may not start {model}'s {task}: {request}"


def test_mwaa_may_not_start_jobs_of_other_names_or_on_other_instances(template):
    mwaa = policies(_shipped_stack(template))["MwaaPolicy"]
    allowed = _job_request("intent", "train_model")
    foreign = Request(
        allowed.action, allowed.resource.replace("/intent-train-model-", "/mining-train-model-"), allowed.context
    )
    mislabelled = Request(
        allowed.action, allowed.resource.replace("-train-model-", "-evaluate-model-"), allowed.context
    )
    wrong = {
        "a job of no shipped model": foreign,
        "a training job named as a processing job": mislabelled,
        "a GPU instance": _job_request("intent", "train_model", **{"sagemaker:InstanceTypes": ["ml.p4d.24xlarge"]}),
        "one allowed and one other instance type": _job_request(
            "intent", "evaluate_model", **{"sagemaker:InstanceTypes": ["ml.m5.xlarge", "ml.g5.48xlarge"]}
        ),
        "no instance type in the request": Request(
            allowed.action,
            allowed.resource,
            {k: v for k, v in allowed.context.items() if k != "sagemaker:InstanceTypes"},
        ),
        "another region": _job_request("intent", "train_model", **{"aws:RequestedRegion": "ap-south-1"}),
    }
    for what, request in wrong.items():
        assert decide(mwaa, request) != ALLOW, f"MWAA may start {what}: {request}"
    glue = "arn:aws:glue:us-east-1:123456789012:job/"
    assert allows(
        mwaa,
        "glue:CreateJob",
        glue + "retrain-reranker-build-dataset-0123456789ab",
        {"aws:RequestedRegion": "us-east-1"},
    )
    assert not allows(mwaa, "glue:CreateJob", glue + "retrain-mining-build-dataset-0123456789ab")


def test_shipped_configs_fit_the_job_parameters(template):
    # The parameter defaults are the shipped configs' own model names and instance types, no more.
    stack = Stack(template, ACCOUNT, REGION, ALL_TRUE, VPC_PARAMETERS)
    configs = [load_model(model) for model in MODELS]
    assert sorted(stack.params["JobModelNames"]) == sorted(config.name.replace("_", "-") for config in configs)
    used = {c.aws.training.instance_type for c in configs} | {c.aws.processing.instance_type for c in configs}
    assert set(stack.params["AllowedInstanceTypes"]) == used


def test_no_role_in_the_stack_may_use_all_of_mlflow(stack):
    # No aws-backend task on the MWAA worker calls MLflow (the registry is SageMaker's); the jobs log runs.
    server = stack.getatt("MlflowTrackingServer", "TrackingServerArn")
    found = policies(stack)
    for action in (
        "sagemaker-mlflow:CreateRun",
        "sagemaker-mlflow:SetRegisteredModelAlias",
        "sagemaker-mlflow:AccessUI",
    ):
        assert not allows(found["MwaaPolicy"], action, server), f"MWAA may {action}"
    job = found["JobRolePolicy"]
    for action in (
        "GetExperimentByName",
        "CreateExperiment",
        "CreateRun",
        "SearchRuns",
        "UpdateRun",
        "LogBatch",
        "GetRun",
    ):
        assert allows(job, f"sagemaker-mlflow:{action}", server, {}), f"the jobs may not {action}"
    for action in ("DeleteExperiment", "DeleteRun", "CreateRegisteredModel", "DeleteModelVersion", "AccessUI"):
        assert not allows(job, f"sagemaker-mlflow:{action}", server), f"the jobs may {action}"
    other = server.rsplit("/", 1)[0] + "/someone-elses"
    assert not allows(job, "sagemaker-mlflow:CreateRun", other)


def test_job_network_interfaces_are_confined_to_the_job_subnets(stack):
    job = policies(stack)["JobRolePolicy"]
    interface = f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/eni-0123456789abcdef0"
    ours = {"ec2:Subnet": f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/{SUBNETS[0]}"}
    theirs = {"ec2:Subnet": f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/subnet-0ffffffffffffffff"}
    for action in ("ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:CreateNetworkInterfacePermission"):
        assert allows(job, action, interface, ours), f"the jobs may not {action} in their own subnet"
        assert not allows(job, action, interface, theirs), f"the jobs may {action} in any subnet"
        assert not allows(job, action, interface, {}), f"the jobs may {action} without naming a subnet"
    subnet = f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/"
    assert allows(job, "ec2:CreateNetworkInterface", subnet + SUBNETS[1], {})
    assert not allows(job, "ec2:CreateNetworkInterface", subnet + "subnet-0ffffffffffffffff", {})
    group = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/"
    assert allows(job, "ec2:CreateNetworkInterface", group + SECURITY_GROUPS[0], {})
    assert not allows(job, "ec2:CreateNetworkInterface", group + "sg-0ffffffffffffffff", {})


def test_ledger_entries_can_only_be_created_never_overwritten(stack):
    # The MWAA role's own policy and the artifact bucket's policy together, as S3 evaluates them (same account).
    statements = policies(stack)["MwaaPolicy"] + bucket_policy(stack, "ArtifactBucket")
    entry = _object_arn(stack, "ArtifactBucket", "ledger/intent/00000007.json")
    tls = {"aws:SecureTransport": "true"}
    assert decide(statements, Request("s3:PutObject", entry, {**tls, "s3:if-none-match": "*"})) == ALLOW
    assert decide(statements, Request("s3:PutObject", entry, tls)) == EXPLICIT_DENY  # a plain put could overwrite
    # Elsewhere a plain put stays allowed (runs/ scratch), and the Deny binds everyone, not just this role.
    assert (
        decide(statements, Request("s3:PutObject", _object_arn(stack, "ArtifactBucket", "runs/intent/r/x"), tls))
        == ALLOW
    )
    admin = Request("s3:PutObject", entry, tls, {"AWS": f"arn:aws:iam::{ACCOUNT}:role/Admin"})
    assert decide(bucket_policy(stack, "ArtifactBucket"), admin) == EXPLICIT_DENY


def test_isolation_deny_also_holds_when_the_request_omits_the_key(template):
    # RequireNetworkIsolation=true: a job request that does not say NetworkIsolation must be refused too.
    mwaa = policies(_shipped_stack(template, IsolationRequired=True))["MwaaPolicy"]
    isolated = _job_request("intent", "train_model", **{"sagemaker:NetworkIsolation": "true"})
    assert decide(mwaa, isolated) == ALLOW
    assert decide(mwaa, _job_request("intent", "train_model")) == EXPLICIT_DENY  # the config says false
    silent = {k: v for k, v in isolated.context.items() if k != "sagemaker:NetworkIsolation"}
    assert decide(mwaa, Request(isolated.action, isolated.resource, silent)) == EXPLICIT_DENY


def test_mwaa_policy_refuses_jobs_without_the_data_key(template):
    stack = Stack(template, ACCOUNT, REGION, ALL_TRUE)
    (deny,) = [s for s in policies(stack)["MwaaPolicy"] if s.get("Sid") == "DenyJobsWithoutDataKey"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {
        "StringNotEquals": {"sagemaker:VolumeKmsKey": stack.resolve(template["Outputs"]["KmsKeyArn"]["Value"])}
    }


# ---- the MWAA environment and its network ----------------------------------------------------------

INTERFACE_ENDPOINTS = {  # what the jobs and MWAA call inside the VPC (docs/aws.md, "Network")
    "sagemaker.api",
    "sagemaker.runtime",
    "sts",
    "logs",
    "ecr.api",
    "ecr.dkr",
    "sqs",
    "monitoring",
    "kms",
    "glue",
    "sns",
}


@pytest.fixture(scope="module")
def created(template) -> Stack:
    """The stack with every default: it creates the VPC, the NAT gateway and the MWAA environment."""
    return Stack(template, ACCOUNT, REGION, {"CreateKmsKey": True, "HasMwaaRole": False, "IsolationRequired": False})


def test_defaults_create_the_vpc_nat_and_environment(created):
    assert created.condition("CreateVpc") and created.condition("CreateNat") and created.condition("CreateEnvironment")
    given = Stack(
        created.t, ACCOUNT, REGION, {}, {**VPC_PARAMETERS, "CreateEnvironment": "false", "NatGateway": "true"}
    )
    assert not given.condition("CreateVpc") and not given.condition("CreateNat")
    assert not given.condition("CreateEnvironment")


def test_mwaa_source_bucket_is_versioned_private_and_tls_only(template, created):
    props = template["Resources"]["MwaaSourceBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}  # deploy push pins object versions
    assert created.resolve(props["BucketName"]).startswith("airflow-")  # MWAA's rule for a source bucket
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    _assert_tls_only(created, "MwaaSourceBucket")


def test_mwaa_environment_runs_the_bundles_airflow_in_the_private_subnets(template, created):
    from retrain_tools.deploy.bundle import AIRFLOW_CONFIGURATION_OPTIONS

    env = created.resolve(template["Resources"]["MwaaEnvironment"]["Properties"])
    assert env["AirflowVersion"] == "3.3.1"
    assert env["AirflowConfigurationOptions"] == AIRFLOW_CONFIGURATION_OPTIONS
    assert env["Name"] == "retrain" and env["DagS3Path"] == "dags"
    assert env["SourceBucketArn"] == created.getatt("MwaaSourceBucket", "Arn")
    assert env["ExecutionRoleArn"] == created.getatt("MwaaExecutionRole", "Arn")
    assert env["NetworkConfiguration"]["SubnetIds"] == [created.ref("PrivateSubnetA"), created.ref("PrivateSubnetB")]
    assert env["WebserverAccessMode"] == "PRIVATE_ONLY"
    # The tasks' permissions are the MWAA policy, attached to the role the stack creates.
    assert created.resolve(template["Resources"]["MwaaPolicy"]["Properties"]["Roles"]) == ["retrain-mwaa-execution"]


def test_mwaa_execution_role_grants_what_mwaa_documents_and_no_more(created):
    role = policies(created)["MwaaExecutionRole/mwaa-environment"]
    ours, theirs = ACCOUNT, "999999999999"  # MWAA's Celery queues live in a service account
    region = {"aws:RequestedRegion": REGION}
    source = created.getatt("MwaaSourceBucket", "Arn")
    assert allows(role, "s3:GetObject", f"{source}/dags/retrain_intent.py", region)
    assert not allows(role, "s3:GetObject", _object_arn(created, "ArtifactBucket", "ledger/intent/1.json"))
    assert not allows(role, "s3:PutObject", f"{source}/dags/x.py")
    logs = f"arn:aws:logs:{REGION}:{ours}:log-group:"
    assert allows(role, "logs:PutLogEvents", logs + "airflow-retrain-Task:log-stream:x", {})
    assert not allows(role, "logs:PutLogEvents", logs + "airflow-other-Task:log-stream:x")
    assert allows(role, "sqs:SendMessage", f"arn:aws:sqs:{REGION}:{theirs}:airflow-celery-abc", {})
    assert not allows(role, "sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ours}:some-queue")
    assert not allows(role, "sqs:DeleteQueue", f"arn:aws:sqs:{REGION}:{theirs}:airflow-celery-abc")
    via_sqs = {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}
    assert allows(role, "kms:Decrypt", f"arn:aws:kms:{REGION}:{theirs}:key/k", via_sqs)
    assert not allows(role, "kms:Decrypt", f"arn:aws:kms:{REGION}:{theirs}:key/k", {})  # not through SQS
    assert not allows(role, "kms:Decrypt", f"arn:aws:kms:{REGION}:{ours}:key/k", via_sqs)  # NotResource: not ours
    trust = _trust(created, "MwaaExecutionRole")
    env_arn = f"arn:aws:airflow:{REGION}:{ours}:environment/retrain"
    assert decide(trust, _assume("airflow-env", {"aws:SourceAccount": ours, "aws:SourceArn": env_arn})) == ALLOW
    assert decide(trust, _assume("airflow-env", {"aws:SourceAccount": theirs})) == IMPLICIT_DENY
    assert (
        decide(trust, _assume("airflow", {"aws:SourceAccount": ours, "aws:SourceArn": env_arn + "-x"})) == IMPLICIT_DENY
    )


def test_created_vpc_is_private_with_endpoints_and_one_nat_route(template, created):
    resources = template["Resources"]
    for subnet in ("PrivateSubnetA", "PrivateSubnetB"):
        assert resources[subnet]["Properties"]["MapPublicIpOnLaunch"] is False
    endpoints = {
        created.resolve(r["Properties"]["ServiceName"]).removeprefix(f"com.amazonaws.{REGION}."): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    assert endpoints.keys() == INTERFACE_ENDPOINTS | {"s3"}
    assert endpoints["s3"]["VpcEndpointType"] == "Gateway"
    assert endpoints["s3"]["RouteTableIds"] == [{"Ref": "PrivateRouteTable"}]
    for service in INTERFACE_ENDPOINTS:
        assert endpoints[service]["PrivateDnsEnabled"] is True, service
        assert created.resolve(endpoints[service]["SubnetIds"]) == [
            created.ref("PrivateSubnetA"),
            created.ref("PrivateSubnetB"),
        ]
    routes = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::Route"]
    private = [r for r in routes if r["RouteTableId"] == {"Ref": "PrivateRouteTable"}]
    assert private == [
        {
            "RouteTableId": {"Ref": "PrivateRouteTable"},
            "DestinationCidrBlock": "0.0.0.0/0",
            "NatGatewayId": {"Ref": "Nat"},
        }
    ]
    # The NAT gateway, the internet gateway and their routes exist only with NatGateway=true.
    nat_only = {
        "InternetGateway",
        "InternetGatewayAttachment",
        "PublicSubnet",
        "NatAddress",
        "Nat",
        "PrivateDefaultRoute",
    }
    assert {n for n, r in resources.items() if r.get("Condition") == "CreateNat"} >= nat_only
    no_nat = Stack(template, ACCOUNT, REGION, {}, {"NatGateway": "false"})
    assert no_nat.condition("CreateVpc") and not no_nat.condition("CreateNat")


def test_job_interfaces_in_a_created_vpc_are_confined_to_its_subnets(created):
    job = policies(created)["JobRolePolicy"]
    interface = f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/eni-0123456789abcdef0"
    subnet = f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/"
    assert allows(job, "ec2:CreateNetworkInterface", interface, {"ec2:Subnet": subnet + created.ref("PrivateSubnetB")})
    assert not allows(job, "ec2:CreateNetworkInterface", interface, {"ec2:Subnet": subnet + "subnet-0ffffffffffffffff"})
    assert allows(job, "ec2:CreateNetworkInterface", subnet + created.ref("PrivateSubnetA"), {})
    assert not allows(job, "ec2:CreateNetworkInterface", subnet + "subnet-0ffffffffffffffff")


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
    # Outputs that feed no config field must say so here: the policy to attach by hand, and what
    # `bin/retrain deploy push` and people need (retrain_tools.deploy.stack prints them).
    assert set(template["Outputs"]) - set(targets) == {
        "MwaaPolicyArn",
        "VpcId",
        "MwaaEnvironmentName",
        "MwaaSourceBucketName",
        "MwaaWebserverUrl",
    }


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
    stack = Stack(template, account, config.region, {"CreateKmsKey": True}, VPC_PARAMETERS)
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
