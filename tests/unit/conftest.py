"""Fixtures of the unit tests: the framing tests run against both implementations."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.framing import PURE, Framing, NotBuilt, build_compiled, compiled


@pytest.fixture(scope="session")
def compiled_framing_module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """pgdurable_proxy/wire/_framing.c, compiled once per test process."""
    try:
        return build_compiled(tmp_path_factory.mktemp("framing-build"))
    except NotBuilt as exc:
        pytest.skip(f"the compiled framing is not tested: _framing.c does not build here ({exc})")


@pytest.fixture(params=["python", "compiled"])
def framing(request: pytest.FixtureRequest) -> Framing:
    """The pure-Python framing, then the compiled one."""
    if request.param == "python":
        return PURE
    module: ModuleType = request.getfixturevalue("compiled_framing_module")
    return compiled(module)
