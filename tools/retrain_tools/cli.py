"""retrain: status, approvals, rollbacks, sample data and DAG files from the command line.

    bin/retrain status                     # every model; or: bin/retrain status intent
    bin/retrain runs list intent
    bin/retrain approve intent --run-id RUN_ID --as alice --reason "beats v3 on the golden set"
    bin/retrain reject intent --run-id RUN_ID --as alice --reason "latency regression"
    bin/retrain rollback intent --reason "complaints after release" [--to-version 2] [--as admin]
    bin/retrain ledger verify intent
    bin/retrain serve [--status | --stop]  # the local model server: every model's endpoint (stays up across runs)
    bin/retrain traffic intent --rps 5 --seconds 60   # replay raw partitions (unlabelled) against the endpoint
    bin/retrain seed --model intent       # land the model's sample data (config: sample_data)
    bin/retrain golden pin intent         # write the verified golden hash into the config
    bin/retrain dags sync                 # one thin DAG file per model config (dags/retrain_<model>.py)
    bin/retrain dags check                # every config valid (alone and together) and its DAG file up to date
    bin/retrain dags errors               # each DAG file's import error, as Airflow parses them (no `airflow db
    migrate` needed)
    bin/retrain backfill intent --from 2026-10-05 --to 2026-10-19   # through the API server (works on SQLite)
    bin/retrain deploy build              # the MWAA bundle in dist/mwaa/ (checked: configs, DAG parse, pip resolve)
    bin/retrain deploy image              # build and push the job image (needs Docker); --tag prints its tag
    bin/retrain deploy stack [--parameter K=V ...]  # create/update the CloudFormation stack, print its outputs
    bin/retrain deploy push --bucket B --environment E [--dry-run]   # upload with versions, UpdateEnvironment, wait

Every command that acts on one model takes it as its first argument or as ``--model``.

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
from datetime import UTC, datetime
from pathlib import Path

from retrain import ledger
from retrain.config import config_paths
from retrain.paths import PROJECT_ROOT, config_dir
from retrain.serving import DEFAULT_PORT as DEFAULT_SERVE_PORT
from retrain.serving import ServingError
from retrain.store import get_store
from retrain.user_input import REASON_MAX_CHARS, reason_problem
from retrain_tools.airflow_api import AirflowClient, AirflowNotRunning, ApiError, configured_api_url


def client_for(args: argparse.Namespace) -> AirflowClient:
    """A client logged in as ``--as``; AirflowNotRunning when nothing answers (asked first: an Airflow that never
    started
    has not written its passwords file either)."""
    client = AirflowClient(args.api_url, Path(os.environ.get("AIRFLOW_HOME", ".airflow")))
    client.healthy()
    return client.login(args.user, args.password or os.environ.get("RETRAIN_AIRFLOW_PASSWORD"))


def cmd_status(args: argparse.Namespace) -> int:
    names = [args.model] if args.model else [path.stem for path in config_paths()]
    shown = []
    for number, name in enumerate(names):
        if number:
            print()
        shown.append(show_status(args, name))
    return 0 if all(shown) else 1


def show_status(args: argparse.Namespace, model: str) -> bool:
    """Print a model's status; False when its last runs could not be read from Airflow."""
    from retrain.registry import status

    args.model = model
    info = status(get_store(), args.model)
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
        print(
            f"  #{e['seq']} {e['time'][:19]} {e['action']:<8} {origin} -> v{e['to_version']} by {e['actor']}: "
            f"{e['reason']}"
        )
    print(f"endpoint:   {_serving().endpoint_line(args.model)}")
    try:
        runs = client_for(args).dag_runs(f"retrain_{args.model}")[:5]
    except AirflowNotRunning as exc:
        print(f"last runs:  {exc}")
        return False
    except (OSError, ApiError, KeyError) as exc:
        print(f"last runs:  Airflow at {args.api_url} did not answer ({exc.__class__.__name__}: {exc})")
        return False
    print("last runs:")
    for run in runs:
        print(f"  {run['dag_run_id']:<48} {run['state']}")
    return True


