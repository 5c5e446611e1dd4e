"""The public pg_durable walkthrough through pgdurable with psql: the project's own script of
the blog post (tests/acceptance/walkthrough/blog_walkthrough.sql), always, and the shared
spec's walkthrough.sql, unchanged, when ../shared is beside this checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clusters import run_psql
from tests.support.proxy import ProxyProcess

BLOG_WALKTHROUGH = Path(__file__).resolve().parent / "walkthrough" / "blog_walkthrough.sql"
BLOG_PASSED = "blog walkthrough: all checks passed"  # the script's last line
WALKTHROUGH = Path(__file__).resolve().parents[3] / "shared" / "spec" / "walkthrough.sql"
SECTION_3 = "-- 3. Parallel branches"


def _sections_0_to_2() -> str:
    text = WALKTHROUGH.read_text()
    cut = text.index(SECTION_3)
    cut = text.rindex("-- ----", 0, cut)  # keep the file exactly as written up to section 3
    return text[:cut] + "\\echo 'walkthrough sections 0-2 passed'\n"


def test_blog_walkthrough(proxy: ProxyProcess) -> None:
    """The blog's statements in its order, each followed by checks of what the blog shows."""
    result = run_psql(proxy.dsn(), "", "-f", str(BLOG_WALKTHROUGH), check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.rstrip().endswith(BLOG_PASSED), result.stdout[-3000:]


@pytest.mark.skipif(not WALKTHROUGH.exists(), reason=f"{WALKTHROUGH} is not beside this checkout")
def test_walkthrough_sections_0_to_2(proxy: ProxyProcess) -> None:
    result = run_psql(proxy.dsn(), _sections_0_to_2(), check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "walkthrough sections 0-2 passed" in result.stdout


@pytest.mark.skipif(not WALKTHROUGH.exists(), reason=f"{WALKTHROUGH} is not beside this checkout")
def test_walkthrough_whole_file_unchanged(proxy: ProxyProcess) -> None:
    result = run_psql(proxy.dsn(), "", "-f", str(WALKTHROUGH), check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "walkthrough: all checks passed" in result.stdout
