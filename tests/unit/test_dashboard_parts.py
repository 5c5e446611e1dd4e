"""The dashboard's pure parts: the graph layout, cookie signatures, session expiry, the
Host header rule, --http-host, the stalled page's interval, and the files that must ship in
the package."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from fnmatch import fnmatch
from itertools import pairwise
from pathlib import Path

import pytest

from pgdurable_proxy.config import parse_settings
from pgdurable_proxy.dashboard.graph import MAX_DRAWN, GraphNode, children, layout
from pgdurable_proxy.dashboard.guard import host_allowed
from pgdurable_proxy.dashboard.pages import duration, parse_stalled_for
from pgdurable_proxy.dashboard.sessions import CookieSigner, SessionStore, TooManySessions

ROOT = Path(__file__).resolve().parents[2]


def _node(
    node_id: str,
    node_type: str = "SQL",
    left: str | None = None,
    right: str | None = None,
    query: str | None = "SELECT 1",
    status: str = "pending",
) -> GraphNode:
    return GraphNode(node_id, node_type, query, None, left, right, status)


def test_children_are_read_from_the_columns_and_the_config_of_each_type() -> None:
    assert children(_node("i", "IF", "t", "e", '{"condition_node": "c"}')) == (
        ("if", "c"),
        ("then", "t"),
        ("else", "e"),
    )
    assert children(_node("l", "LOOP", "b", None, '{"condition_node": "w"}')) == (
        ("body", "b"),
        ("while", "w"),
    )
    join3 = _node("j", "JOIN", "a", "b", '{"extra_nodes": ["c"]}')
    assert children(join3) == (("branch 1", "a"), ("branch 2", "b"), ("branch 3", "c"))
    assert children(_node("r", "RACE", "a", "b", None)) == (("branch 1", "a"), ("branch 2", "b"))
    assert children(_node("s")) == ()
    assert children(_node("l", "LOOP", "b", None, "not json")) == (("body", "b"),)


def test_a_tree_is_laid_out_in_layers_with_parents_over_their_children() -> None:
    nodes = [
        _node("root", "THEN", "a", "if", None, "running"),
        _node("a", status="completed"),
        _node("if", "IF", "t", "e", '{"condition_node": "c"}', "running"),
        _node("c", status="completed"),
        _node("t", "SIGNAL", query='{"signal_name": "go"}', status="running"),
        _node("e", status="skipped"),
        _node("stray"),  # no parent reaches it
    ]
    diagram = layout(nodes, "root")
    placed = {n.node_id: n for n in diagram.nodes}
    assert set(placed) == {"root", "a", "if", "c", "t", "e"}
    assert placed["root"].y < placed["a"].y == placed["if"].y < placed["c"].y
    assert [placed[k].x for k in ("c", "t", "e")] == sorted(placed[k].x for k in ("c", "t", "e"))
    assert placed["if"].x == placed["t"].x  # centred over its first and last child
    assert [n.node_id for n in diagram.nodes if n.active] == ["t"]  # the one running now
    assert placed["t"].subtitle == "wait for 'go'"
    assert {(e.label, e.y2) for e in diagram.edges} >= {("if", placed["c"].y)}
    assert diagram.width >= max(n.x for n in diagram.nodes) + diagram.box_width
    layer = sorted(n.x for n in diagram.nodes if n.y == placed["c"].y)
    assert all(b - a >= diagram.box_width for a, b in pairwise(layer))


def test_a_child_named_twice_is_drawn_once_and_big_graphs_are_not_drawn() -> None:
    twice = [_node("r", "JOIN", "a", "a", None), _node("a")]
    assert [n.node_id for n in layout(twice, "r").nodes].count("a") == 1
    many = [_node(f"{k:08x}") for k in range(MAX_DRAWN + 1)]
    assert not layout(many, "00000000").drawn
    assert not layout([_node("a")], "missing").drawn


def test_cookie_signatures_hold_only_for_their_key_and_purpose() -> None:
    signer = CookieSigner()
    signed = signer.sign("session", "abc")
    assert signer.unsign("session", signed) == "abc"
    assert signer.unsign("signin", signed) is None
    assert CookieSigner().unsign("session", signed) is None
    assert signer.unsign("session", signed[:-1] + ("x" if signed[-1] != "x" else "y")) is None
    assert signer.unsign("session", "abc") is None and signer.unsign("session", None) is None


class _Connection:
    """Stands in for a signed-in role's connection (the session store only closes it)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_sessions_end_when_idle_or_old_and_are_capped() -> None:
    now = [0.0]
    store = SessionStore(idle=10, lifetime=100, limit=2, clock=lambda: now[0])
    first, second = _Connection("a"), _Connection("b")
    one = store.add(first)  # type: ignore[arg-type]
    two = store.add(second)  # type: ignore[arg-type]
    with pytest.raises(TooManySessions):
        store.add(_Connection("c"))  # type: ignore[arg-type]
    for _ in range(10):  # `two` is used every 9 s, `one` never
        now[0] += 9
        assert await store.find(two.sid) is two
    assert await store.find(one.sid) is None and first.closed
    now[0] = 101  # too old, however busy
    await store.end_expired()
    assert second.closed and len(store) == 0


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("10.1.2.3", True),
        ("dashboard.internal:8080", False),
        ("127.0.0.1.attacker.example:8080", False),
        ("", False),
        ("[nonsense", False),
    ],
)
def test_the_host_header_must_name_an_address_or_localhost(host: str, allowed: bool) -> None:
    assert host_allowed(host, "127.0.0.1") is allowed


def test_the_admin_port_binds_loopback_unless_told_otherwise() -> None:
    assert parse_settings(["--host", "0.0.0.0"], {}).http_host == "127.0.0.1"
    assert parse_settings([], {"PGDURABLE_HTTP_HOST": "0.0.0.0"}).http_host == "0.0.0.0"
    assert parse_settings(["--http-host", "::1"], {}).http_host == "::1"


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("0s", timedelta(0)),
        ("30s", timedelta(seconds=30)),
        (" 5m ", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("365d", timedelta(days=365)),
        ("366d", None),
        ("999999d", None),
        ("5", None),
        ("-1m", None),
        ("5 m", None),
        ("1.5h", None),
        ("1w", None),
        ("5M", None),
        ("", None),
        ("٣m", None),  # a digit, but not an ASCII one
    ],
)
def test_the_stalled_page_takes_a_whole_number_of_one_unit(
    text: str, interval: timedelta | None
) -> None:
    assert parse_stalled_for(text) == interval


def test_durations_show_their_leading_units_only() -> None:
    assert duration(None) == ""
    assert duration(timedelta(seconds=7)) == "7s"
    assert duration(timedelta(minutes=1)) == "1m 0s"
    assert duration(timedelta(days=2, seconds=3)) == "2d 0h 0m 3s"


def test_the_dashboards_files_are_package_data() -> None:
    """Templates, static files and queries ship in the wheel, not only in a checkout."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["pgdurable_proxy.dashboard"]
    folder = ROOT / "pgdurable_proxy" / "dashboard"
    shipped = [p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert shipped
    for path in shipped:
        relative = path.relative_to(folder).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in globs), relative
