"""Where the project's Airflow runs: Airflow's own [api] base_url and port, for the CLI, the demo and alert links."""

from __future__ import annotations

import pytest

from retrain_tools.airflow_api import configured_api_url

GENERATED = """[core]
dags_folder = /somewhere/dags

[api]
# The base url of the API server.
# Example: base_url = https://my-airflow.company.com
# base_url = 
host = 0.0.0.0
port = 8080
workers = 1

[kerberos]
port = 21000
"""


@pytest.mark.parametrize(
    ("environ", "cfg", "url"),
    [
        ({}, None, "http://localhost:8080"),  # nothing configured: Airflow's default
        ({}, GENERATED, "http://localhost:8080"),  # the file Airflow writes
        ({}, GENERATED.replace("port = 8080", "port = 8093"), "http://localhost:8093"),  # [api] port
        (
            {},
            GENERATED.replace("# base_url = ", "base_url = http://airflow.internal:9000/"),
            "http://airflow.internal:9000",
        ),
        (
            {},
            GENERATED.replace("# base_url = ", "base_url = /airflow").replace("port = 8080", "port = 8093"),
            "http://localhost:8093/airflow",
        ),
        (
            {"AIRFLOW__API__PORT": "8094"},
            GENERATED.replace("port = 8080", "port = 8093"),
            "http://localhost:8094",
        ),  # the environment first
        ({"AIRFLOW__API__BASE_URL": "http://127.0.0.1:8095"}, GENERATED, "http://127.0.0.1:8095"),
    ],
)
def test_the_api_url_is_read_from_airflows_own_config(tmp_path, environ, cfg, url):
    if cfg is not None:
        (tmp_path / "airflow.cfg").write_text(cfg)
    assert configured_api_url({"AIRFLOW_HOME": str(tmp_path), **environ}) == url


def test_airflow_config_names_another_file(tmp_path):
    (tmp_path / "elsewhere.cfg").write_text("[api]\nport = 8096\n")
    assert (
        configured_api_url({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_CONFIG": str(tmp_path / "elsewhere.cfg")})
        == "http://localhost:8096"
    )


def test_the_demo_writes_its_port_into_airflows_config_where_the_cli_reads_it(tmp_path):
    from demo import with_api_options

    options = {"port": "8093", "base_url": "http://localhost:8093"}
    text = with_api_options(GENERATED, options)
    assert (
        "port = 8093\n" in text and "base_url = http://localhost:8093\n" in text and "port = 21000\n" in text
    )  # kerberos untouched
    assert "# Example: base_url = https://my-airflow.company.com\n" in text and text.count("\n") == GENERATED.count(
        "\n"
    )  # in place
    assert with_api_options(text, options) == text
    (tmp_path / "airflow.cfg").write_text(text)
    assert configured_api_url({"AIRFLOW_HOME": str(tmp_path)}) == "http://localhost:8093"
    (tmp_path / "airflow.cfg").write_text(
        with_api_options("[core]\nload_examples = False", options)
    )  # no [api] section yet
    assert configured_api_url({"AIRFLOW_HOME": str(tmp_path)}) == "http://localhost:8093"
