"""Check a request against the AWS API's own schema: botocore's service model.

``ParamValidator`` checks types, required and unknown keys and ``min``, but not ``max``,
``pattern`` or ``enum``: a 70-character job name and ``ml.m5.huge`` both pass it. The walk
here checks those three on every member. AWS matches patterns against the whole value, so
this does too; Java-only patterns (``\\p{L}``, surrogate ranges) that Python's ``re`` cannot
compile are skipped and reported. botocore is imported lazily: this runs in tasks and
tests, never while a DAG file is parsed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any


class RequestInvalid(ValueError):
    """A request breaks the service model; the message lists every problem with its path."""


@dataclass(frozen=True)
class Checked:
    """A request that passed; ``skipped_patterns`` are the (path, pattern) pairs ``re`` cannot compile."""

    service: str
    operation: str
    skipped_patterns: tuple[tuple[str, str], ...]


@functools.cache
def _input_shape(service: str, operation: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


@functools.cache
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _too_many(meta: dict, size: int, path: str, what: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{path}: {what}")


def _walk_structure(shape, value, path, problems, skipped) -> None:
    for name, member in shape.members.items():
        if name in value:
            _walk(member, value[name], _join(path, name), problems, skipped)


def _walk_list(shape, value, path, problems, skipped) -> None:
    _too_many(shape.metadata, len(value), path, f"{len(value)} items > max {shape.metadata.get('max')}", problems)
    for index, item in enumerate(value):
        _walk(shape.member, item, f"{path}[{index}]", problems, skipped)


def _walk_map(shape, value, path, problems, skipped) -> None:
    _too_many(shape.metadata, len(value), path, f"{len(value)} entries > max {shape.metadata.get('max')}", problems)
    for key, item in value.items():
        _walk(shape.key, key, f"{path} key {key!r}", problems, skipped)
        _walk(shape.value, item, _join(path, str(key)), problems, skipped)


def _walk_string(shape, value, path, problems, skipped) -> None:
    meta = shape.metadata
    _too_many(meta, len(value), path, f"length {len(value)} > max {meta.get('max')}", problems)
    if shape.enum and value not in shape.enum:
        problems.append(f"{path}: {value!r} is not in the enum of {len(shape.enum)} allowed values")
    if "pattern" in meta:
        compiled = _compiled(meta["pattern"])
        if compiled is None:
            skipped.append((path, meta["pattern"]))
        elif not compiled.fullmatch(value):
            problems.append(f"{path}: {value!r} does not match pattern {meta['pattern']}")


def _walk_number(shape, value, path, problems, skipped) -> None:
    if "max" in shape.metadata and value > shape.metadata["max"]:
        problems.append(f"{path}: value {value} > max {shape.metadata['max']}")


def _walk_blob(shape, value, path, problems, skipped) -> None:
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


def _walk(shape, value: Any, path: str, problems: list[str], skipped: list[tuple[str, str]]) -> None:
    # Wrong types are ParamValidator's to report; the walk only looks inside what it can read.
    readable, walk = _WALKERS.get(shape.type_name, (lambda v: False, None))
    if readable(value):
        walk(shape, value, path, problems, skipped)


def strict_problems(service: str, operation: str, request: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """The walk alone: (problems, (path, pattern) pairs it skipped)."""
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    _walk(_input_shape(service, operation), request, "", problems, skipped)
    return problems, skipped


def param_validator_problems(service: str, operation: str, request: dict[str, Any]) -> list[str]:
    """botocore's own ParamValidator, one line per problem."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(request, _input_shape(service, operation))
    if not report.has_errors():
        return []
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()]


def validate_request(service: str, operation: str, request: dict[str, Any]) -> Checked:
    """ParamValidator plus the max/pattern/enum walk; raises RequestInvalid listing every problem."""
    problems, skipped = strict_problems(service, operation, request)
    problems = param_validator_problems(service, operation, request) + problems
    if problems:
        raise RequestInvalid(
            f"{service} {operation}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)
        )
    return Checked(service, operation, tuple(skipped))
