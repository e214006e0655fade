"""GlueJobOperator arguments for build_dataset, and the Glue requests they imply.

The operator's hook sends ``CreateJob`` from its own fields plus ``create_job_kwargs``, and
``StartJobRun`` with ``script_args``; ``create_job_request`` and ``start_job_run_request``
rebuild those two requests so they can be checked against the glue service model.
Every value is a string where Glue wants one: the Glue version stays "5.0", never 5.0.
"""

from __future__ import annotations

from typing import Any

from retrain.aws.config import AwsConfig
from retrain.aws.locations import AwsJob, CodeBundle

LOG_PREFIX = "logs/glue-logs/"  # GlueJobHook.s3_glue_logs: LogUri is s3://<s3_bucket>/<this><job name>


def _arguments(arguments: dict[str, str], where: str) -> dict[str, str]:
    bad = [key for key, value in arguments.items() if not isinstance(value, str)]
    if bad:
        raise TypeError(f"{where}: Glue job arguments must be strings; not strings: {', '.join(bad)}")
    return {f"--{key}": value for key, value in arguments.items()}


def glue_operator_kwargs(
    aws: AwsConfig, job: AwsJob, code: CodeBundle, glue_job_name: str, description: str
) -> dict[str, Any]:
    """Keyword arguments of ``GlueJobOperator`` that run ``job`` (a glue AwsJob) on Glue 5.x."""
    if job.kind != "glue":
        raise ValueError(f"{job.task}: a {job.kind} job is not a Glue job")
    if job.env:  # Glue has no container environment; the script must take them as arguments
        raise ValueError(f"{job.task}: Glue jobs take no environment variables, got {sorted(job.env)}")
    if not code.glue_wheels:
        raise ValueError(
            f"{job.task}: the code bundle names no Glue wheels; startup.sh of `bin/retrain deploy build` exports "
            "them as RETRAIN_GLUE_WHEELS, and without them Glue would run the job without its Python modules"
        )
    glue = aws.glue
    return {
        "job_name": glue_job_name,
        "job_desc": description,
        "script_location": code.script_uri(job.script),
        "iam_role_arn": aws.role_arn,
        "s3_bucket": aws.artifact_bucket,
        "retry_limit": glue.max_retries,
        "update_config": False,  # the name carries the code version, so a job definition never changes
        "create_job_kwargs": {
            "GlueVersion": glue.glue_version,
            "WorkerType": glue.worker_type,
            "NumberOfWorkers": glue.number_of_workers,
            "Timeout": glue.timeout_minutes,
            "Command": {"Name": "glueetl", "ScriptLocation": code.script_uri(job.script), "PythonVersion": "3"},
            "DefaultArguments": {
                "--job-language": "python",
                "--extra-py-files": code.py_files_uri,  # the retrain package and include/'s modules
                # The job lock's wheels staged with the code; --no-index: pip installs them and fetches nothing.
                "--additional-python-modules": ",".join(code.glue_wheel_uris),
                "--python-modules-installer-option": "--no-index",
                "--TempDir": f"s3://{aws.artifact_bucket}/tmp/glue/",
                "--enable-metrics": "true",
                "--enable-continuous-cloudwatch-log": "true",
            },
            "Tags": {"retrain:job": glue_job_name, "retrain:git_sha": code.git_sha},
        },
        "script_args": _arguments(job.arguments, f"{job.task} arguments"),
    }


def create_job_request(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``CreateJob`` request GlueJobHook sends for these operator kwargs (as in its create_glue_job_config)."""
    create = dict(kwargs["create_job_kwargs"])
    return {
        "Name": kwargs["job_name"],
        "Description": kwargs["job_desc"],
        "Role": kwargs["iam_role_arn"],
        "ExecutionProperty": {"MaxConcurrentRuns": 1},
        "Command": create.pop("Command"),
        "MaxRetries": kwargs["retry_limit"],
        **create,
        "LogUri": f"s3://{kwargs['s3_bucket']}/{LOG_PREFIX}{kwargs['job_name']}",
    }


def start_job_run_request(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``StartJobRun`` request GlueJobHook.initialize_job sends for these operator kwargs."""
    return {"JobName": kwargs["job_name"], "Arguments": dict(kwargs["script_args"])}
