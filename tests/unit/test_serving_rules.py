"""retrain.serving's plain rules: endpoint specs, the histogram quantile, observation windows and their verdicts, and
the ledger's deployment-stage entries (which never move the champion)."""

from __future__ import annotations

import pytest

from retrain import ledger, serving
from retrain.serving import EndpointSpec, ServingError, WindowFigures, judge, quantile, window
from retrain.store import LocalStore

SHADOW = {"min_requests": 50, "max_minutes": 60, "min_agreement": 0.8, "max_error_rate": 0.05, "p99_ms_max": 200}
CANARY = {"percent": 5, "min_requests": 100, "window_minutes": 60, "max_error_rate": 0.05, "p99_ms_max": 200}


def figures(requests=100, errors=0, p99=50.0, agreement=0.95, compared=None) -> WindowFigures:
    compared = requests - errors if compared is None else compared
    return WindowFigures(1, requests, errors, p99, p99 / 2, compared, agreement, errors)


def test_specs_refuse_what_cannot_be_served():
    assert EndpointSpec("intent", primary=2, canary=3, canary_weight=0.05).versions() == {"primary": 2, "canary": 3}
    for kwargs, words in (
        ({"primary": 0}, "registry version"),
        ({"primary": True}, "registry version"),
        ({"primary": 1, "canary": 1, "canary_weight": 0.1}, "is the primary"),
        ({"primary": 1, "canary_weight": 0.1}, "no canary"),
        ({"primary": 1, "canary": 2, "canary_weight": -0.1}, "within [0, 1]"),
        ({"primary": 1, "shadow": 1}, "is the primary"),
    ):
        with pytest.raises(ServingError, match=words.replace("[", r"\[").replace("]", r"\]")):
            EndpointSpec("intent", **kwargs)
    spec = EndpointSpec("intent", primary=1, shadow=2, faults={"shadow": serving.Faults(error_rate=1.0)})
    assert EndpointSpec.from_json("intent", spec.to_json()) == spec
    with pytest.raises(ServingError, match="sent for 'intent'"):
        EndpointSpec.from_json("intent", {"model": "sentiment", "primary": 1})


def test_quantile_interpolates_within_its_bucket_like_prometheus():
    buckets = [(0.01, 0), (0.02, 50), (0.04, 100), (float("inf"), 100)]
    assert quantile(buckets, 0.5) == pytest.approx(0.02)
    assert quantile(buckets, 0.99) == pytest.approx(0.02 + 0.02 * 49 / 50)
    assert quantile([(0.01, 0), (float("inf"), 0)], 0.99) is None
    assert quantile([(0.01, 0), (float("inf"), 5)], 0.99) == 0.01  # above the last bound: that bound, a floor


def test_a_window_is_the_difference_of_two_snapshots_and_a_restart_resets_it():
    def snap(started, requests, errors, counts):
        bounds = [0.01, 0.02, "+Inf"]
        return {
            "started": started,
            "slots": [
                {
                    "variant": "canary",
                    "version": 3,
                    "requests": requests,
                    "errors": errors,
                    "buckets": [[b, c] for b, c in zip(bounds, counts, strict=True)],
                    "compared": 0,
                    "agreed": 0.0,
                    "shadow_errors": 0,
                }
            ],
        }

    before, after = snap(1.0, 10, 1, [10, 10, 10]), snap(1.0, 30, 3, [10, 30, 30])
    got = window(before, after, "canary", 3)
    assert (got.requests, got.errors, got.error_rate) == (20, 2, 0.1)
    assert 10 < got.p99_ms <= 20  # every new request fell in (10 ms, 20 ms]
    assert window(before, snap(2.0, 5, 0, [5, 5, 5]), "canary", 3).requests == 5  # restarted: counted from zero
    assert window(before, after, "canary", 4).requests == 0  # another version's counters are not this one's


