"""S3 write-once puts: immutable objects (ledger entries, golden files, gate.json) are never overwritten."""

from __future__ import annotations

from typing import Any

from retrain.aws.locations import s3_uri
from retrain.config import AwsConfig


def put_object_request(aws: AwsConfig, key: str, body: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    """``PutObject`` with ``IfNoneMatch="*"``: S3 answers 412 instead of overwriting, and KMS when configured."""
    bucket = s3_uri(aws, key).removeprefix("s3://").split("/", 1)[0]
    request: dict[str, Any] = {"Bucket": bucket, "Key": key.strip("/"), "Body": body, "ContentType": content_type, "IfNoneMatch": "*"}
    if aws.kms_key_arn:
        request.update({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": aws.kms_key_arn})
    return request
