"""The `referrals` processes run on uvloop's event loop (cli.run_loop)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from cli import run_loop


async def _loop_and_answer() -> tuple[str, int]:
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    return type(loop).__module__, await loop.run_in_executor(None, sum, [1, 2, 3])


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not built for Windows")
def test_commands_run_on_uvloop() -> None:
    module, answer = run_loop(_loop_and_answer())
    assert module.startswith("uvloop"), module
    assert answer == 6


def test_the_loop_is_closed_after_the_command() -> None:
    # A second command in the same process gets a fresh loop (as asyncio.run gives).
    assert run_loop(_loop_and_answer())[1] == 6
    assert run_loop(_loop_and_answer())[1] == 6
