"""The dashboard on the admin port, on a password-only cluster (scram-sha-256 for every
connection): every sign-in is checked by PostgreSQL, and pgdurable's admin is a
non-superuser that owns the catalog (so it sees every instance).

Browserless tests check the security properties over HTTP on both PostgreSQL versions;
the browser tests drive Debian's headless Chromium through selenium.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.clusters import Flavor
from tests.support.dashboard import (
    Visitor,
    chromium_missing,
    start_chromium,
    start_waiting,
    status_of,
)
from tests.support.managed import ADMIN, ManagedCluster, user_password
from tests.support.proxy import ProxyProcess

ALICE, BOB, NOBODY = "dash_alice", "dash_bob", "dash_nobody"
XSS_LABEL = "<script>alert('label')</script>"


@dataclass(frozen=True)
class People:
    """Two workflow owners with a waiting instance each, and where to reach them."""

    proxy: ProxyProcess
    alice_instance: str
    bob_instance: str

    def dsn(self, role: str) -> str:
        return self.proxy.dsn(role, user_password(role))

    def visitor(self) -> Visitor:
        return Visitor(self.proxy.http_port)

    def signed_in(self, role: str) -> Visitor:
        visitor = self.visitor()
        assert visitor.sign_in(role, user_password(role)).status == 303
        return visitor


@pytest.fixture(scope="module")
def people(managed: ManagedCluster, managed_proxy: ProxyProcess) -> People:
    for role in (ALICE, BOB, NOBODY):
        managed.create_user(role)
    with psycopg.connect(managed_proxy.dsn(ADMIN, user_password(ADMIN)), autocommit=True) as c:
        for role in (ALICE, BOB):
            c.execute("SELECT df.grant_usage(%s)", (role,))
    alice = start_waiting(managed_proxy.dsn(ALICE, user_password(ALICE)), XSS_LABEL)
    bob = start_waiting(managed_proxy.dsn(BOB, user_password(BOB)), "bob's secret label")
    return People(managed_proxy, alice, bob)


def test_a_signed_out_visitor_gets_the_sign_in_page_and_nothing_else(people: People) -> None:
    visitor = people.visitor()
    for path in ("/", f"/instances/{people.alice_instance}"):
        reply = visitor.request("GET", path)
        assert (reply.status, reply.headers["Location"], reply.body) == (303, "/signin", "")
    for path in ("/api/instances", f"/api/instances/{people.alice_instance}"):
        reply = visitor.request("GET", path)
        assert (reply.status, reply.body) == (401, '{"error": "sign in first"}')
    page = visitor.request("GET", "/signin")
    assert page.status == 200 and 'id="signin-form"' in page.body
    for secret in (people.alice_instance, people.bob_instance, "alert", "secret label"):
        assert secret not in page.body
    # a session cookie we did not sign, or one naming no session, is no session
    for forged in ("x", f"{'a' * 43}.{'b' * 43}", visitor_cookie_for_another_process()):
        visitor.cookies["pgdurable_session"] = forged
        assert visitor.request("GET", "/api/instances").status == 401
    reply = visitor.request("POST", f"/instances/{people.alice_instance}/cancel", {"csrf": "x"})
    assert reply.status == 303 and reply.headers["Location"] == "/signin"
    assert status_of(people.dsn(ADMIN), people.alice_instance) == "running"


def visitor_cookie_for_another_process() -> str:
    """A well-formed cookie signed under some other key."""
    from pgdurable_proxy.dashboard.sessions import CookieSigner

    return CookieSigner().sign("session", "a" * 43)


def test_postgresql_refuses_a_wrong_password(people: People) -> None:
    visitor = people.visitor()
    reply = visitor.sign_in(ALICE, "not her password")
    assert reply.status == 401
    assert f"password authentication failed for user &#34;{ALICE}&#34;" in reply.body
    assert reply.cookie("pgdurable_session") is None
    assert visitor.request("GET", "/api/instances").status == 401
    # the sign-in form's own token is checked too (login CSRF)
    form = {"role": ALICE, "password": user_password(ALICE), "csrf": "forged"}
    assert people.visitor().request("POST", "/signin", form).status == 403


def test_a_user_sees_only_their_own_instances(people: People) -> None:
    alice = people.signed_in(ALICE)
    listed = {row["instance_id"] for row in _json(alice, "/api/instances")["rows"]}
    assert people.alice_instance in listed and people.bob_instance not in listed
    page = alice.request("GET", "/")
    assert people.alice_instance in page.body and people.bob_instance not in page.body
    for path in (f"/instances/{people.bob_instance}", f"/api/instances/{people.bob_instance}"):
        reply = alice.request("GET", path)
        assert reply.status == 404 and "secret label" not in reply.body
    # cancelling Bob's instance: PostgreSQL says no, and it keeps running
    token = alice.csrf("/")
    reply = alice.request("POST", f"/instances/{people.bob_instance}/cancel", {"csrf": token})
    assert reply.status == 303
    answer = alice.request("GET", reply.headers["Location"])
    assert answer.status == 404 and "Instance not found or access denied" in answer.body
    assert status_of(people.dsn(ADMIN), people.bob_instance) == "running"
    # a role without df usage signs in, and PostgreSQL's refusal is all it sees
    nobody = people.signed_in(NOBODY)
    reply = nobody.request("GET", "/")
    assert reply.status == 403 and "permission denied for schema df" in reply.body


def test_the_admin_sees_every_owners_instances(people: People) -> None:
    admin = people.signed_in(ADMIN)
    rows = _json(admin, "/api/instances")["rows"]
    owners = {row["instance_id"]: row["owner"] for row in rows}
    assert owners[people.alice_instance] == ALICE and owners[people.bob_instance] == BOB
    page = admin.request("GET", f"/instances/{people.bob_instance}")
    assert page.status == 200 and "bob&#39;s secret label" in page.body


def test_posts_need_the_sessions_csrf_token_and_the_same_origin(people: People) -> None:
    instance = start_waiting(people.dsn(ALICE), "csrf")
    alice = people.signed_in(ALICE)
    cancel = f"/instances/{instance}/cancel"
    assert alice.request("POST", cancel, {}).status == 403
    assert alice.request("POST", cancel, {"csrf": "wrong"}).status == 403
    token = alice.csrf(f"/instances/{instance}")
    other_site = {"Origin": "http://evil.example"}
    assert alice.request("POST", cancel, {"csrf": token}, other_site).status == 403
    # another session's token is not this one's
    assert people.signed_in(ALICE).request("POST", cancel, {"csrf": token}).status == 403
    assert status_of(people.dsn(ADMIN), instance) == "running"
    reply = alice.request("POST", cancel, {"csrf": token})
    assert (reply.status, reply.headers["Location"]) == (303, f"/instances/{instance}")
    assert status_of(people.dsn(ADMIN), instance) == "cancelled"
    assert f"Instance {instance} cancelled" in alice.request("GET", f"/instances/{instance}").body


def test_cookies_are_signed_httponly_and_same_site_strict(people: People) -> None:
    visitor = people.visitor()
    reply = visitor.sign_in(ALICE, user_password(ALICE))
    cookie = reply.cookie("pgdurable_session")
    assert cookie is not None
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    value = visitor.cookies["pgdurable_session"]
    assert visitor.request("GET", "/api/instances").status == 200
    tampered = value[:-1] + ("A" if value[-1] != "A" else "B")
    visitor.cookies["pgdurable_session"] = tampered
    assert visitor.request("GET", "/api/instances").status == 401
    headers = visitor.request("GET", "/signin").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_a_foreign_host_name_is_refused(people: People) -> None:
    """A page of another site whose name was rebound to 127.0.0.1 gets nothing."""
    visitor = people.signed_in(ALICE)
    rebound = {"Host": f"attacker.example:{people.proxy.http_port}"}
    for path in ("/signin", "/api/instances"):
        assert visitor.request("GET", path, headers=rebound).status == 421
    assert visitor.request("GET", "/api/instances").status == 200
    assert visitor.request("GET", "/healthz", headers=rebound).status == 200


def test_labels_queries_and_results_are_escaped(people: People) -> None:
    alice = people.signed_in(ALICE)
    with psycopg.connect(people.dsn(ALICE), autocommit=True) as conn:
        row = conn.execute(
            "SELECT df.start($$SELECT '<img src=x onerror=alert(1)>' AS html$$, '<b>bold</b>')"
        ).fetchone()
        assert row is not None
        conn.execute("SELECT df.await_instance(%s)", (row[0],))
    for path in ("/", f"/instances/{row[0]}", f"/instances/{people.alice_instance}"):
        body = alice.request("GET", path).body
        for raw in ("<img src=x", "<b>bold", "<script>alert("):
            assert raw not in body
    page = alice.request("GET", f"/instances/{row[0]}").body
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_signing_out_ends_the_session_and_its_connection(people: People) -> None:
    alice = people.signed_in(ALICE)
    first = dict(alice.cookies)
    # signing in again from a form left open in another tab replaces the session
    tab = people.visitor()
    form = {"role": ALICE, "password": user_password(ALICE), "csrf": tab.csrf("/signin")}
    alice.cookies["pgdurable_signin"] = tab.cookies["pgdurable_signin"]
    assert alice.request("POST", "/signin", form).status == 303
    replayed = people.visitor()
    replayed.cookies = first
    assert replayed.request("GET", "/api/instances").status == 401
    old = dict(alice.cookies)
    assert _dashboard_connections(people, ALICE) >= 1
    before = _dashboard_connections(people, ALICE)
    reply = alice.request("POST", "/signout", {"csrf": alice.csrf("/")})
    assert (reply.status, reply.headers["Location"]) == (303, "/signin")
    alice.cookies = old  # the cookie, replayed, no longer names a session
    assert alice.request("GET", "/api/instances").status == 401
    deadline = time.monotonic() + 5
    while _dashboard_connections(people, ALICE) != before - 1:
        assert time.monotonic() < deadline, "the session's connection is still open"
        time.sleep(0.02)


def test_the_stalled_page_lists_the_roles_waiting_instances_and_what_they_wait_for(
    people: People,
) -> None:
    assert people.visitor().request("GET", "/stalled?for=0s").headers["Location"] == "/signin"
    alice = people.signed_in(ALICE)
    page = alice.request("GET", "/stalled?for=0s")
    assert page.status == 200 and 'href="/stalled"' in page.body
    row = _stalled_row(page.body, people.alice_instance)
    assert f'href="/instances/{people.alice_instance}"' in row
    assert '<td class="wait-kind">signal</td>' in row and "signal &#39;go&#39;" in row
    assert people.bob_instance not in page.body and "<script>alert(" not in page.body
    bob = people.signed_in(BOB).request("GET", "/stalled?for=0s").body
    assert people.bob_instance in bob and people.alice_instance not in bob
    # the default is five minutes: the instance started a moment ago is not stalled yet
    assert people.alice_instance not in alice.request("GET", "/stalled").body
    for bad in ("5", "-1m", "5+m", "1w", "366d", "1m%3BSELECT"):
        reply = alice.request("GET", f"/stalled?for={bad}")
        assert reply.status == 400 and "whole number of s, m, h or d" in reply.body
    assert people.signed_in(NOBODY).request("GET", "/stalled").status == 403


def _stalled_row(body: str, instance: str) -> str:
    import re

    found = re.search(rf'<tr data-instance="{instance}">(.*?)</tr>', body, re.DOTALL)
    assert found is not None, body
    return found.group(1)


def _dashboard_connections(people: People, role: str) -> int:
    with psycopg.connect(people.dsn(ADMIN), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename = %s AND application_name = 'pgdurable dashboard'",
            (role,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _json(visitor: Visitor, path: str) -> Any:
    import json

    reply = visitor.request("GET", path)
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


# -- in a real browser ------------------------------------------------------------------


# What the browser adds (forms, the script, the SVG, the live refresh) does not depend on
# PostgreSQL's version, and all that does (the queries, row-level security, the SCRAM
# sign-in) the tests above check on both: the browser runs against one, to save ~12 s.
BROWSER_FLAVOR = "pg18-wheel"


@pytest.fixture(scope="module")
def browser(flavor: Flavor) -> Iterator[Any]:
    """One headless Chromium for the module (starting one takes about a second)."""
    if flavor.name != BROWSER_FLAVOR:
        pytest.skip(f"the browser tests run on {BROWSER_FLAVOR} only")
    missing = chromium_missing()
    if missing is not None:
        pytest.skip(missing)
    driver = start_chromium()
    yield driver
    driver.quit()


def _shot(browser: Any, name: str) -> None:
    """Save a screenshot when PGDURABLE_DASHBOARD_SHOTS names a directory."""
    folder = os.environ.get("PGDURABLE_DASHBOARD_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def _sign_in(browser: Any, base: str, role: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/signin")
    browser.find_element(By.ID, "signin-role").send_keys(role)
    browser.find_element(By.ID, "signin-password").send_keys(password)
    browser.find_element(By.ID, "signin-submit").click()


def _until(browser: Any, condition: Any, timeout: float = 8.0) -> Any:
    """Wait for `condition` (a page being replaced meanwhile is waited out too)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, timeout, poll_frequency=0.05, ignored_exceptions=ignored)
    return wait.until(condition)


