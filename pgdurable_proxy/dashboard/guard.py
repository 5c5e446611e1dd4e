"""What every dashboard request goes through: the Host header rule (against DNS
rebinding), same-origin POSTs, the security headers; and the cookies and redirects the
dashboard sends."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes browsers send Origin: null
}


def guarded(handler: Handler, bind_host: str) -> Handler:
    """`handler`, behind the Host and origin checks, with the security headers added."""

    async def guard(request: web.Request) -> web.StreamResponse:
        if not host_allowed(request.host, bind_host):
            response: web.StreamResponse = web.Response(
                status=421, text="pgdurable's dashboard answers to an IP address or localhost\n"
            )
        elif request.method == "POST" and not same_origin(request):
            response = web.Response(status=403, text="cross-site request refused\n")
        else:
            response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return guard


def host_allowed(host: str, bind_host: str) -> bool:
    """A Host header naming an IP address, localhost or the address the port is bound to:
    a name an attacker rebound to this machine's address is none of these."""
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name in ("localhost", bind_host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_origin(request: web.Request) -> bool:
    """False for a POST a browser says comes from another site."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def see_other(location: str) -> web.Response:
    """A 303 redirect."""
    return web.Response(status=303, headers={"Location": location})


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, and Secure when the request came over TLS."""
    response.set_cookie(
        name, value, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
