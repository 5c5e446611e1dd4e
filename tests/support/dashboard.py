"""Clients of the dashboard: a browserless HTTP visitor with its own cookies, and headless
Chromium driven by selenium (Debian's chromium and chromium-driver)."""

from __future__ import annotations

import http.client
import http.cookies
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
HOW_TO_GET_CHROMIUM = "as root: apt-get install chromium chromium-driver (.ci/run does it)"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, redirects not followed."""

    status: int
    headers: http.client.HTTPMessage
    body: str

    def cookie(self, name: str) -> str | None:
        """The Set-Cookie header that sets `name`, whole."""
        found = [v for v in self.headers.get_all("Set-Cookie") or [] if v.startswith(name + "=")]
        return found[0] if found else None


class Visitor:
    """A browserless client of the admin port that keeps its cookies, like a browser."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request; Set-Cookie answers update the jar."""
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read().decode())
        finally:
            connection.close()
        for header in reply.headers.get_all("Set-Cookie") or []:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def csrf(self, path: str) -> str:
        """The CSRF token in the form of the page at `path`."""
        page = self.request("GET", path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert found is not None, page.body
        return found.group(1)

    def sign_in(self, role: str, password: str) -> Reply:
        """Fill in and send the sign-in form."""
        form = {"role": role, "password": password, "csrf": self.csrf("/signin")}
        return self.request("POST", "/signin", form)


def start_waiting(dsn: str, label: str, signal: str = "go") -> str:
    """Start `SELECT 1 |=> 'first' ~> wait for <signal>` and wait until the wait runs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT df.start('SELECT 1 AS one' |=> 'first' ~> df.wait_for_signal(%s), %s)",
            (signal, label),
        ).fetchone()
        assert row is not None
        instance = str(row[0])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT node_id FROM df.instance_nodes(%s) "
                "WHERE node_type = 'SIGNAL' AND status = 'running'",
                (instance,),
            ).fetchone()
            if waiting is not None:
                return instance
            time.sleep(0.02)
    raise AssertionError(f"the wait of {instance} did not start within 15 s")


def status_of(dsn: str, instance: str) -> str:
    """df.instances' status, read as the admin."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT status FROM df.instances WHERE id = %s", (instance,)).fetchone()
    assert row is not None
    return str(row[0])


def chromium_missing() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    if not any(shutil.which(name) for name in CHROMIUM_NAMES):
        return f"Chromium is not installed ({HOW_TO_GET_CHROMIUM})"
    if shutil.which("chromedriver") is None:
        return f"chromedriver is not installed ({HOW_TO_GET_CHROMIUM})"
    return None


def start_chromium() -> Any:
    """A headless Chromium under selenium, with the system's browser and driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = next(path for name in CHROMIUM_NAMES if (path := shutil.which(name)))
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
    ):
        options.add_argument(argument)
    driver = shutil.which("chromedriver")
    assert driver is not None
    return webdriver.Chrome(options=options, service=Service(str(Path(driver))))