def cmd_runs_list(args: argparse.Namespace) -> int:
    client = client_for(args)
    for run in client.dag_runs(f"retrain_{args.model}"):
        waiting = ""
        detail = client.hitl_detail(f"retrain_{args.model}", run["dag_run_id"], "await_approval")
        if detail and not detail.get("response_received"):
            waiting = "  <- awaiting approval"
        print(f"{run['dag_run_id']:<48} {run['state']:<8} {run.get('data_interval_start') or ''}{waiting}")
    return 0


REASON_RULE = f"one line of at most {REASON_MAX_CHARS} printable characters (SageMaker's ApprovalDescription)"
PAST_TENSE = {"Approve": "approved", "Reject": "rejected"}


def cmd_decide(args: argparse.Namespace, option: str) -> int:
    if args.reason and (problem := reason_problem(args.reason)):
        print(f"error: --reason: {problem}; rule: {REASON_RULE}", file=sys.stderr)
        return 1
    client = client_for(args)
    dag_id = f"retrain_{args.model}"
    params = {"reason": args.reason} if args.reason else {}
    try:
        client.respond(dag_id, args.run_id, "await_approval", option, params)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{PAST_TENSE[option]} {dag_id} run {args.run_id} as {args.user}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from retrain.config import load_model

    if problem := reason_problem(args.reason):
        print(f"error: --reason: {problem}; rule: {REASON_RULE}", file=sys.stderr)
        return 1
    approval = load_model(args.model).approval
    if not approval.may_roll_back(args.user):  # the DAG refuses too; this answers before anything is triggered
        print(f"error: {approval.rollback_refusal(args.model, args.user)}", file=sys.stderr)
        return 1
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
        print(
            f"the reason is in the rollback_model task log of run {run['dag_run_id']} (Airflow UI); nothing was "
            "changed",
            file=sys.stderr,
        )
    return 0 if state == "success" else 1


def cmd_ledger(args: argparse.Namespace) -> int:
    store = get_store()
    try:
        entries = ledger.verify(store, args.model)
    except ledger.LedgerError as exc:
        print(f"ledger BROKEN: {exc}", file=sys.stderr)
        return 1
    if args.action == "show":
        for e in entries:
            print(json.dumps(e, sort_keys=True))
    print(f"ledger {store.uri(ledger.ledger_key(args.model))}: {len(entries)} entries, chain verified")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """A backfill created through the API server, not by a second writer of the metadata DB: on the
    default SQLite setup `airflow backfill create` beside a running scheduler can fail with
    "database is locked" and leave an empty backfill behind that blocks the next one."""
    from retrain.config import load_model

    config = load_model(args.model)
    dag_id, max_runs = config.dag_id, args.max_active_runs or config.dag.max_active_runs
    parse = lambda day: datetime.combine(datetime.fromisoformat(day).date(), datetime.min.time(), tzinfo=UTC)  # noqa: E731
    client = client_for(args)
    dag = client.dag(dag_id)
    if dag is None:
        print(
            f"error: {dag_id} is not known to Airflow at {args.api_url} (is it parsed? see `bin/retrain dags errors`)",
            file=sys.stderr,
        )
        return 1
    to_date = backfill_end(dag, parse(args.to_date), args.schedule)
    # Created while the DAG may still be paused (less scheduler traffic), then unpaused unless --schedule paused: a
    # paused DAG's backfill runs stay queued.
    try:
        backfill = client.create_backfill(
            dag_id,
            parse(args.from_date),
            to_date,
            max_active_runs=max_runs,
            reprocess_behavior=args.reprocess,
            on_busy=print,
        )
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    release_schedule(client, dag, args.schedule)
    print(
        f"backfill {backfill['id']} of {dag_id}: logical dates {args.from_date} .. {to_date.date()}, "
        f"at most {max_runs} run(s) at once, one instance of each job task at a time, reprocess {args.reprocess}"
    )
    return 0


def due_scheduled_run(dag: dict) -> datetime | None:
    """The logical date of the run the scheduler creates as soon as this paused DAG is unpaused (its next interval,
    already complete), or None."""
    logical, run_after = dag.get("next_dagrun_logical_date"), dag.get("next_dagrun_run_after")
    if not dag.get("is_paused") or not logical or not run_after:
        return None
    return datetime.fromisoformat(logical) if datetime.fromisoformat(run_after) <= datetime.now(UTC) else None


