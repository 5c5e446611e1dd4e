"""The optional C extension of the relay's framing (everything else is in pyproject.toml).

Built when a C compiler is there; without one `pip install .` still succeeds and the relay
runs its pure-Python framing (pgdurable_proxy/wire/frames.py), as aiohttp does.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pgdurable_proxy.wire._framing",
            ["pgdurable_proxy/wire/_framing.c"],
            optional=True,  # a failed build is a warning, not an error
        )
    ]
)
