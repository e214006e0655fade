"""The REST client checks a parked worker's pid only on the host that recorded it."""

from __future__ import annotations

from airflow.utils.net import get_hostname

from retrain_tools.airflow_api import is_this_host


def test_the_hostname_airflow_records_here_is_this_host():
    assert is_this_host(get_hostname())  # what a worker on this machine writes into the task instance


def test_another_host_or_none_is_not_this_host():
    """A Celery worker on another machine, or in a container (its hostname is the container id)."""
    assert not is_this_host("ip-10-0-3-17.ec2.internal")
    assert not is_this_host("3f9c2a71b0de")
    assert not is_this_host(None) and not is_this_host("")