def backfill_end(dag: dict, to_date: datetime, schedule: str) -> datetime:
    """The backfill's last logical date. ``in-order``: a scheduled run that unpausing would start at once beside the
    backfill (drifting against a version older than the backfill will build) joins the backfill instead, last, in
    order, and the scheduler, finding its interval's run, creates none."""
    due = due_scheduled_run(dag)
    if due is None or due <= to_date:
        return to_date
    if schedule == "in-order":
        print(
            f"{dag['dag_id']}'s scheduled run of {due.date()} is due: it joins the backfill, after the earlier ones "
            "(--schedule alongside runs it now, beside the backfill)"
        )
        return due
    if schedule == "alongside":
        print(
            f"warning: {dag['dag_id']}'s scheduled run of {due.date()} starts now, beside the backfill, and measures "
            "drift against the versions that exist before the backfill builds its own"
        )
    return to_date


def release_schedule(client: AirflowClient, dag: dict, schedule: str) -> None:
    """Unpause the DAG so the backfill's runs start, unless ``--schedule paused`` keeps them queued."""
    if not dag.get("is_paused"):
        return
    if schedule == "paused":
        print(f"{dag['dag_id']} stays paused (--schedule paused): the backfill's runs wait until you unpause it")
        return
    print(f"{dag['dag_id']} was paused, and a paused DAG's backfill runs stay queued: unpausing it")
    client.set_paused(dag["dag_id"], False)


def cmd_seed(args: argparse.Namespace) -> int:
    from retrain_tools.seed import main as seed_main

    return seed_main(
        ["--model", args.model]
        + ([f"--partitions={args.partitions}"] if args.partitions else [])
        + ([f"--end={args.end}"] if args.end else [])
    )


def cmd_golden_pin(args: argparse.Namespace) -> int:
    from retrain.config import ConfigError
    from retrain.golden import PinError, pin

    path = config_dir() / f"{args.model}.yaml"
    try:
        new, old = pin(path, get_store(), replace=args.replace)
    except (PinError, ConfigError) as exc:
        print(f"golden pin refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"{path}: data.golden_sha256 {'already ' if new == old else ''}pinned to {new}"
        + (f" (was {old})" if old and old != new else "")
    )
    return 0


def cmd_dags(args: argparse.Namespace) -> int:
    from retrain_tools.dagfiles import DAGS_DIR, check, import_errors, sync

    dags_dir = Path(args.dags_dir) if args.dags_dir else DAGS_DIR
    if args.action == "errors":
        from retrain_tools.deploy.checks import airflow_python

        dags, errors = import_errors(dags_dir, airflow_python(PROJECT_ROOT))
        for path, error in errors.items():
            print(f"{path}:\n" + "\n".join(f"  {line}" for line in error.rstrip().splitlines()), file=sys.stderr)
        print(
            f"{dags_dir}: {len(errors)} import error(s); {len(dags)} DAG(s) loaded"
            + (f": {', '.join(dags)}" if dags else "")
        )
        return 1 if errors else 0
    if args.action == "check":
        from retrain.config import config_problems

        configs, invalid = config_problems(
            config_dir()
        )  # each config as its DAG file loads it, and all of them together
        problems = check(config_dir(), dags_dir)
        for problem in invalid + problems:
            print(problem, file=sys.stderr)
        verdict = (["out of date"] if problems else []) + (
            [f"{len(invalid)} config problem(s) in {config_dir()}, whose DAG files will not load"] if invalid else []
        )
        print(f"{dags_dir}: {'; '.join(verdict) or f'one DAG file per config in {config_dir()}, {len(configs)} valid'}")
        return 1 if verdict else 0
    changes = sync(config_dir(), dags_dir)
    for kind in ("written", "removed"):
        for name in changes[kind]:
            print(f"{kind} {dags_dir / name}")
    print(
        f"{dags_dir}: {len(changes['written'])} written, {len(changes['removed'])} removed, "
        f"{len(changes['unchanged'])} unchanged"
    )
    return 0


