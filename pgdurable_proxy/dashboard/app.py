"""The dashboard's routes on the admin port: sign-in and sign-out, the instances page, one
instance's page, their JSON for the live refresh, cancel and signal, and the stalled page.

Who sees what is PostgreSQL's decision: a visitor signs in with a role and its password,
which PostgreSQL checks; every page then queries on that role's own connection, so
privileges and row-level security decide. Signed-out visitors get the sign-in page only.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from pgdurable_proxy.dashboard.graph import GraphNode, layout
from pgdurable_proxy.dashboard.guard import Handler, guarded, see_other, set_cookie
from pgdurable_proxy.dashboard.pages import (
    INSTANCE_STATUSES,
    STALLED_FOR_DEFAULT,
    Pages,
    diagram_context,
    instance_json,
    instance_row_json,
    parse_stalled_for,
)
from pgdurable_proxy.dashboard.queries import (
    ConnectionLost,
    InstancePage,
    InstanceView,
    QueryFailed,
    RoleConnection,
    SignInRefused,
)
from pgdurable_proxy.dashboard.sessions import CookieSigner, Session, SessionStore, TooManySessions

DsnFor = Callable[[str, str | None], str]  # role, password (None: none in the DSN) -> DSN
SessionHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "pgdurable_session"
SIGNIN_COOKIE = "pgdurable_signin"
PAGE_SIZE = 50
STALLED_ROWS = 500  # most waits the stalled page lists
MAX_FIELD = 1024  # longest role name, password, signal name accepted from a form
SIGN_INS_AT_ONCE = 8  # sign-ins waiting for PostgreSQL at once; more are refused
INSTANCE_ID = re.compile(r"[0-9a-f]{8}")
STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
SQLSTATE_HTTP = {"42501": 403, "42704": 404, "22023": 400, "22P02": 400, "57014": 504}


class Dashboard:
    """Mounts the dashboard on the admin app; `dsn_for` gives the upstream DSN of a role."""

    def __init__(self, dsn_for: DsnFor, bind_host: str = "127.0.0.1") -> None:
        self._dsn_for = dsn_for
        self._bind_host = bind_host
        self._signer = CookieSigner()
        self.sessions = SessionStore()
        self._pages = Pages()
        self._sign_ins = asyncio.Semaphore(SIGN_INS_AT_ONCE)
        folder = resources.files("pgdurable_proxy.dashboard") / "static"
        self._static = {name: (folder / name).read_bytes() for name in STATIC_TYPES}

    def mount(self, app: web.Application) -> None:
        """Add the dashboard's routes to `app` and tie its sessions to the app's life."""
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/", self._signed_in(self._instances_page)),
            ("GET", "/signin", self._signin_page),
            ("POST", "/signin", self._signin),
            ("POST", "/signout", self._signed_in(self._signout, form=True)),
            ("GET", "/instances/{instance_id}", self._signed_in(self._instance_page)),
            ("POST", "/instances/{instance_id}/cancel", self._signed_in(self._cancel, form=True)),
            ("POST", "/instances/{instance_id}/signal", self._signed_in(self._signal, form=True)),
            ("GET", "/stalled", self._signed_in(self._stalled_page)),
            ("GET", "/api/instances", self._signed_in(self._instances_json, api=True)),
            ("GET", "/api/instances/{instance_id}", self._signed_in(self._instance_json, api=True)),
            ("GET", "/static/{name}", self._static_file),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, guarded(handler, self._bind_host))
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, _: web.Application) -> None:
        self.sessions.start()

    async def _on_cleanup(self, _: web.Application) -> None:
        await self.sessions.stop()

    # -- what a dashboard request needs ----------------------------------------------------

    def _signed_in(
        self, handler: SessionHandler, *, api: bool = False, form: bool = False
    ) -> Handler:
        """Run `handler` only for a live session (and, for a form, its CSRF token):
        otherwise the sign-in page, or 401 for the JSON API. A lost connection ends the
        session."""

        async def signed_in(request: web.Request) -> web.StreamResponse:
            signed = request.cookies.get(SESSION_COOKIE)
            session = await self.sessions.find(self._signer.unsign("session", signed))
            if session is None:
                if api:
                    return web.json_response({"error": "sign in first"}, status=401)
                return see_other("/signin")
            if form:
                data = await request.post()
                token = data.get("csrf")
                if not session.csrf_matches(token if isinstance(token, str) else None):
                    return web.Response(status=403, text="missing or wrong CSRF token\n")
            try:
                return await handler(request, session)
            except ConnectionLost:
                await self.sessions.end(session)
                if api:
                    return web.json_response({"error": "connection lost"}, status=401)
                return see_other("/signin?lost=1")

        return signed_in

    # -- signing in and out --------------------------------------------------------------

    async def _signin_page(self, request: web.Request) -> web.StreamResponse:
        signed = request.cookies.get(SESSION_COOKIE)
        if await self.sessions.find(self._signer.unsign("session", signed)) is not None:
            return see_other("/")
        notes = {"lost": "The connection to PostgreSQL was lost; sign in again."}
        flash = next((text for key, text in notes.items() if key in request.query), None)
        return self._signin_form(request, flash=flash)

    def _signin_form(
        self, request: web.Request, status: int = 200, role: str = "", **context: Any
    ) -> web.Response:
        """The sign-in page, with a fresh token that its cookie must match (login CSRF)."""
        token = secrets.token_urlsafe(32)
        response = self._pages.render(
            "signin.html", status, signin_token=token, role_name=role, **context
        )
        set_cookie(request, response, SIGNIN_COOKIE, self._signer.sign("signin", token))
        return response

    async def _signin(self, request: web.Request) -> web.StreamResponse:
        data = await request.post()
        role, password, token = (str(data.get(k, "")) for k in ("role", "password", "csrf"))
        expected = self._signer.unsign("signin", request.cookies.get(SIGNIN_COOKIE))
        if expected is None or not secrets.compare_digest(token.encode(), expected.encode()):
            return self._signin_form(request, 403, role, error="The sign-in form expired.")
        if not role or len(role) > MAX_FIELD or len(password) > MAX_FIELD:
            return self._signin_form(request, 400, error="Give a role name and its password.")
        if self._sign_ins.locked():
            return self._signin_form(request, 503, role, error="Too many sign-ins at once.")
        try:
            async with self._sign_ins:
                connection = await RoleConnection.open(self._dsn_for(role, None), password)
        except SignInRefused as exc:
            return self._signin_form(
                request, 401, role, error=f"PostgreSQL refused the sign-in: {exc}"
            )
        previous = request.cookies.get(SESSION_COOKIE)  # one browser, one session
        if (old := await self.sessions.find(self._signer.unsign("session", previous))) is not None:
            await self.sessions.end(old)
        try:
            session = self.sessions.add(connection)
        except TooManySessions as exc:
            await connection.close()
            return self._signin_form(request, 503, role, error=str(exc))
        response = see_other("/")
        set_cookie(request, response, SESSION_COOKIE, self._signer.sign("session", session.sid))
        response.del_cookie(SIGNIN_COOKIE, path="/")
        return response

    async def _signout(self, request: web.Request, session: Session) -> web.StreamResponse:
        await self.sessions.end(session)
        response = see_other("/signin")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # -- the pages -----------------------------------------------------------------------

    async def _instances_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        status, label, after = _list_filters(request)
        filters = {k: v for k, v in (("status", status), ("label", label)) if v}
        context: dict[str, Any] = {
            "session": session,
            "statuses": INSTANCE_STATUSES,
            "status": status,
            "label": label,
            "after": after,
            "first_url": "/?" + urlencode(filters),
            "refresh_url": "/api/instances?" + urlencode({**filters, **_opt("after", after)}),
            "flash": session.take_flash(),
        }
        try:
            page = await session.connection.instances(status, label, after, PAGE_SIZE)
        except QueryFailed as exc:
            return self._pages.render(
                "instances.html",
                _http_status(exc),
                page=InstancePage((), None),
                next_url="",
                error=str(exc),
                **context,
            )
        next_url = "/?" + urlencode({**filters, **_opt("after", page.next_cursor)})
        return self._pages.render("instances.html", page=page, next_url=next_url, **context)

    async def _instances_json(self, request: web.Request, session: Session) -> web.StreamResponse:
        status, label, after = _list_filters(request)
        try:
            page = await session.connection.instances(status, label, after, PAGE_SIZE)
        except QueryFailed as exc:
            return web.json_response({"error": str(exc)}, status=_http_status(exc))
        rows = [instance_row_json(row) for row in page.rows]
        return web.json_response({"rows": rows, "next_cursor": page.next_cursor})

    async def _instance_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        instance_id = request.match_info["instance_id"]
        try:
            view = await _view(session.connection, instance_id)
        except QueryFailed as exc:
            return self._message(session, _http_status(exc), str(exc))
        if view is None:
            return self._message(session, 404, "No such instance")
        graph = [
            GraphNode(
                n.node_id,
                n.node_type,
                n.query,
                n.result_name,
                n.left_node,
                n.right_node,
                n.inferred_status,
            )
            for n in view.nodes
        ]
        return self._pages.render(
            "instance.html",
            session=session,
            flash=session.take_flash(),
            instance=view.instance,
            nodes=view.nodes,
            executions=view.executions,
            explain=view.explain,
            **diagram_context(layout(graph, view.instance.root_node)),
        )

    async def _instance_json(self, request: web.Request, session: Session) -> web.StreamResponse:
        try:
            view = await _view(session.connection, request.match_info["instance_id"])
        except QueryFailed as exc:
            return web.json_response({"error": str(exc)}, status=_http_status(exc))
        if view is None:
            return web.json_response({"error": "no such instance"}, status=404)
        return web.json_response(instance_json(view))

    async def _stalled_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        text = request.query.get("for", "").strip()[:MAX_FIELD] or STALLED_FOR_DEFAULT
        context: dict[str, Any] = {"session": session, "stalled_for": text, "truncated": False}
        stalled_for = parse_stalled_for(text)
        if stalled_for is None:
            error = "Give how long as a whole number of s, m, h or d (30s, 5m, 1h), up to 365d."
            return self._pages.render("stalled.html", 400, rows=(), error=error, **context)
        try:
            rows = await session.connection.stalled(stalled_for, STALLED_ROWS + 1)
        except QueryFailed as exc:
            return self._pages.render(
                "stalled.html", _http_status(exc), rows=(), error=str(exc), **context
            )
        context["truncated"] = len(rows) > STALLED_ROWS
        return self._pages.render(
            "stalled.html", rows=rows[:STALLED_ROWS], flash=session.take_flash(), **context
        )

    def _message(self, session: Session, status: int, heading: str) -> web.Response:
        return self._pages.render(
            "message.html", status, session=session, heading=heading, flash=session.take_flash()
        )

    # -- what changes an instance ----------------------------------------------------------

    async def _cancel(self, request: web.Request, session: Session) -> web.StreamResponse:
        instance_id = request.match_info["instance_id"]
        return await self._act(instance_id, session, lambda: session.connection.cancel(instance_id))

    async def _signal(self, request: web.Request, session: Session) -> web.StreamResponse:
        instance_id = request.match_info["instance_id"]
        data = await request.post()
        name, payload = str(data.get("name", "")), str(data.get("data", "") or "{}")
        if len(name) > MAX_FIELD:
            return web.Response(status=400, text="signal name too long\n")
        return await self._act(
            instance_id,
            session,
            lambda: session.connection.signal(instance_id, name, payload),
            f"Signal '{name}' sent: ",
        )

    async def _act(
        self,
        instance_id: str,
        session: Session,
        action: Callable[[], Awaitable[str]],
        prefix: str = "",
    ) -> web.StreamResponse:
        """Run df.cancel/df.signal as the role; PostgreSQL's answer is the next page's
        message."""
        if not INSTANCE_ID.fullmatch(instance_id):
            return self._message(session, 404, "No such instance")
        try:
            session.flash = prefix + await action()
        except QueryFailed as exc:
            session.flash = f"PostgreSQL refused: {exc}"
        return see_other(f"/instances/{instance_id}")

    async def _static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._static:
            return web.Response(status=404, text="not found\n")
        response = web.Response(body=self._static[name], content_type=STATIC_TYPES[name])
        response.headers["Cache-Control"] = "no-cache"
        return response


async def _view(connection: RoleConnection, instance_id: str) -> InstanceView | None:
    """The instance's view; None for an id that cannot be an instance's."""
    return await connection.view(instance_id) if INSTANCE_ID.fullmatch(instance_id) else None


def _list_filters(request: web.Request) -> tuple[str | None, str | None, str | None]:
    """status (one of the statuses, else none), label and the page cursor of a list URL."""
    status = request.query.get("status") or None
    label = request.query.get("label") or None
    after = request.query.get("after") or None
    return (status if status in INSTANCE_STATUSES else None), label, after


def _opt(key: str, value: str | None) -> dict[str, str]:
    return {key: value} if value else {}


def _http_status(exc: QueryFailed) -> int:
    return SQLSTATE_HTTP.get(exc.sqlstate, 500)
