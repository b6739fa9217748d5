"""The conftest guard fails an asyncio test that leaves a task running."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEAKY = """
import asyncio

async def test_leaks_a_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten-sleeper")

async def test_cleans_up():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    task.cancel()
"""

GUARD_CONFTEST = """
from tests.conftest import asyncio_task_guard, pytest_collection_modifyitems  # noqa: F401
"""


def test_guard_fails_leaky_test_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makeconftest(GUARD_CONFTEST)
    pytester.makepyfile(test_leak=LEAKY)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # The leaky test body passes; the guard turns its teardown into an error.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left 1 asyncio task(s) running: forgotten-sleeper*"])
