"""docker-compose.yml cannot run here (no Docker engine): check its wiring instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pgdurable_proxy.dsn import parse_dsn

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_services_and_build() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "pgdurable"}
    build = services["pgdurable"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_pgdurable_waits_for_a_healthy_postgres_and_points_at_it() -> None:
    services = _compose()["services"]
    app = services["pgdurable"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    dsn = parse_dsn(app["environment"]["PGDURABLE_UPSTREAM"])
    assert dsn.host == "postgres" and dsn.port == 5432
    assert dsn.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert app["environment"]["PGDURABLE_HOST"] == "0.0.0.0"
    published = {p.rsplit(":", 1)[-1] for p in app["ports"]}
    assert {
        app["environment"]["PGDURABLE_PORT"],
        app["environment"]["PGDURABLE_HTTP_PORT"],
    } <= published
    assert all(p.startswith("127.0.0.1:") for p in app["ports"]), "published on loopback only"


def test_the_admin_port_is_published_on_the_hosts_loopback_only() -> None:
    """Inside the container it listens on every interface (else Docker cannot reach it);
    outside, only the host itself reaches the dashboard."""
    app = _compose()["services"]["pgdurable"]
    assert app["environment"]["PGDURABLE_HTTP_HOST"] == "0.0.0.0"
    http_port = app["environment"]["PGDURABLE_HTTP_PORT"]
    mappings = [p for p in app["ports"] if p.rsplit(":", 1)[-1] == http_port]
    assert mappings and all(p.startswith("127.0.0.1:") for p in mappings)


def test_scram_everywhere_comes_with_a_runner_secret() -> None:
    """Password-only upstream: steps can only log in through runner roles."""
    services = _compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert len(services["pgdurable"]["environment"]["PGDURABLE_SECRET"]) >= 16


def test_healthchecks_and_volume() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("postgres", "pgdurable"):
        assert services[name]["healthcheck"]["test"], name
    http_port = services["pgdurable"]["environment"]["PGDURABLE_HTTP_PORT"]
    # ready, not merely alive: PostgreSQL reachable, catalog current, engine running
    assert f":{http_port}/readyz" in " ".join(services["pgdurable"]["healthcheck"]["test"])
    volume, target = services["postgres"]["volumes"][0].split(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"


def test_dockerfile_installs_the_package_and_runs_pgdurable() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("pgdurable_proxy", "dsl", "engine"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["pgdurable"]' in dockerfile
    assert "pip install --no-cache-dir ." in dockerfile
    assert "127.0.0.1:8080/readyz" in dockerfile  # the image's health check is readiness
