"""The deployment stage of the local backend, after ``await_approval``: the approved challenger reaches the model
server's endpoint in stages, and is rolled back automatically when it misbehaves.

    deploy_shadow -> observe_shadow -> start_canary -> observe_canary -> promote_model

- ``deploy_shadow``: the champion keeps answering; the challenger gets a copy of each request (ledger: ``shadow``).
- ``observe_shadow`` (deferred to the triggerer): until ``deployment.shadow.min_requests`` copies were compared, at
  most ``max_minutes``; agreement, error rate and p99 are judged.
- ``start_canary``: the challenger answers ``deployment.canary.percent`` of requests (ledger: ``canary``).
- ``observe_canary`` (deferred): ``window_minutes``; a breach of the error-rate or p99 ceiling ends it early.
- ``promote_model``: the registry job moves ``champion`` (ledger: ``promote``), then the endpoint serves it at 100%.

A breach sends all traffic back to the champion, leaves the alias where it is, writes an ``auto_rollback`` ledger
entry with the figures, and fails the run with the reason (the model's notifier alerts). A window that ends with too
few requests is ``inconclusive``: the same, but said as such, since nothing was learnt about the challenger. The
judging rules are ``retrain.serving.judge``, which the trigger and the operator share.

With no champion yet (a model's first version), there is nothing to compare against: the stages pass through and
``promote_model`` serves the first version at 100%.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from retrain_airflow.operators import LocalJobOperator, ModelOperator

AUTOMATIC = "retrain (automatic)"


class ServingWindowTrigger(BaseTrigger):
    """Polls the model server's counters until ``retrain.serving.judge`` ends the window; runs in the triggerer, so
    an hour-long canary holds no worker slot."""

    def __init__(
        self,
        model: str,
        variant: str,
        version: int,
        before: dict[str, Any],
        started_at: float,
        policy: dict[str, Any],
        poll_seconds: float,
        url: str,
    ) -> None:
        super().__init__()
        self.model, self.variant, self.version, self.before = model, variant, version, before
        self.started_at, self.policy, self.poll_seconds, self.url = started_at, policy, poll_seconds, url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model": self.model,
                "variant": self.variant,
                "version": self.version,
                "before": self.before,
                "started_at": self.started_at,
                "policy": self.policy,
                "poll_seconds": self.poll_seconds,
                "url": self.url,
            },
        )

    async def run(self):
        from retrain.serving import ServingClient, ServingError, judge, window

        client = ServingClient(self.url)
        unreachable = 0
        while True:
            try:
                after = await asyncio.to_thread(client.stats, self.model)
                unreachable = 0
            except ServingError as exc:  # a server restart is survivable; one that stays away ends the window
                unreachable += 1
                if unreachable * self.poll_seconds > 120:
                    yield TriggerEvent({"state": "error", "reasons": [str(exc)]})
                    return
                await asyncio.sleep(self.poll_seconds)
                continue
            figures = window(self.before, after, self.variant, self.version)
            elapsed = time.time() - self.started_at
            state, reasons = judge(self.variant, figures, self.policy, elapsed)
            self.log.info(
                "%s %s v%s after %.0f s: %s %s", self.model, self.variant, self.version, elapsed, state, figures
            )
            if state != "continue":
                yield TriggerEvent(
                    {"state": state, "reasons": reasons, "figures": figures.as_dict(), "elapsed_s": elapsed}
                )
                return
            await asyncio.sleep(self.poll_seconds)


def require_gated_champion(model: str, version: int, gated: dict[str, Any], champion: int | None, outcome: str) -> None:
    """Refuse (AirflowFailException) to deploy or promote ``version`` unless the champion its gate compared against
    still serves: promote_model's check, made before any traffic moves too. gate.json records the version as text."""
    from airflow.sdk.exceptions import AirflowFailException

    was = gated.get("champion_version")
    was = None if was in (None, "") else int(was)
    if champion != was:
        raise AirflowFailException(
            f"{model} v{version} was gated against {'no champion' if was is None else f'champion v{was}'}, but the "
            f"champion is now v{champion}: its gate never saw the serving champion; {outcome}. Clear "
            f"evaluate_model (and downstream) to re-evaluate against v{champion}."
        )


