"""Headless Chromium for tests, driven over the DevTools protocol with aiohttp's websocket client.

The test setup installs Chromium (`make chromium`, which `make test` runs: Debian's package, as root); a test
that needs it and does not find it is skipped, saying how to get it. `open_page()` loads a URL, records
every request the page makes, and screenshots it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import aiohttp

CHROMIUM = "chromium"
MISSING = "chromium is not installed: `make chromium` installs it (as root, from the Debian mirror)"


def find_chromium() -> str | None:
    return shutil.which(CHROMIUM)


@dataclass
class Page:
    requested: list[str]
    """Every URL the page asked for, the page itself included."""
    screenshot_png: bytes


def open_page(chromium: str, url: str, width: int = 900, height: int = 1400) -> Page:
    return asyncio.run(_open_page(chromium, url, width, height))


async def _open_page(chromium: str, url: str, width: int, height: int) -> Page:
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            chromium,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"),
            *("--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}"),
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            port = await asyncio.wait_for(_devtools_port(process), timeout=30)
            return await asyncio.wait_for(_drive(port, url, width, height), timeout=60)
        finally:
            process.kill()
            await process.wait()


async def _devtools_port(process: asyncio.subprocess.Process) -> int:
    assert process.stderr is not None
    async for line in process.stderr:
        match = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("chromium exited before it listened for DevTools")


async def _drive(port: int, url: str, width: int, height: int) -> Page:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page_target = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page_target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = itertools.count(1)
            requested: list[str] = []
            loaded = asyncio.Event()
            pending: dict[int, asyncio.Future[Any]] = {}

            async def receive() -> None:
                async for message in ws:
                    data = message.json()
                    if data.get("method") == "Network.requestWillBeSent":
                        requested.append(data["params"]["request"]["url"])
                    elif data.get("method") == "Page.loadEventFired":
                        loaded.set()
                    elif "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data.get("result", {}))

            async def call(method: str, **params: Any) -> Any:
                call_id = next(ids)
                pending[call_id] = asyncio.get_running_loop().create_future()
                await ws.send_json({"id": call_id, "method": method, "params": params})
                return await pending[call_id]

            receiver = asyncio.create_task(receive())
            try:
                await call("Network.enable")
                await call("Page.enable")
                await call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
                )
                await call("Page.navigate", url=url)
                await loaded.wait()
                shot = await call("Page.captureScreenshot", format="png")
            finally:
                receiver.cancel()
            return Page(requested, base64.b64decode(shot["data"]))
