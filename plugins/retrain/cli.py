"""retrain: status, approvals and rollbacks from the command line.

    bin/retrain status intent
    bin/retrain runs list intent
    bin/retrain approve intent --run-id RUN_ID --as alice --reason "beats v3 on the golden set"
    bin/retrain reject intent --run-id RUN_ID --as alice --reason "latency regression"
    bin/retrain rollback intent --reason "complaints after release" [--to-version 2] [--as admin]
    bin/retrain ledger verify intent

Approvals go through Airflow's REST ``hitlDetails`` endpoint as the named user, so Airflow
enforces who may answer; rollbacks trigger the ``rollback_<model>`` DAG. Runs in the job
environment (status reads MLflow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from retrain import ledger
from retrain.airflow_api import AirflowClient, ApiError
from retrain.store import LocalStore


def client_for(args: argparse.Namespace) -> AirflowClient:
    client = AirflowClient(args.api_url, Path(os.environ.get("AIRFLOW_HOME", ".airflow")))
    return client.login(args.user, args.password or os.environ.get("RETRAIN_AIRFLOW_PASSWORD"))


def cmd_status(args: argparse.Namespace) -> int:
    from retrain.registry import status

    info = status(LocalStore(), args.model)
    print(f"model:      {args.model}")
    print(f"champion:   {'v' + str(info['champion']) if info['champion'] else '-'}")
    print(f"challenger: {'v' + str(info['challenger']) if info['challenger'] else '-'}")
    print("versions:")
    for v in info["versions"]:
        print(f"  v{v['version']:<4} {v['approval']:<9} dataset {v['dataset_version']}  run {v['airflow_run_id']}")
    verified = "verified" if info["ledger_verified"] is True else f"BROKEN: {info['ledger_verified']}"
    print(f"ledger ({len(info['ledger'])} entries, {verified}):")
    for e in info["ledger"]:
        origin = f"v{e['from_version']}" if e["from_version"] else "-"
        print(f"  #{e['seq']} {e['time'][:19]} {e['action']:<8} {origin} -> v{e['to_version']} by {e['actor']}: {e['reason']}")
    try:
        runs = client_for(args).dag_runs(f"retrain_{args.model}")[:5]
        print("last runs:")
        for run in runs:
            print(f"  {run['dag_run_id']:<48} {run['state']}")
    except (OSError, ApiError, KeyError, FileNotFoundError) as exc:
        print(f"last runs:  Airflow not reachable at {args.api_url} ({exc.__class__.__name__})")
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    client = client_for(args)
    for run in client.dag_runs(f"retrain_{args.model}"):
        waiting = ""
        detail = client.hitl_detail(f"retrain_{args.model}", run["dag_run_id"], "await_approval")
        if detail and not detail.get("response_received"):
            waiting = "  <- awaiting approval"
        print(f"{run['dag_run_id']:<48} {run['state']:<8} {run.get('data_interval_start') or ''}{waiting}")
    return 0


def cmd_decide(args: argparse.Namespace, option: str) -> int:
    client = client_for(args)
    dag_id = f"retrain_{args.model}"
    params = {"reason": args.reason} if args.reason else {}
    try:
        client.respond(dag_id, args.run_id, "await_approval", option, params)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{option.lower()}d {dag_id} run {args.run_id} as {args.user}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    client = client_for(args)
    conf = {"reason": args.reason, "target_version": args.to_version}
    client.set_paused(f"rollback_{args.model}", False)  # a paused DAG would queue the rollback forever
    run = client.trigger_manual(f"rollback_{args.model}", conf)
    print(f"triggered rollback_{args.model} run {run['dag_run_id']} as {args.user}")
    if args.no_wait:
        return 0
    while (state := client.dag_run(f"rollback_{args.model}", run["dag_run_id"])["state"]) not in ("success", "failed"):
        time.sleep(1)
    print(f"rollback {state}")
    if state != "success":
        print(f"the reason is in the rollback_model task log of run {run['dag_run_id']} (Airflow UI); nothing was changed",
              file=sys.stderr)
    return 0 if state == "success" else 1


def cmd_ledger(args: argparse.Namespace) -> int:
    store = LocalStore()
    try:
        entries = ledger.verify(store, args.model)
    except ledger.LedgerError as exc:
        print(f"ledger BROKEN: {exc}", file=sys.stderr)
        return 1
    if args.action == "show":
        for e in entries:
            print(json.dumps(e, sort_keys=True))
    print(f"ledger {store.path(ledger.ledger_key(args.model))}: {len(entries)} entries, chain verified")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", default=os.environ.get("RETRAIN_AIRFLOW_URL", "http://localhost:8080"), help="Airflow API server (default: %(default)s)")
    common.add_argument("--as", dest="user", default=os.environ.get("RETRAIN_AIRFLOW_USER", "admin"), help="Airflow user to act as (default: %(default)s)")
    common.add_argument("--password", default=None, help="that user's password (default: RETRAIN_AIRFLOW_PASSWORD, then Airflow's generated passwords file)")
    parser = argparse.ArgumentParser(prog="retrain", description="Inspect and steer retrain's models (status, approvals, rollbacks, ledger).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_add = sub.add_parser
    sub.add_parser = lambda *a, **k: sub_add(*a, parents=[common], **k)  # every command takes the common options

    p = sub.add_parser("status", help="champion, challenger, versions, last runs and the ledger of a model")
    p.add_argument("model")
    p.set_defaults(func=cmd_status)

    runs = sub_add("runs", help="runs of a model's retraining DAG").add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    p = runs.add_parser("list", help="recent runs, marking those awaiting approval", parents=[common])
    p.add_argument("model")
    p.set_defaults(func=cmd_runs_list)

    for name, option in (("approve", "Approve"), ("reject", "Reject")):
        p = sub.add_parser(name, help=f"{name} a run waiting in await_approval, as a named user (via REST hitlDetails)")
        p.add_argument("model")
        p.add_argument("--run-id", required=True, help="the retrain_<model> run to answer")
        p.add_argument("--reason", default="", help="goes to the ledger and the model version's tags")
        p.set_defaults(func=lambda a, option=option: cmd_decide(a, option))

    p = sub.add_parser("rollback", help="trigger rollback_<model>: move champion back (default: the previous champion)")
    p.add_argument("model")
    p.add_argument("--reason", required=True, help="why (required; goes to the ledger)")
    p.add_argument("--to-version", type=int, default=None, help="version to restore (default: the previous champion in the ledger)")
    p.add_argument("--no-wait", action="store_true", help="return once triggered")
    p.set_defaults(func=cmd_rollback)

    ledger_parser = sub.add_parser("ledger", help="the hash-chained promotion ledger")
    ledger_parser.add_argument("action", choices=["verify", "show"], help="verify: check the chain; show: print every entry, then verify")
    ledger_parser.add_argument("model")
    ledger_parser.set_defaults(func=cmd_ledger)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