def stage_inputs(context: Any, model: str) -> tuple[dict, dict, list[dict], int | None]:
    """What every backend's stage starts from: the registered challenger, the approval's answer, the verified ledger
    and the champion serving by it, refused unless the gate compared against that champion."""
    from retrain import ledger
    from retrain.store import get_store

    ti = context["ti"]
    registered = ti.xcom_pull(task_ids="register_model")
    approval, gated = ti.xcom_pull(task_ids="await_approval") or {}, ti.xcom_pull(task_ids="gate_on_metrics") or {}
    entries = ledger.verify(get_store(), model)
    champion = ledger.serving_champion(entries)
    require_gated_champion(model, int(registered["version"]), gated, champion, "no traffic was moved")
    return registered, approval, entries, champion


def _stage(context: Any, model: str) -> dict[str, Any]:
    """What the deployment knows at run time: the challenger (registered, trained), the approver, the champion that
    serves by the ledger, the server's URL."""
    from retrain.serving import server_url

    registered, approval, _entries, champion = stage_inputs(context, model)
    trained, version = context["ti"].xcom_pull(task_ids="train_model"), int(registered["version"])
    return {
        "challenger": version,
        "model_dir": trained["model_dir"],
        "weights_digest": trained.get("weights_digest"),
        "approver": (approval.get("responded_by_user") or {}).get("id") or AUTOMATIC,
        "champion": champion,
        "url": server_url(),
        "run_id": context["dag_run"].run_id,
    }


def _faults(config: Any, variant: str) -> dict:
    from retrain.serving import Faults

    injected = config.deployment.test_faults.get(variant)
    return {variant: Faults(**injected.model_dump())} if injected else {}


def _record(model: str, stage: dict[str, Any], action: str, actor: str, reason: str, figures: dict | None) -> None:
    from retrain import ledger
    from retrain.store import get_store

    ledger.append(
        get_store(),
        model,
        action=action,
        to_version=stage["challenger"],
        actor=actor,
        reason=reason,
        model_dir=stage["model_dir"],
        run_id=stage["run_id"],
        weights_digest=stage["weights_digest"],
        figures=figures,
    )


def policy_of(config: Any, variant: str) -> dict[str, Any]:
    """The window's criteria as plain data: the config's ``deployment.<variant>``, its p99 ceiling defaulting to the
    gate's ``latency_p99_ms_max`` (none when that is unset)."""
    section = getattr(config.deployment, variant).model_dump()
    if section.get("p99_ms_max") is None and config.gate.latency_p99_ms_max != float("inf"):
        section["p99_ms_max"] = config.gate.latency_p99_ms_max
    return section


class DeployShadowOperator(ModelOperator):
    """deploy_shadow: the champion keeps answering; the challenger receives a copy of each request."""

    ui_color = "#e6f0e0"

    def execute(self, context: Any) -> dict[str, Any]:
        from retrain.config import load_model
        from retrain.serving import EndpointSpec, ServingClient

        config, stage = load_model(self.model_name), _stage(context, self.model_name)
        if stage["champion"] is None:
            self.log.info("no champion serves %s yet: v%s goes to 100%% at promotion", config.name, stage["challenger"])
            return {**stage, "skipped": True}
        client = ServingClient(stage["url"])
        client.set_endpoint(
            EndpointSpec(
                config.name, primary=stage["champion"], shadow=stage["challenger"], faults=_faults(config, "shadow")
            )
        )
        _record(config.name, stage, "shadow", stage["approver"], f"approved; shadow beside v{stage['champion']}", None)
        self.log.info("%s: v%s answers, v%s shadows it", config.name, stage["champion"], stage["challenger"])
        return {**stage, "skipped": False, "before": client.stats(config.name), "started_at": time.time()}


class StartCanaryOperator(ModelOperator):
    """start_canary: the challenger answers ``deployment.canary.percent`` of the requests. A backend's subclass says
    how (``route_canary``)."""

    ui_color = "#e6f0e0"

    def route_canary(self, config: Any, stage: dict[str, Any], share: float) -> dict[str, Any]:
        """The model server's endpoint with the challenger as its canary; what the window starts from."""
        from retrain.serving import EndpointSpec, ServingClient

        client = ServingClient(stage["url"])
        client.set_endpoint(
            EndpointSpec(
                config.name,
                primary=stage["champion"],
                canary=stage["challenger"],
                canary_weight=share,
                faults=_faults(config, "canary"),
            )
        )
        return {"before": client.stats(config.name)}

    def execute(self, context: Any) -> dict[str, Any]:
        from retrain.config import load_model

        config = load_model(self.model_name)
        stage = context["ti"].xcom_pull(task_ids="observe_shadow")
        if stage.get("skipped"):
            return stage
        started = self.route_canary(config, stage, config.deployment.canary.percent / 100)
        _record(
            config.name,
            stage,
            "canary",
            stage["approver"],
            f"shadow passed; canary at {config.deployment.canary.percent:g}% beside v{stage['champion']}",
            stage.get("figures"),
        )
        return {**stage, **started, "started_at": time.time()}


