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


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_each_command_gets_a_fresh_loop_closed_after_it() -> None:
    # As asyncio.run: nothing of one command's loop outlives it or leaks into the next.
    first = run_loop(_running_loop())
    second = run_loop(_running_loop())
    assert first is not second
    assert first.is_closed() and second.is_closed()
