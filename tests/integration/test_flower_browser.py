"""Flower's tasks page in a real browser: headless Chromium, with Flower's credentials,
lists the fan-out task a post started. The screenshot is kept as a test artifact.

Chromium is driven over the DevTools protocol (a websocket; ``websockets`` comes with
uvicorn[standard]): the credentials go in an ``Authorization`` header that
``Network.setExtraHTTPHeaders`` adds to every request of the page, the table's XHRs
included. Credentials in the URL (``http://user:pass@host/tasks``) are not used:
Chromium may drop them for subresources, and Flower's table is filled by XHRs.
"""
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time

import httpx
import pytest

from tests import processes, support
from tests.integration.helpers import post_as, signup

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(support.broker_kind() != "redis",
                                 reason="broker-independent: runs in the Redis pass only")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLOWER_AUTH = ("admin", "browser-flower-pass")
TASK = "tasks.fanout.fanout_post"
ARTIFACT = processes.ROOT / "tests" / "artifacts" / "flower-tasks.png"

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium); "
                "the Flower browser test needs it", allow_module_level=True)
websockets_sync = pytest.importorskip("websockets.sync.client")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flower-browser")
    support.reset_namespace("e2e")
    api_port, flower_port = support.free_port(), support.free_port()
    env = support.stack_env(
        "e2e", "floodgate_browser", tmp, FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
        FLOWER_PORT=flower_port,
        WORKER_SEND_TASK_EVENTS="true")  # as make up and compose run a worker beside Flower
    parts = [processes.api(env, tmp, api_port), processes.worker(env, tmp),
             processes.flower(env, tmp)]
    try:
        processes.wait_http(f"http://127.0.0.1:{api_port}/healthz")
        processes.wait_http(f"http://127.0.0.1:{flower_port}/healthcheck")
        yield {"api": f"http://127.0.0.1:{api_port}", "flower": f"http://127.0.0.1:{flower_port}",
               "tmp": tmp}
    finally:
        for part in parts:
            part.stop()


class DevTools:
    """The few DevTools protocol calls this test needs, over one page's websocket."""

    def __init__(self, url: str) -> None:
        self.ws = websockets_sync.connect(url, max_size=None, open_timeout=10)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        sent = next(self.ids)
        self.ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:  # skip events until our answer
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == sent:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression,
                         returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def chromium(tmp_path):
    port = support.free_port()
    profile = tempfile.mkdtemp(prefix="fg-chromium-")
    log = open(tmp_path / "chromium.log", "wb")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--window-size=1400,900", f"--remote-debugging-port={port}",
         "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, pages = time.monotonic() + 30, []
        while not pages:
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "Chromium's DevTools endpoint never answered"
            try:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list",
                                              timeout=2).json() if t["type"] == "page"]
            except httpx.HTTPError:
                time.sleep(0.3)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_flowers_tasks_page_in_chromium_lists_floodgates_tasks(system, chromium):
    # A post starts a fan-out; wait until Flower has it (its API), then look at the page.
    with httpx.Client(base_url=system["api"], timeout=10) as http:
        job = post_as(http, signup(http, "browser"), "seen in a browser").json()
    deadline = time.monotonic() + 40
    while job["job_id"] not in httpx.get(f"{system['flower']}/api/tasks", auth=FLOWER_AUTH,
                                         timeout=5).json():
        assert time.monotonic() < deadline, "Flower never listed the fan-out task"
        time.sleep(0.5)

    # (Without credentials Flower answers 401, which test_e2e checks over HTTP; in the
    # browser that challenge would wait on a login dialog headless Chromium never shows.)
    chromium.call("Page.enable")
    chromium.call("Network.enable")
    token = base64.b64encode(":".join(FLOWER_AUTH).encode()).decode()
    chromium.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
    chromium.call("Page.navigate", url=f"{system['flower']}/tasks")
    text = wait_page(chromium, lambda text: TASK in text and job["job_id"] in text,
                     f"Flower's tasks page never showed {TASK} {job['job_id']}")
    assert "SUCCESS" in text

    shot = chromium.call("Page.captureScreenshot", format="png")
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(base64.b64decode(shot["data"]))
    assert ARTIFACT.stat().st_size > 10_000
    print(f"\nscreenshot of Flower's tasks page: {ARTIFACT}")


def wait_page(chromium: DevTools, seen, message: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = chromium.evaluate("document.body ? document.body.innerText : ''") or ""
        if seen(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{message} (within {timeout_s} s); the page said:\n{text[:2000]}")