class ObserveOperator(ModelOperator):
    """observe_shadow / observe_canary: defer to the window's trigger; judge what it saw. A backend's subclass says
    which trigger watches the window (``trigger``) and how all traffic goes back to the champion (``restore``)."""

    ui_color = "#fff7d6"

    def __init__(self, *, variant: str, upstream: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant, self.upstream = variant, upstream

    def trigger(self, config: Any, stage: dict[str, Any]) -> BaseTrigger:
        """The model server's counters, read by ServingWindowTrigger."""
        return ServingWindowTrigger(
            model=config.name,
            variant=self.variant,
            version=stage["challenger"],
            before=stage["before"],
            started_at=stage["started_at"],
            policy=policy_of(config, self.variant),
            poll_seconds=config.deployment.poll_seconds,
            url=stage["url"],
        )

    def restore(self, config: Any, stage: dict[str, Any]) -> None:
        """All traffic back to the champion; the alias never moved."""
        from retrain.serving import EndpointSpec, ServingClient

        ServingClient(stage["url"]).set_endpoint(EndpointSpec(config.name, primary=stage["champion"]))

    def recorded_verdict(self, model: str, stage: dict[str, Any]) -> dict[str, Any] | None:
        """The rollback or inconclusive verdict that an earlier try of this task recorded for this run's challenger,
        if any. Airflow can fail a try after it judged (factory.OBSERVE_RETRY); the retry repeats the verdict and
        records nothing twice."""
        from retrain import ledger
        from retrain.store import get_store

        verdicts = [
            entry
            for entry in ledger.verify(get_store(), model)
            if entry["action"] in ("auto_rollback", "inconclusive")
            and (entry.get("run_id"), entry["to_version"]) == (stage["run_id"], stage["challenger"])
            and (entry.get("figures") or {}).get("variant") == self.variant
        ]
        return verdicts[-1] if verdicts else None

    def execute(self, context: Any) -> Any:
        from datetime import timedelta

        from retrain.config import load_model

        config = load_model(self.model_name)
        stage = context["ti"].xcom_pull(task_ids=self.upstream)
        if stage.get("skipped"):
            return stage
        earlier = self.recorded_verdict(config.name, stage)
        if earlier:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{earlier['reason']} (recorded by an earlier try of this run)")
        policy = policy_of(config, self.variant)
        limit = policy.get("max_minutes") or policy.get("window_minutes")
        self.defer(
            trigger=self.trigger(config, stage),
            method_name="execute_complete",
            kwargs={"stage": stage},
            timeout=timedelta(minutes=limit + 10),
        )

    def execute_complete(self, context: Any, event: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from retrain.config import load_model

        config, state, reasons = load_model(self.model_name), event["state"], event["reasons"]
        figures = event.get("figures")
        self.log.info("%s window of v%s: %s %s %s", self.variant, stage["challenger"], state, reasons, figures)
        if state == "pass":
            return {**stage, "figures": figures, "before": None}
        self.restore(config, stage)  # every other end: the champion serves 100%, alias and registry unchanged
        action = "inconclusive" if state == "inconclusive" else "auto_rollback"
        what = (
            f"{self.variant} of v{stage['challenger']} INCONCLUSIVE, not judged"
            if action == "inconclusive"
            else f"{self.variant} of v{stage['challenger']} rolled back automatically"
        )
        reason = f"{what}: {'; '.join(reasons)}; v{stage['champion']} serves 100%, champion unchanged"
        _record(
            config.name, stage, action, AUTOMATIC, reason, {**(figures or {}), "state": state, "variant": self.variant}
        )
        raise AirflowFailException(reason)


class PromoteModelOperator(LocalJobOperator):
    """promote_model: the registry job moves ``champion`` and appends the ledger; then the endpoint serves the new
    champion at 100%."""

    def execute(self, context: Any) -> dict[str, Any]:
        from retrain_airflow.operators import route_all_traffic

        result = super().execute(context)
        return {**result, "serving": route_all_traffic(self.model_name, int(result["champion"]), self.log)}
