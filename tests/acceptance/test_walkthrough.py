"""The public pg_durable walkthrough through pgdurable with psql: the project's own script of
the blog post (tests/acceptance/walkthrough/blog_walkthrough.sql), always, and the shared
spec's walkthrough.sql, unchanged, when ../shared is beside this checkout.

The shared walkthrough sleeps 55 s, as the original session did; on the first flavor it runs
on a password-only cluster too, at the same time, so the suite waits for those sleeps once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.clusters import FLAVORS, Flavor, psql_path, run_psql
from tests.support.managed import ADMIN
from tests.support.proxy import ProxyProcess

BLOG_WALKTHROUGH = Path(__file__).resolve().parent / "walkthrough" / "blog_walkthrough.sql"
BLOG_PASSED = "blog walkthrough: all checks passed"  # the script's last line
WALKTHROUGH = Path(__file__).resolve().parents[3] / "shared" / "spec" / "walkthrough.sql"
SECTION_3 = "-- 3. Parallel branches"


def test_blog_walkthrough(proxy: ProxyProcess) -> None:
    """The blog's statements in its order, each followed by checks of what the blog shows."""
    result = run_psql(proxy.dsn(), "", "-f", str(BLOG_WALKTHROUGH), check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().endswith(BLOG_PASSED), result.stdout[-3000:]


def _start_psql(dsn: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The walkthrough file through the wheel's psql, running in the background."""
    return subprocess.Popen(
        [str(psql_path()), dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(WALKTHROUGH)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.skipif(not WALKTHROUGH.exists(), reason=f"{WALKTHROUGH} is not beside this checkout")
def test_walkthrough_whole_file_unchanged(
    flavor: Flavor, proxy: ProxyProcess, request: pytest.FixtureRequest
) -> None:
    """Unchanged, through pgdurable; on the first flavor also on a password-only cluster,
    where franck exists beforehand with a password, as a managed service needs."""
    runs = {"trust cluster": _start_psql(proxy.dsn())}
    if flavor == FLAVORS[0]:
        managed = request.getfixturevalue("managed")
        managed_proxy = request.getfixturevalue("managed_proxy")
        managed.create_user("franck")
        runs["password-only cluster"] = _start_psql(
            managed_proxy.dsn(ADMIN), env=managed.psql_env()
        )
    try:
        outputs = {name: run.communicate(timeout=150) for name, run in runs.items()}
    finally:
        for run in runs.values():
            run.kill()
    for name, (stdout, stderr) in outputs.items():
        assert runs[name].returncode == 0, f"{name}: {stdout[-3000:]}{stderr[-3000:]}"
        assert "walkthrough: all checks passed" in stdout, f"{name}: {stdout[-3000:]}"
