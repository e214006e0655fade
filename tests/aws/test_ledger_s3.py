"""The ledger on S3 (moto, an AWS simulator): one write-once object per entry, the same hash chain."""

from __future__ import annotations

import json

import pytest

from ledger_expectations import assert_filled_chain, fill  # tests/ is on pytest's pythonpath
from retrain import ledger
from retrain.ledger import LedgerError
from retrain.store import S3Store

pytestmark = pytest.mark.aws


@pytest.fixture
def filled(s3_store):
    return fill(s3_store)


def object_key(seq: int) -> str:
    return f"ledger/intent/{seq:08d}.json"


def stored(store: S3Store, seq: int) -> dict:
    return json.loads(store.client.get_object(Bucket=store.layout.artifact_bucket, Key=object_key(seq))["Body"].read())


def overwrite(store: S3Store, seq: int, entry: dict) -> None:
    """What someone with PutObject on the bucket can do behind the ledger's back."""
    store.client.put_object(
        Bucket=store.layout.artifact_bucket, Key=object_key(seq), Body=json.dumps(entry, sort_keys=True).encode()
    )


def test_chain_is_one_object_per_entry_and_verifies(filled):
    listed = filled.client.list_objects_v2(Bucket=filled.layout.artifact_bucket, Prefix="ledger/")
    assert [item["Key"] for item in listed["Contents"]] == [object_key(seq) for seq in (1, 2, 3, 4)]
    assert_filled_chain(filled)
    assert ledger.ledger_location(filled, "intent") == f"s3://{filled.layout.artifact_bucket}/ledger/intent"


def test_edit_is_detected(filled):
    overwrite(filled, 2, {**stored(filled, 2), "actor": "mallory"})
    with pytest.raises(LedgerError, match=r"/00000002\.json: hash does not match the entry's content"):
        ledger.verify(filled, "intent")


def test_edit_with_recomputed_hash_is_still_detected(filled):
    forged = {**stored(filled, 2), "reason": "forged"}
    forged["hash"] = ledger.entry_hash(forged)
    overwrite(filled, 2, forged)
    with pytest.raises(LedgerError, match=r"/00000003\.json: prev_hash does not match 00000002\.json's hash"):
        ledger.verify(filled, "intent")


def test_deletion_is_detected(filled):
    filled.client.delete_object(Bucket=filled.layout.artifact_bucket, Key=object_key(2))
    with pytest.raises(LedgerError, match=r"/00000003\.json: seq is 3, expected 2"):
        ledger.verify(filled, "intent")


def test_insertion_is_detected(filled):
    entries = [stored(filled, seq) for seq in (1, 2, 3, 4)]
    forged = dict(entries[0], seq=2, to_version=9)
    forged["hash"] = ledger.entry_hash(forged)
    for seq, entry in enumerate(entries[:1] + [forged] + entries[1:], start=1):  # shift everything after it up one
        overwrite(filled, seq, entry)
    with pytest.raises(LedgerError, match=r"/00000002\.json: prev_hash does not match 00000001\.json's hash"):
        ledger.verify(filled, "intent")


def test_reordering_is_detected(filled):
    second, third = stored(filled, 2), stored(filled, 3)
    overwrite(filled, 2, third)
    overwrite(filled, 3, second)
    with pytest.raises(LedgerError, match=r"/00000002\.json: seq is 3, expected 2"):
        ledger.verify(filled, "intent")


def test_an_entry_moved_to_another_name_is_detected(filled):
    last = stored(filled, 4)
    filled.client.delete_object(Bucket=filled.layout.artifact_bucket, Key=object_key(4))
    overwrite(filled, 5, last)
    with pytest.raises(LedgerError, match=r"/00000005\.json: named as entry 5 but holds entry 4"):
        ledger.verify(filled, "intent")


def test_a_stray_object_in_the_ledger_is_refused(filled):
    filled.client.put_object(Bucket=filled.layout.artifact_bucket, Key="ledger/intent/notes.txt", Body=b"hi")
    with pytest.raises(LedgerError, match=r"/ledger/intent/notes\.txt: not a ledger entry name"):
        ledger.verify(filled, "intent")


def test_appending_to_a_tampered_ledger_is_refused_and_writes_nothing(filled):
    overwrite(filled, 1, {**stored(filled, 1), "actor": "mallory"})
    with pytest.raises(LedgerError, match="hash does not match"):
        ledger.append(filled, "intent", action="promote", to_version=5, actor="alice", reason="x", model_dir="/m5")
    listed = filled.client.list_objects_v2(Bucket=filled.layout.artifact_bucket, Prefix="ledger/")
    assert len(listed["Contents"]) == 4


class RacingStore(S3Store):
    """An S3Store where a rival append lands between this append's verify and its write.

    That is the race two schedulers promoting at once can hit: both verify the same head
    and both compute seq N. Nothing here is mocked; the rival is a real append through a
    second store, and the refusal is the simulator's real 412.
    """

    rival: S3Store

    def write_once_bytes(self, key: str, data: bytes) -> str:
        if key.startswith("ledger/") and not getattr(self, "raced", False):
            self.raced = True
            ledger.append(
                self.rival,
                "intent",
                action="rollback",
                to_version=1,
                actor="bob",
                reason="rival got there first",
                model_dir="/m1",
            )
        return super().write_once_bytes(key, data)


def test_two_appends_of_the_same_seq_cannot_both_win(filled, simulator_s3):
    racing = RacingStore(
        filled.layout.dataset_bucket, filled.layout.artifact_bucket, filled.layout.golden_bucket, client=simulator_s3
    )
    racing.rival = filled
    with pytest.raises(
        LedgerError,
        match=r"/00000005\.json: another append created entry 5 first; this one was not written .*PreconditionFailed",
    ):
        ledger.append(
            racing, "intent", action="promote", to_version=7, actor="alice", reason="v7 better", model_dir="/m7"
        )
    entries = ledger.verify(filled, "intent")  # the winner's entry stands, chained and unmodified
    assert len(entries) == 5 and (entries[-1]["actor"], entries[-1]["to_version"]) == ("bob", 1)
    after = ledger.append(
        filled,
        "intent",
        action="promote",
        to_version=7,
        actor="alice",
        reason="v7 better, decided again",
        model_dir="/m7",
    )
    assert after["seq"] == 6 and after["from_version"] == 1 and after["prev_hash"] == entries[-1]["hash"]