def test_a_shadow_passes_once_enough_copies_agree_and_rolls_back_on_any_breach():
    assert judge("shadow", figures(), SHADOW, 10)[0] == "pass"
    assert judge("shadow", figures(requests=10), SHADOW, 10) == ("continue", [])
    state, reasons = judge("shadow", figures(agreement=0.5), SHADOW, 10)
    assert state == "rollback" and "agreement with the champion 0.500 < 0.8" in reasons[0]
    state, reasons = judge("shadow", figures(errors=10), SHADOW, 10)
    assert state == "rollback" and "error rate 10.0% > 5.0% (10 of 100 requests)" in reasons
    state, reasons = judge("shadow", figures(p99=250.0), SHADOW, 10)
    assert state == "rollback" and reasons == ["p99 latency 250.0 ms > 200 ms"]
    state, reasons = judge("shadow", figures(requests=10), SHADOW, 3601)
    assert state == "inconclusive" and "only 10 of the 50 requests" in reasons[0]


def test_a_canary_runs_its_window_rolls_back_early_on_a_breach_and_is_inconclusive_without_traffic():
    assert judge("canary", figures(requests=500), CANARY, 100) == ("continue", [])
    assert judge("canary", figures(requests=500), CANARY, 3600)[0] == "pass"
    assert judge("canary", figures(requests=500, errors=30), CANARY, 100)[0] == "rollback"  # 6% > 5%, early
    assert judge("canary", figures(requests=500, errors=25), CANARY, 3600)[0] == "pass"  # 5% is not above 5%
    assert judge("canary", figures(requests=500, p99=201.0), CANARY, 100)[0] == "rollback"
    # Too few requests to judge a breach: no early rollback on 3 of 5, and inconclusive at the end.
    assert judge("canary", figures(requests=5, errors=3), CANARY, 100) == ("continue", [])
    state, reasons = judge("canary", figures(requests=5, errors=3), CANARY, 3600)
    assert state == "inconclusive" and "too few to judge" in reasons[0]
    assert judge("canary", figures(p99=10_000.0), {**CANARY, "p99_ms_max": None}, 3600)[0] == "pass"


def test_deployment_stages_are_ledger_entries_that_leave_the_champion_where_it_was(tmp_path):
    store = LocalStore(tmp_path)

    def add(action, version, figures=None):
        return ledger.append(
            store, "intent", action=action, to_version=version, actor="alice", reason="r", model_dir="/m",
            figures=figures,
        )  # fmt: skip

    add("promote", 1)
    add("promote", 2)
    shadow = add("shadow", 3)
    add("auto_rollback", 3, {"error_rate": 0.5, "state": "rollback"})
    entries = ledger.verify(store, "intent")
    assert shadow["from_version"] == 2 and entries[-1]["figures"]["error_rate"] == 0.5
    assert ledger.serving_champion(entries) == 2 and ledger.previous_champion(entries) == 1
    assert ledger.current_champion(store, "intent")["to_version"] == 2
    assert "figures" not in entries[0]  # entries without figures hash as they always did
    with pytest.raises(ledger.LedgerError, match="action must be one of"):
        add("teleport", 3)


def test_traffic_replays_raw_texts_without_labels_and_gives_a_reranker_candidates(tmp_path):
    from retrain_tools.serving import CANDIDATES, requests_for

    for model, header, rows in (
        ("intent", "text,category", ["I lost my card,lost_or_stolen_card", "top up failed,top_up_failed"]),
        ("reranker", "query,passage_id", ["how do I top up my account,p0001", "card not arrived,p0002"]),
    ):
        partition = tmp_path / "raw" / model / "dt=2026-11-30" / "part-00000.csv"
        partition.parent.mkdir(parents=True)
        partition.write_text("\n".join([header, *rows]) + "\n")
    assert sorted(requests_for("intent", tmp_path)) == ["I lost my card", "top up failed"]  # labels dropped
    reranking = requests_for("reranker", tmp_path)
    assert {r["query"] for r in reranking} == {"how do I top up my account", "card not arrived"}
    for request in reranking:
        candidates = request["candidates"]
        assert len(candidates) == CANDIDATES and {"passage_id", "text", "score"} <= set(candidates[0])
        assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    with pytest.raises(ServingError, match="no raw partitions of sentiment"):
        requests_for("sentiment", tmp_path)