def _signal_node(people: People, instance: str) -> str:
    with psycopg.connect(people.dsn(ALICE), autocommit=True) as conn:
        row = conn.execute(
            "SELECT node_id FROM df.instance_nodes(%s) WHERE node_type = 'SIGNAL'", (instance,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_in_a_browser_a_user_opens_a_running_instance_and_cancels_it(
    browser: Any, people: People
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    instance = start_waiting(people.dsn(ALICE), XSS_LABEL)
    base = f"http://127.0.0.1:{people.proxy.http_port}"
    browser.delete_all_cookies()
    browser.get(f"{base}/instances/{instance}")  # signed out: the sign-in page, nothing else
    assert browser.current_url == f"{base}/signin"
    assert instance not in browser.page_source
    _sign_in(browser, base, ALICE, user_password(ALICE))
    rows = _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-instance]"))
    listed = {row.get_attribute("data-instance") for row in rows}
    assert {instance, people.alice_instance} <= listed and people.bob_instance not in listed
    label = browser.find_element(By.CSS_SELECTOR, f'tr[data-instance="{instance}"] .label')
    assert label.text == XSS_LABEL  # shown as text, never run
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    # the live refresh brings an instance started after the page loaded
    newer = start_waiting(people.dsn(ALICE), "started after the page loaded")
    _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-instance="{newer}"]'))
    _shot(browser, "instances")

    browser.find_element(By.LINK_TEXT, instance).click()
    active = _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "svg .node.active"))
    assert [node.get_attribute("data-node") for node in active] == [_signal_node(people, instance)]
    assert active[0].get_attribute("data-status") == "running"
    first = browser.find_element(By.CSS_SELECTOR, "svg .node.status-completed")
    first.click()
    detail = browser.find_element(
        By.CSS_SELECTOR, f'.node-detail[data-node="{first.get_attribute("data-node")}"]'
    )
    assert detail.is_displayed() and '"one": 1' in detail.text
    active[0].click()
    _shot(browser, "instance")
    browser.find_element(By.ID, "cancel").click()
    _until(browser, lambda b: "cancelled" in b.find_element(By.ID, "instance-status").text)
    assert f"Instance {instance} cancelled" in browser.find_element(By.ID, "flash").text
    assert status_of(people.dsn(ADMIN), instance) == "cancelled"

    # the instance page follows the engine: a signal sent elsewhere completes it
    browser.get(f"{base}/instances/{newer}")
    _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "svg .node.active"))
    with psycopg.connect(people.dsn(ALICE), autocommit=True) as conn:
        conn.execute("SELECT df.signal(%s, 'go')", (newer,))
    _until(browser, lambda b: b.find_element(By.ID, "instance-status").text == "completed")
    assert browser.find_elements(By.CSS_SELECTOR, "svg .node.active") == []

    # another owner's instance id shows nothing of it
    browser.get(f"{base}/instances/{people.bob_instance}")
    assert "No such instance" in browser.find_element(By.TAG_NAME, "h1").text
    assert "secret label" not in browser.page_source


def test_in_a_browser_the_admin_sees_every_owners_instances(people: People, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base = f"http://127.0.0.1:{people.proxy.http_port}"
    browser.delete_all_cookies()
    _sign_in(browser, base, ADMIN, "a wrong password")
    error = _until(browser, lambda b: b.find_element(By.ID, "error").text)
    assert f'password authentication failed for user "{ADMIN}"' in error
    _sign_in(browser, base, ADMIN, user_password(ADMIN))
    rows = _until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-instance]"))
    listed = {row.get_attribute("data-instance") for row in rows}
    assert {people.alice_instance, people.bob_instance} <= listed
    assert browser.find_element(By.ID, "role").text == ADMIN
    _shot(browser, "instances-admin")
    browser.find_element(By.ID, "sign-out").click()
    _until(browser, lambda b: b.find_elements(By.ID, "signin-form"))
    browser.get(f"{base}/")
    assert browser.current_url == f"{base}/signin"