def cmd_deploy_build(args: argparse.Namespace) -> int:
    from retrain_tools.deploy.bundle import BuildError, build
    from retrain_tools.deploy.checks import BundleCheckFailed
    from retrain_tools.deploy.resolve import ResolveError

    out = Path(args.out)
    started = time.monotonic()
    try:
        manifest = build(out, Path(args.config_dir) if args.config_dir else config_dir(), allow_dirty=args.allow_dirty)
    except (BuildError, BundleCheckFailed, ResolveError) as exc:
        print(f"deploy build refused; nothing was written to {out}:\n{exc}", file=sys.stderr)
        return 1
    print(
        f"{out}: MWAA bundle of git {manifest['git_sha']} ({manifest['date']}), models "
        f"{', '.join(sorted(manifest['configs']))}, "
        f"code {manifest['code_prefix']}, built in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_deploy_image(args: argparse.Namespace) -> int:
    from retrain.aws.images import lock_tag
    from retrain_tools.deploy import image
    from retrain_tools.deploy.bundle import BuildError, load_configs

    tag = lock_tag(PROJECT_ROOT)
    if args.tag:
        print(tag)
        return 0
    try:
        image.docker_engine()
        uris = image.target_uris(load_configs(Path(args.config_dir) if args.config_dir else config_dir()), tag)
        context = image.build_context(PROJECT_ROOT, Path(args.out) / "image-context", sys.executable)
        digests = image.build_and_push(uris, context)
    except (image.ImageError, BuildError) as exc:
        print(f"deploy image refused: {exc}", file=sys.stderr)
        return 1
    print(f"{image.record(Path(args.out), tag, digests)}: " + ", ".join(digests.values()))
    return 0


def cmd_deploy_stack(args: argparse.Namespace) -> int:
    from retrain_tools.deploy import stack

    try:
        overrides = stack.parse_overrides(args.parameter)
        cfn, s3, sts = stack.clients(args.region)
        region = cfn.meta.region_name
        found = stack.deploy(
            cfn,
            s3,
            args.name,
            overrides,
            region=region,
            account=sts.get_caller_identity()["Account"],
            template_bucket=args.template_bucket,
            poll_s=args.poll_seconds,
            timeout_s=args.timeout_minutes * 60,
            dry_run=args.dry_run,
        )
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if found:
        print("\n".join(stack.next_steps(found)))
    return 0


def cmd_deploy_push(args: argparse.Namespace) -> int:
    from retrain_tools.deploy import push

    bundle = Path(args.bundle)
    if not (bundle / "deploy-manifest.json").is_file():
        print(f"error: {bundle} holds no built bundle; run `bin/retrain deploy build` first", file=sys.stderr)
        return 1
    s3, mwaa = push.clients(args.region)
    try:
        plan = push.plan(bundle, s3, mwaa, args.bucket, args.environment)
        print("\n".join(push.describe(plan)))
        if args.dry_run:
            print("dry run: nothing was uploaded and the environment was not changed")
            return 0
        push.push(plan, s3, mwaa, poll_s=args.poll_seconds, timeout_s=args.timeout_minutes * 60, show=push.tty_progress)
    except push.PushError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(f"\n{args.environment} is AVAILABLE on git {plan.manifest['git_sha']}")
    return 0


def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The model as a positional argument or as --model."""
    parser.add_argument(
        "model_positional", nargs="?", metavar="MODEL", help="model name (as in config/models/<name>.yaml)"
    )
    parser.add_argument("--model", help="the same, as an option")
    parser.set_defaults(model_required=required)


def _aws_wait_options(p: argparse.ArgumentParser, timeout_minutes: float) -> None:
    """--region, --poll-seconds and --timeout-minutes of a deploy command that waits on AWS."""
    p.add_argument(
        "--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"), help="AWS region"
    )
    p.add_argument(
        "--poll-seconds", type=float, default=30.0, help="seconds between status polls (default: %(default)s)"
    )
    p.add_argument(
        "--timeout-minutes",
        type=float,
        default=timeout_minutes,
        help="give up waiting after this (default: %(default)s)",
    )


def _serving():
    from retrain_tools import serving

    return serving


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        default=os.environ.get("RETRAIN_AIRFLOW_URL") or configured_api_url(),
        help="Airflow API server (default: RETRAIN_AIRFLOW_URL, else Airflow's own [api] base_url or port: "
        "%(default)s)",
    )
    common.add_argument(
        "--as",
        dest="user",
        default=os.environ.get("RETRAIN_AIRFLOW_USER", "admin"),
        help="Airflow user to act as (default: %(default)s)",
    )
    common.add_argument(
        "--password",
        default=None,
        help="that user's password (default: RETRAIN_AIRFLOW_PASSWORD, then Airflow's generated passwords file)",
    )
    parser = argparse.ArgumentParser(
        prog="retrain", description="Inspect and steer retrain's models (status, approvals, rollbacks, ledger)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_add = sub.add_parser
    sub.add_parser = lambda *a, **k: sub_add(*a, parents=[common], **k)  # every command takes the common options

    p = sub.add_parser(
        "status", help="champion, challenger, versions, last runs and the ledger of a model (default: every model)"
    )
    add_model(p, required=False)
    p.set_defaults(func=cmd_status)

    runs = sub_add("runs", help="runs of a model's retraining DAG").add_subparsers(
        dest="runs_command", required=True, metavar="COMMAND"
    )
    p = runs.add_parser("list", help="recent runs, marking those awaiting approval", parents=[common])
    add_model(p)
    p.set_defaults(func=cmd_runs_list)

    for name, option in (("approve", "Approve"), ("reject", "Reject")):
        p = sub.add_parser(name, help=f"{name} a run waiting in await_approval, as a named user (via REST hitlDetails)")
        add_model(p)
        p.add_argument("--run-id", required=True, help="the retrain_<model> run to answer")
        p.add_argument("--reason", default="", help="goes to the ledger and the model version's tags")
        p.set_defaults(func=lambda a, option=option: cmd_decide(a, option))

    p = sub.add_parser("rollback", help="trigger rollback_<model>: move champion back (default: the previous champion)")
    add_model(p)
    p.add_argument("--reason", required=True, help="why (required; goes to the ledger)")
    p.add_argument(
        "--to-version", type=int, default=None, help="version to restore (default: the previous champion in the ledger)"
    )
    p.add_argument("--no-wait", action="store_true", help="return once triggered")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("serve", help="start the local model server in the background (every model's endpoint)")
    p.add_argument("--port", type=int, default=DEFAULT_SERVE_PORT, help="port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--stop", action="store_true", help="stop the running server")
    p.add_argument("--status", action="store_true", help="what each endpoint serves")
    p.set_defaults(func=lambda args: _serving().main_serve(args))

    p = sub.add_parser("traffic", help="replay a model's raw partitions (unlabelled) against its endpoint")
    add_model(p)
    p.add_argument("--rps", type=float, default=5.0, help="requests per second (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=60.0, help="for how long (default: %(default)s)")
    p.set_defaults(func=lambda args: _serving().main_traffic(args))

    ledger_parser = sub.add_parser("ledger", help="the hash-chained promotion ledger")
    ledger_parser.add_argument(
        "action", choices=["verify", "show"], help="verify: check the chain; show: print every entry, then verify"
    )
    add_model(ledger_parser)
    ledger_parser.set_defaults(func=cmd_ledger)

    p = sub.add_parser("backfill", help="rerun past data intervals through the API server, max_active_runs from config")
    add_model(p)
    p.add_argument("--from", dest="from_date", required=True, help="first logical date (an interval start), YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", required=True, help="last logical date (an interval start), YYYY-MM-DD")
    p.add_argument(
        "--reprocess",
        choices=["none", "failed", "completed"],
        default="none",
        help="intervals that already have a run: skip them (none), rerun failed ones, or rerun all",
    )
    p.add_argument(
        "--max-active-runs", type=int, default=None, help="runs at once (default: the config's dag.max_active_runs)"
    )
    p.add_argument(
        "--schedule",
        choices=["in-order", "alongside", "paused"],
        default="in-order",
        help="a paused DAG's due scheduled run: joins the backfill, last (in-order), starts now beside it (alongside); "
        "or leave the DAG paused and the backfill queued (paused)",
    )
    p.set_defaults(func=cmd_backfill)

    p = sub_add("seed", help="land a model's sample raw partitions and golden version (config: sample_data)")
    add_model(p)
    p.add_argument(
        "--partitions", type=int, default=None, help="data intervals to spread the rows over (default: the config's)"
    )
    p.add_argument(
        "--end",
        default=None,
        help="end of the last seeded interval (default: where existing partitions end, else the latest complete "
        "interval)",
    )
    p.set_defaults(func=cmd_seed)

    golden = sub_add("golden", help="golden sets").add_subparsers(
        dest="golden_command", required=True, metavar="COMMAND"
    )
    p = golden.add_parser("pin", help="write the verified content hash of the model's golden version into its config")
    add_model(p)
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a different existing pin (only if this store's version is the one to trust)",
    )
    p.set_defaults(func=cmd_golden_pin)

    p = sub_add("dags", help="the per-model DAG files in dags/")
    p.add_argument(
        "action",
        choices=["sync", "check", "errors"],
        help="sync: write missing or stale files, remove orphans; "
        "check: validate every config and report, change nothing; errors: parse the DAGs folder as Airflow does "
        "and print each file's import error (no metadata DB or running Airflow needed)",
    )
    p.add_argument("--dags-dir", default=None, help="the DAGs folder (default: the project's dags/)")
    p.set_defaults(func=cmd_dags)

    deploy = sub_add("deploy", help="Amazon MWAA: build the bundle, push it to an environment").add_subparsers(
        dest="deploy_command", required=True, metavar="COMMAND"
    )
    p = deploy.add_parser(
        "build", help="write the MWAA bundle (dags/, plugins.zip, requirements.txt, startup.sh, code) into dist/mwaa/"
    )
    p.add_argument("--out", default=str(PROJECT_ROOT / "dist" / "mwaa"), help="bundle directory (default: %(default)s)")
    p.add_argument("--config-dir", default=None, help="model configs to deploy (default: the project's config/models/)")
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="build from a tree with uncommitted edits (its jobs will refuse to run)",
    )
    p.set_defaults(func=cmd_deploy_build)
    p = deploy.add_parser(
        "image", help="build the job image (images/Dockerfile) from the job lock, push it, record digests"
    )
    p.add_argument("--tag", action="store_true", help="print the job lock's image tag (what the configs name) and exit")
    p.add_argument("--out", default=str(PROJECT_ROOT / "dist"), help="where images.json goes (default: %(default)s)")
    p.add_argument("--config-dir", default=None, help="model configs naming the image (default: config/models/)")
    p.set_defaults(func=cmd_deploy_image)
    p = deploy.add_parser(
        "stack", help="create or update the CloudFormation stack (buckets, roles, VPC, MWAA environment), print outputs"
    )
    p.add_argument("--name", default="retrain", help="stack name (default: %(default)s)")
    p.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template parameter (docs/aws.md lists them); repeat; on update, the others keep their values",
    )
    p.add_argument(
        "--template-bucket",
        default=None,
        help="bucket for the template (over CloudFormation's 51,200-byte inline limit); "
        "default <EnvironmentName>-cfn-<account>-<region>, created when absent",
    )
    p.add_argument("--dry-run", action="store_true", help="check the parameters, print the plan, send nothing")
    _aws_wait_options(p, timeout_minutes=120.0)
    p.set_defaults(func=cmd_deploy_stack)
    p = deploy.add_parser("push", help="upload the bundle with object versions, UpdateEnvironment, wait for AVAILABLE")
    p.add_argument("--bucket", required=True, help="the environment's source bucket (versioning enabled)")
    p.add_argument("--environment", required=True, help="MWAA environment name")
    p.add_argument("--dry-run", action="store_true", help="print the plan; upload and change nothing")
    p.add_argument("--bundle", default=str(PROJECT_ROOT / "dist" / "mwaa"), help="built bundle (default: %(default)s)")
    _aws_wait_options(p, timeout_minutes=60.0)
    p.set_defaults(func=cmd_deploy_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "model_required"):
        if args.model and args.model_positional and args.model != args.model_positional:
            parser.error(f"two different models given: {args.model_positional!r} and --model {args.model!r}")
        args.model = args.model or args.model_positional
        if args.model_required and not args.model:
            parser.error(f"{args.command}: a model is required (MODEL or --model NAME)")
    try:
        return args.func(args)
    except (AirflowNotRunning, ServingError) as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
