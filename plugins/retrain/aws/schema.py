"""Check a request against the AWS API's own schema: botocore's service model.

``ParamValidator`` checks types, required and unknown keys and ``min``, but not ``max``,
``pattern`` or ``enum``: a 70-character job name and ``ml.m5.huge`` both pass it. The walk
here checks those three on every member. AWS matches patterns against the whole value, so
this does too. The patterns are Java's: Unicode properties (``\\p{L}``, ``\\p{Alnum}``), which the
``regex`` engine supports and ``re`` does not, and supplementary characters written as UTF-16
surrogate ranges (``\\uD800\\uDC00-\\uDBFF\\uDFFF``), which ``java_pattern`` rewrites as the code
point range they mean. Every pattern is checked; one that cannot be compiled is an error of this
module, never a pass. botocore and regex are imported lazily: this runs in tasks and tests, never
while a DAG file is parsed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


class RequestInvalid(ValueError):
    """A request breaks the service model; the message lists every problem with its path."""


@dataclass(frozen=True)
class Checked:
    """A request that passed every check."""

    service: str
    operation: str


@functools.cache
def _input_shape(service: str, operation: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


# A supplementary character in Java's UTF-16 patterns: a high-surrogate range followed by a low-surrogate one.
_SURROGATE_RANGE = "\\uD800\\uDC00-\\uDBFF\\uDFFF"


def java_pattern(pattern: str) -> str:
    """A service model's (Java) pattern as the ``regex`` engine reads it over Python's code points."""
    return pattern.replace(_SURROGATE_RANGE, "\\U00010000-\\U0010FFFF")


@functools.cache
def _compiled(pattern: str):
    import regex

    try:
        return regex.compile(java_pattern(pattern))
    except regex.error as exc:
        raise RuntimeError(f"retrain.aws.schema cannot compile the service model's pattern {pattern!r}: {exc}") from exc


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _too_many(meta: dict, size: int, path: str, what: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{path}: {what}")


def _walk_structure(shape, value, path, problems) -> None:
    for name, member in shape.members.items():
        if name in value:
            _walk(member, value[name], _join(path, name), problems)


def _walk_list(shape, value, path, problems) -> None:
    _too_many(shape.metadata, len(value), path, f"{len(value)} items > max {shape.metadata.get('max')}", problems)
    for index, item in enumerate(value):
        _walk(shape.member, item, f"{path}[{index}]", problems)


def _walk_map(shape, value, path, problems) -> None:
    _too_many(shape.metadata, len(value), path, f"{len(value)} entries > max {shape.metadata.get('max')}", problems)
    for key, item in value.items():
        _walk(shape.key, key, f"{path} key {key!r}", problems)
        _walk(shape.value, item, _join(path, str(key)), problems)


def _walk_string(shape, value, path, problems) -> None:
    meta = shape.metadata
    _too_many(meta, len(value), path, f"length {len(value)} > max {meta.get('max')}", problems)
    if shape.enum and value not in shape.enum:
        problems.append(f"{path}: {value!r} is not in the enum of {len(shape.enum)} allowed values")
    if "pattern" in meta and not _compiled(meta["pattern"]).fullmatch(value):
        problems.append(f"{path}: {value!r} does not match pattern {meta['pattern']}")


def _walk_number(shape, value, path, problems) -> None:
    if "max" in shape.metadata and value > shape.metadata["max"]:
        problems.append(f"{path}: value {value} > max {shape.metadata['max']}")


def _walk_blob(shape, value, path, problems) -> None:
    _too_many(shape.metadata, len(value), path, f"length {len(value)} > max {shape.metadata.get('max')}", problems)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_WALKERS = {
    "structure": (lambda v: isinstance(v, dict), _walk_structure),
    "list": (lambda v: isinstance(v, (list, tuple)), _walk_list),
    "map": (lambda v: isinstance(v, dict), _walk_map),
    "string": (lambda v: isinstance(v, str), _walk_string),
    **{kind: (_is_number, _walk_number) for kind in ("integer", "long", "float", "double")},
    "blob": (lambda v: isinstance(v, (bytes, str)), _walk_blob),
}
"""Shape type -> (what a readable value of it is, how to check inside it)."""


def _walk(shape, value: Any, path: str, problems: list[str]) -> None:
    # Wrong types are ParamValidator's to report; the walk only looks inside what it can read.
    readable, walk = _WALKERS.get(shape.type_name, (lambda v: False, None))
    if readable(value):
        walk(shape, value, path, problems)


def strict_problems(service: str, operation: str, request: dict[str, Any]) -> list[str]:
    """The walk alone: its problems."""
    problems: list[str] = []
    _walk(_input_shape(service, operation), request, "", problems)
    return problems


def param_validator_problems(service: str, operation: str, request: dict[str, Any]) -> list[str]:
    """botocore's own ParamValidator, one line per problem."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(request, _input_shape(service, operation))
    if not report.has_errors():
        return []
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()]


def validate_request(service: str, operation: str, request: dict[str, Any]) -> Checked:
    """ParamValidator plus the max/pattern/enum walk; raises RequestInvalid listing every problem."""
    problems = param_validator_problems(service, operation, request) + strict_problems(service, operation, request)
    if problems:
        raise RequestInvalid(
            f"{service} {operation}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)
        )
    return Checked(service, operation)
