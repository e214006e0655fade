"""Seeding lands a model's sample data from its config by one placement rule, and never changes what exists."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest

from retrain.config import config_paths, load_model
from retrain.store import WriteOnceError, verify_tree
from retrain_tools.seed import SeedError, seed
from retrain_tools.seed import main as seed_main

NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # a Monday: the latest complete week is 11-16..11-23


def files(store) -> dict:
    return {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}


def test_partitions_end_with_the_latest_complete_interval(store):
    result = seed(store, load_model("intent"), partitions=3, now=NOW)
    assert [start.date().isoformat() for start, _ in result["intervals"]] == ["2026-11-02", "2026-11-09", "2026-11-16"]
    assert sorted(p.name for p in store.path("raw/intent").iterdir()) == [
        "dt=2026-11-02",
        "dt=2026-11-09",
        "dt=2026-11-16",
    ]
    assert verify_tree(store.path("golden/intent/v1"))["rows"] == 3080


def test_reseeding_is_a_no_op_and_keeps_its_placement_as_time_moves_on(store):
    config = load_model("intent")
    seed(store, config, partitions=3, now=NOW)
    before = files(store)
    again = seed(store, config, partitions=3, now=NOW)  # what `make seed` then `make demo` do on one day
    later = seed(store, config, partitions=3, now=datetime(2027, 1, 4, tzinfo=UTC))  # weeks later
    assert again["raw_written"] == later["raw_written"] == [] and not later["golden_written"]
    assert later["intervals"] == again["intervals"]
    assert files(store) == before


def test_full_golden_hash_is_printed_with_the_pin_state(store, monkeypatch, capsys):
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    assert seed_main(["--model", "intent", "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    golden = verify_tree(store.path("golden/intent/v1"))
    assert f"golden content sha256 {golden['content_sha256']} (pinned in the config)" in out


def test_a_different_partition_is_refused_by_name_and_nothing_is_written(store):
    config = load_model("intent")
    seed(store, config, partitions=2, now=NOW)
    part = store.path("raw/intent/dt=2026-11-09/part-00000.csv")
    part.write_text("text,category\nedited,card_arrival\n")
    before = files(store)
    with pytest.raises(
        WriteOnceError, match=r"dt=2026-11-09/part-00000\.csv: exists with different content.*Nothing was written"
    ):
        seed(store, config, partitions=3, end=datetime(2026, 11, 23, tzinfo=UTC), now=NOW)  # would add dt=11-02
    assert files(store) == before and not store.exists("raw/intent/dt=2026-11-02")


def test_a_different_golden_version_is_refused(store, tmp_path):
    config = load_model("intent")
    seed(store, config, partitions=1, now=NOW)
    other = config.model_copy(
        update={"sample_data": config.sample_data.model_copy(update={"golden": str(tmp_path / "g.csv")})}
    )
    (tmp_path / "g.csv").write_text("text,category\nwhere is my card,card_arrival\n")
    with pytest.raises(WriteOnceError, match=r"golden/intent/v1: golden v1 exists with different content"):
        seed(store, other, partitions=1, now=NOW)


def test_a_byte_order_mark_in_the_sample_is_ignored(store, tmp_path):
    config = load_model("intent")
    raw = tmp_path / "raw.csv"
    raw.write_bytes(b"\xef\xbb\xbftext,category\nwhere is my card,card_arrival\n")
    sample = config.sample_data.model_copy(update={"raw": str(raw)})
    seed(store, config.model_copy(update={"sample_data": sample}), partitions=1, now=NOW)
    assert (
        store.path("raw/intent/dt=2026-11-16/part-00000.csv").read_text()
        == "text,category\nwhere is my card,card_arrival\n"
    )


def test_a_model_without_sample_data_or_a_bad_end_is_refused(store, monkeypatch, capsys):
    config = load_model("intent")
    with pytest.raises(SeedError, match=r"intent\.yaml: no field 'sample_data'"):
        seed(store, config.model_copy(update={"sample_data": None}))
    monkeypatch.setenv("RETRAIN_HOME", str(store.root))
    with pytest.raises(SystemExit):
        seed_main(["--model", "intent", "--end", "2026-11-24"])
    assert "not a weekly interval boundary" in capsys.readouterr().err
    assert not store.root.exists() or not any(store.root.rglob("*.csv"))


def test_a_retrieval_golden_set_is_published_as_its_three_files(tmp_path):
    """embedding_adapter's golden version: queries, corpus and qrels byte for byte, counted in queries."""
    from retrain.paths import PROJECT_ROOT
    from retrain.tasks import task_module

    source = PROJECT_ROOT / "data" / "retrieval" / "golden.jsonl"
    files, count = task_module("gate", "embedding_adapter").golden_files(None, source)
    assert sorted(files) == ["corpus.jsonl", "golden.jsonl", "qrels.jsonl"]
    assert files["golden.jsonl"] == source.read_bytes() and count == 770


@pytest.mark.parametrize(
    ("qrels_line", "rule"),
    [
        ('{"query_id": "q_nobody", "passage_id": "p_a", "relevance": 1}', "query_id 'q_nobody' is not a query in"),
        ('{"query_id": "q_1", "passage_id": "p_nowhere", "relevance": 1}', "passage_id 'p_nowhere' is not in"),
    ],
)
def test_a_qrels_row_naming_an_unknown_query_or_passage_is_refused_with_file_line_and_rule(tmp_path, qrels_line, rule):
    from retrain.tasks import task_module
    from retrain_tools.seed import SeedError

    (tmp_path / "golden.jsonl").write_text('{"key": "q_1", "text": "where is my card"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"passage_id": "p_a", "text": "Card arrival."}\n')
    (tmp_path / "qrels.jsonl").write_text(
        '{"query_id": "q_1", "passage_id": "p_a", "relevance": 1}\n' + qrels_line + "\n"
    )
    with pytest.raises(SeedError) as info:
        task_module("gate", "embedding_adapter").golden_files(None, tmp_path / "golden.jsonl")
    message = str(info.value)
    assert f"{tmp_path / 'qrels.jsonl'}: line 2" in message and rule in message and "rule: qrels name known" in message


@pytest.mark.parametrize("name", [path.stem for path in config_paths()])
def test_every_shipped_model_seeds_a_three_interval_backfill_and_its_pinned_golden(tmp_path, name):
    """`bin/retrain seed <model>` as shipped: raw partitions over at least three consecutive intervals of the
    model's own cadence, each with enough rows to pass validation, and golden v1 with the config's pinned hash."""
    from retrain.intervals import shift
    from retrain.store import LocalStore

    config = load_model(name)
    store = LocalStore(tmp_path / "store")
    result = seed(store, config, now=NOW)
    starts = [start for start, _ in result["intervals"]]
    assert len(starts) >= 3 and all(shift(config.schedule.calendar, a, 1) == b for a, b in pairwise(starts))
    assert result["intervals"][-1][1] <= NOW
    for start, _ in result["intervals"][-3:]:
        part = store.path(f"raw/{name}/dt={start.date()}")
        rows = sum(len(p.read_text(encoding="utf-8-sig").strip().splitlines()) - 1 for p in part.glob("*.csv"))
        assert rows >= config.data.min_rows, (name, start, rows)
    assert result["golden"]["content_sha256"] == config.data.golden_sha256
