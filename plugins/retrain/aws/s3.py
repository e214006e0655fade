"""S3 write-once puts: immutable objects (ledger entries, golden files, gate.json) are never overwritten."""

from __future__ import annotations

from typing import Any

from retrain.aws.locations import layout
from retrain.config import AwsConfig


def put_object_request(aws: AwsConfig, key: str, body: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    """``PutObject`` with ``IfNoneMatch="*"``: S3 answers 412 instead of overwriting, and KMS when configured."""
    bucket, object_key = layout(aws).locate(key)
    request: dict[str, Any] = {"Bucket": bucket, "Key": object_key, "Body": body, "ContentType": content_type, "IfNoneMatch": "*"}
    if aws.kms_key_arn:
        request.update({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": aws.kms_key_arn})
    return request
