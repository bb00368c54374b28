"""The dashboard in a real browser, as an operator uses it: Playwright driving Debian's Chromium
(``browser.py``; nothing downloads a browser) against a real ``celeriac dashboard`` process fed
by a real worker process on a real broker (``fleet.py``).

The key flows run on every broker (SQLite, Redis, RabbitMQ): logging in and the live worker
list; a failed task found, read and retried, and the retry seen running; queue depth and
oldest-message age shown live (RabbitMQ: "broker cannot tell"), and a queue purged; a dead
letter requeued (and the task then run) and another deleted on the broker; the Prometheus
endpoint parsed with prometheus-client's own parser. Where the broker URL holds a password (Redis,
RabbitMQ), it is shown nowhere: pages, live streams, metrics, the dashboard's own log (with the
login secrets). On SQLite only, what does not depend on the broker: search by id, name and
state with the workflow tree, the read-only role refused (no button, and its POST answered
403), a beat entry paused, resumed and run now, a worker joining and leaving the open page, and
the history kept across a real restart of the dashboard process.

One dashboard and one worker per broker serve the whole module; each test sends tasks of its
own and looks only at them. No page may violate its Content-Security-Policy.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from browser import WAIT_MS, Tab, launch
from dashboard_support import OPERATOR_TOKEN, VIEWER_TOKEN, csrf_of
from fleet import BROKERS, SESSION_KEY, Fleet, open_broker
from prometheus_client.parser import text_string_to_metric_families

from celeriac import chain
from celeriac.dashboard.deadletters import describe

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)  # the machine is shared: generous, as every wait here
WAIT = WAIT_MS / 1000
SQLITE_ONLY = pytest.mark.parametrize("fleet", ["sqlite"], indirect=True)
#: An oldest message's age as the pages show it.
AGE = re.compile(r"\d+ ms|\d+\.\d\d s")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        found = launch(playwright)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture(scope="module", params=BROKERS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    with open_broker(request.param, tmp) as broker:
        found = Fleet(broker, tmp)
        try:
            found.start()
            events_heard(found)
            yield found
        finally:
            found.close()


def events_heard(fleet: Fleet) -> None:
    """Wait until the dashboard has heard the worker's events (its heartbeat shows in the
    metrics): a task sent before the dashboard's subscription is live loses its events (a
    Redis PUBLISH reaches only who listens), and with its task-received its name, which the
    tests filter on (a CI run's first test of the module once waited for it in vain)."""
    needle = f'celery_worker_up{{hostname="{fleet.worker_name}"}} 1.0'
    deadline = time.monotonic() + WAIT
    while needle not in get(fleet, "/metrics"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the dashboard heard no event of {fleet.worker_name} in {WAIT}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def operator_tab(browser: Browser, fleet: Fleet) -> Iterator[Tab]:
    """The operator's browser tab, one per broker: its tests take turns on its page (a new
    context or page costs Chromium a renderer)."""
    tab = Tab(browser, fleet.url)
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture
def operator(operator_tab: Tab) -> Iterator[Tab]:
    """The operator's tab, logged in (once: later tests find the session)."""
    operator_tab.violations.clear()
    if not any(c["name"] == "celeriac_session" for c in operator_tab.context.cookies()):
        operator_tab.login(OPERATOR_TOKEN)
    yield operator_tab
    assert operator_tab.violations == [], operator_tab.violations


@pytest.fixture
def viewer(browser: Browser, fleet: Fleet) -> Iterator[Tab]:
    tab = Tab(browser, fleet.url)
    try:
        tab.login(VIEWER_TOKEN)
        yield tab
        assert tab.violations == [], tab.violations
    finally:
        tab.close()


def shown(fleet: Fleet, page: Page, path: str, needle: str) -> None:
    """Open ``path`` in the page once it shows ``needle``. Pages that are not live show what
    the history holds when loaded: the wait polls the page's HTML over HTTP (cheap), not the
    browser (a render per try)."""
    deadline = time.monotonic() + WAIT
    while needle not in get(fleet, path):
        if time.monotonic() > deadline:  # the processes' last lines say why (CI keeps no more)
            said = "\n".join(said_lately(process.output()) for process in fleet.processes)
            raise AssertionError(f"{needle!r} not on {path} within {WAIT}s; it said:\n{said}")
        time.sleep(0.1)
    page.goto(path)


def said_lately(output: str) -> str:
    """The last 3,000 characters of a process's output without the web server's access lines
    (this wait's own GETs filled a dashboard's whole tail and hid its warnings)."""
    lines = [line for line in output.splitlines() if not ('"GET /' in line and "HTTP/1.1" in line)]
    return "\n".join(lines)[-3000:]


def task_in_state(fleet: Fleet, page: Page, task_id: str, state: str) -> None:
    """Open the task's page once the task is in ``state``."""
    shown(fleet, page, f"/tasks/{task_id}", f'id="task-state">{state}</span>')
    expect(page.locator("#task-state")).to_have_text(state)


def get(fleet: Fleet, path: str) -> str:
    """``path`` read with the operator's bearer token (a live stream: up to its first
    fragment; a page not found: the page that says so)."""
    request = urllib.request.Request(
        f"{fleet.url}{path}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    try:
        response = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as missing:  # a task not in the history yet
        if missing.code != 404:
            raise
        return str(missing.read().decode())
    with response:
        if not response.headers["content-type"].startswith("text/event-stream"):
            return str(response.read().decode())
        lines: list[str] = []
        while not lines or not lines[-1].startswith("data: "):
            lines.append(response.readline().decode())
        return "".join(lines)


def failed_login(fleet: Fleet, secret: str) -> str:
    """Post the login form with ``secret`` (its CSRF token and cookie from the form); the
    page that refused it."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(f"{fleet.url}/login", timeout=10) as response:
        token = csrf_of(response.read().decode())
    form = urllib.parse.urlencode({"csrf": token, "secret": secret, "next": "/"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{fleet.url}/login", form, timeout=10)
    assert refused.value.code == 401
    return str(refused.value.read().decode())


def gate(fleet: Fleet) -> str:
    """A gate file that does not exist yet (see ``dashboard_tasks``)."""
    return str(fleet.dir / f"gate-{uuid.uuid4().hex[:8]}")


# -- on every broker -------------------------------------------------------------------------
def test_login_then_the_live_worker_list(fleet: Fleet, operator_tab: Tab) -> None:
    operator_tab.context.clear_cookies()  # logged out (on the tab the next tests use)
    operator_tab.violations.clear()
    page = operator_tab.page
    page.goto("/workers")
    assert "/login" in page.url
    page.fill("#secret", "wrong-token-for-sure")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Wrong password or token")
    page.fill("#secret", OPERATOR_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{fleet.url}/workers")
    assert page.text_content("span.role") == "operator"
    row = page.locator(f'tr.worker[data-hostname="{fleet.worker_name}"]')
    # pool and concurrency come from remote control, polled: the live list fills them in
    expect(row).to_contain_text("threads")
    expect(row.locator("td").nth(2)).to_have_text("2")
    expect(row).to_contain_text(fleet.broker.queue)
    assert operator_tab.violations == []


def test_a_failed_task_is_read_retried_and_its_retry_runs(fleet: Fleet, operator: Tab) -> None:
    page = operator.page
    closed = gate(fleet)
    failed = fleet.app.send_task("d.flaky", (closed,))
    shown(fleet, page, "/tasks?state=FAILURE&name=d.flaky", f'href="/tasks/{failed.id}"')
    page.click(f'a[href="/tasks/{failed.id}"]')
    expect(page.locator("#task-state")).to_have_text("FAILURE")
    expect(page.locator("#task-args")).to_contain_text(closed)
    expect(page.locator("#task-exception")).to_contain_text("GateClosed")
    expect(page.locator("#task-traceback")).to_contain_text("Traceback")
    timeline = page.locator("#timeline")
    for event in ("task-received", "task-started", "task-failed"):
        expect(timeline).to_contain_text(event)

    with open(closed, "x"):
        pass  # the gate opens: the retry succeeds
    page.click("#retry-form button")
    expect(page.locator("#flash")).to_contain_text("sent again as")
    retried = page.locator("#flash-task").inner_text()
    assert retried != failed.id
    task_in_state(fleet, page, retried, "SUCCESS")
    expect(page.locator("#task-result")).to_contain_text("passed")
    expect(page.locator("#task-args")).to_contain_text(closed)


def test_queue_depth_and_age_are_shown_live_and_a_queue_purged(fleet: Fleet, operator: Tab) -> None:
    page = operator.page
    parked = fleet.broker.parked
    page.goto("/queues")
    page.evaluate("window.stillTheSamePage = true")
    for i in range(3):
        fleet.app.send_task("d.add", (i, i), queue=parked)
    row = page.locator(f'tr[data-queue="{parked}"]')
    expect(row.locator("td.depth")).to_have_text("3")  # by server-sent events, no reload
    ages = fleet.broker.name != "amqp"  # AMQP 0-9-1 has no age of a queue's head
    expect(row.locator("td.age")).to_have_text(AGE if ages else "broker cannot tell")
    assert page.evaluate("window.stillTheSamePage") is True
    page.goto("/")
    overview = page.locator(f'#live-overview tr[data-queue="{parked}"]')
    expect(overview.locator("td.depth")).to_have_text("3")
    expect(overview.locator("td.age")).to_have_text(AGE if ages else "?")
    page.goto("/queues")
    row.locator("button", has_text="Purge").click()
    expect(page.locator("#flash")).to_contain_text("3 messages removed")
    expect(row.locator("td.depth")).to_have_text("0")
    nothing = "\u2013"  # an en dash: no message waits
    expect(row.locator("td.age")).to_have_text(nothing if ages else "broker cannot tell")


def test_dead_letters_are_requeued_then_run_or_deleted(fleet: Fleet, operator: Tab) -> None:
    page = operator.page
    closed = gate(fleet)
    sent = fleet.app.send_task("d.gated", (closed,))
    doomed = fleet.app.send_task("d.gated", (gate(fleet),))  # its gate never opens
    queue = fleet.broker.queue

    def row(task_id: str) -> str:
        return f'#letters tr:has(td.mono:text-is("{task_id}"))'

    letters = f"/dead-letters?queue={queue}"
    shown(fleet, page, letters, f'<td class="mono">{sent.id}</td>')
    shown(fleet, page, letters, f'<td class="mono">{doomed.id}</td>')
    expect(page.locator("#reason-groups")).to_contain_text("is closed")
    with open(closed, "x"):
        pass
    page.locator(row(sent.id)).locator("input[name=selected]").check()
    page.click("button[name=action][value=requeue]")
    expect(page.locator("#flash")).to_contain_text("1 dead letter requeued")
    expect(page.locator(row(sent.id))).to_have_count(0)

    page.locator(row(doomed.id)).locator("input[name=selected]").check()
    page.click("button[name=action][value=delete]")
    expect(page.locator("#flash")).to_contain_text("1 dead letter deleted")
    expect(page.locator(row(doomed.id))).to_have_count(0)
    on_broker = [letter for letter in fleet.dead_letters() if describe(letter).task_id == doomed.id]
    assert on_broker == []  # deleted on the broker, not only hidden by the dashboard

    task_in_state(fleet, page, sent.id, "SUCCESS")
    expect(page.locator("#task-result")).to_contain_text("through")


def test_metrics_parse_with_celery_exporter_names(fleet: Fleet) -> None:
    good = fleet.app.send_task("d.add", (2, 3))
    bad = fleet.app.send_task("d.fail", (4,))
    wanted = {
        "celery_task_received", "celery_task_started", "celery_task_succeeded",
        "celery_task_failed", "celery_task_runtime", "celery_task_wait_seconds",
        "celery_worker_up", "celery_worker_tasks_active", "celery_queue_length",
        "celery_active_consumer_count",
    }  # fmt: skip
    deadline = time.monotonic() + WAIT
    while True:
        families = {f.name: f for f in text_string_to_metric_families(get(fleet, "/metrics"))}
        failures = families.get("celery_task_failed")
        failed = [
            s
            for s in (failures.samples if failures is not None else [])
            if s.name.endswith("_total") and s.labels.get("name") == "d.fail"
        ]
        workers = families.get("celery_worker_up")
        up = {s.labels["hostname"]: s.value for s in (workers.samples if workers else [])}
        # a heartbeat late under a loaded machine may show the worker down for a moment
        if wanted <= set(families) and failed and up.get(fleet.worker_name) == 1:
            break
        assert time.monotonic() < deadline, (
            f"metrics never had {wanted - set(families)}, d.fail's failure or the worker up"
            f" ({failures.samples if failures else None}, {up})\n{fleet.logs()}"
        )
        time.sleep(0.2)
    assert good.id and bad.id
    assert failed[0].labels["exception"] == "ValueError"
    assert failed[0].labels["queue_name"] == fleet.broker.queue
    assert up[fleet.worker_name] == 1
    lengths = {s.labels["queue_name"] for s in families["celery_queue_length"].samples}
    assert {fleet.broker.queue, fleet.broker.parked} <= lengths
    age = families.get("celery_queue_oldest_message_age_seconds")
    aged = {s.labels["queue_name"] for s in age.samples} if age is not None else set()
    if fleet.broker.name == "amqp":  # it cannot tell: no series rather than a false 0
        assert not aged
    else:
        assert {fleet.broker.queue, fleet.broker.parked} <= aged
    for family in families.values():
        for sample in family.samples:
            assert good.id not in sample.labels.values() and bad.id not in sample.labels.values()


@pytest.mark.parametrize("fleet", ["redis", "amqp"], indirect=True)  # URLs with a password
def test_no_password_is_ever_shown_nor_logged(fleet: Fleet, operator: Tab) -> None:
    failed = fleet.app.send_task("d.fail", (5,))
    page = operator.page
    task_in_state(fleet, page, failed.id, "FAILURE")
    broker = page.locator("span.broker").inner_text()
    assert broker.startswith(f"{fleet.broker.name}://") and ":***@127.0.0.1" in broker
    texts = [page.content(), get(fleet, "/metrics")]
    for path in ("/", "/workers", "/tasks", "/queues", "/dead-letters", "/beat", "/audit"):
        texts.append(get(fleet, path))
    for view in ("overview", "workers", "queues"):  # the live streams' JSON
        texts.append(get(fleet, f"/live?view={view}"))
    # a failed login's secret is not logged either
    wrong = f"not-the-token-{uuid.uuid4().hex}"
    assert "Wrong password or token" in failed_login(fleet, wrong)
    assert fleet.dashboard is not None
    log = fleet.dashboard.output()
    if fleet.broker.name == "redis":
        assert "GET /metrics" in log  # at debug, the access log is on
    # Redis: a password of the module's own, nowhere; RabbitMQ: guest's, never after "guest:"
    needle = fleet.broker.password or ":guest@"
    for text in [*texts, log]:
        assert needle not in text
    for secret in (OPERATOR_TOKEN, VIEWER_TOKEN, wrong, SESSION_KEY):
        assert secret not in log


# -- on SQLite: what does not depend on the broker -------------------------------------------
@SQLITE_ONLY
def test_tasks_are_searched_by_id_name_and_state_and_a_workflow_is_a_tree(
    fleet: Fleet, operator: Tab
) -> None:
    app = fleet.app
    workflow = chain(
        app.signature("d.add", (1, 2)),
        app.signature("d.add", (10,)),
        app.signature("d.add", (100,)),
    ).apply_async()
    bad = app.send_task("d.fail", (6,))
    page = operator.page
    task_in_state(fleet, page, workflow.id, "SUCCESS")
    task_in_state(fleet, page, bad.id, "FAILURE")

    page.goto("/tasks")
    form = page.locator("#task-search")
    form.locator("input[name=name]").fill("d.fail")
    form.locator("select[name=state]").select_option("FAILURE")
    form.locator("button[type=submit]").click()
    results = page.locator("#task-results")
    expect(results).to_contain_text(bad.id)
    expect(results).not_to_contain_text(workflow.id)

    page.goto("/tasks")
    form.locator("input[name=id]").fill(workflow.id[:13])
    form.locator("button[type=submit]").click()
    expect(results.locator("tbody tr")).to_have_count(1)
    results.locator(f'a[href="/tasks/{workflow.id}"]').click()
    expect(page.locator("#task-result")).to_have_text("113")
    root = page.locator("#workflow > li > a").first
    expect(page.locator("#workflow li")).to_have_count(3)  # root -> child -> grandchild
    expect(page.locator("#workflow ul ul li a.here")).to_have_count(1)  # this one, the last
    root.click()
    expect(page.locator("#task-args")).to_have_text("(1, 2)")
    expect(page.locator("#task-result")).to_have_text("3")


@SQLITE_ONLY
def test_the_read_only_role_has_no_retry_button_and_its_post_is_refused(
    fleet: Fleet, viewer: Tab
) -> None:
    failed = fleet.app.send_task("d.fail", (7,))
    page = viewer.page
    task_in_state(fleet, page, failed.id, "FAILURE")
    expect(page.locator("#task-exception")).to_contain_text("bad value 7")
    assert page.text_content("span.role") == "viewer"
    expect(page.locator("#retry-form")).to_have_count(0)
    response = page.request.post(
        f"/tasks/{failed.id}/retry",
        form={"csrf": viewer.csrf()},
        headers={"Origin": fleet.url},
        max_redirects=0,
    )
    assert response.status == 403
    assert "read-only" in response.text()
    page.goto("/audit")
    expect(page.locator("main")).not_to_contain_text(failed.id)


@SQLITE_ONLY
def test_a_beat_entry_is_paused_resumed_and_run_now(fleet: Fleet, operator: Tab) -> None:
    name = f"tick-{uuid.uuid4().hex[:6]}"
    fleet.app.beat.add(name, "d.add", 3600, args=(20, 22))
    page = operator.page
    page.goto("/beat")
    row = page.locator(f'tr[data-entry="{name}"]')
    expect(row).to_contain_text("active")
    row.locator("button", has_text="Pause").click()
    expect(page.locator("#flash")).to_contain_text("beat_pause")
    expect(row).to_contain_text("paused")
    row.locator("button", has_text="Resume").click()
    expect(row).to_contain_text("active")
    row.locator("button", has_text="Run now").click()
    expect(page.locator("#flash")).to_contain_text("sent as")
    page.click("#flash-task")
    task_in_state(fleet, page, page.url.rsplit("/", 1)[1], "SUCCESS")
    expect(page.locator("#task-result")).to_have_text("42")


@SQLITE_ONLY
def test_a_worker_joins_and_leaves_the_open_page(fleet: Fleet, operator: Tab) -> None:
    page = operator.page
    page.goto("/workers")
    page.evaluate("window.stillTheSamePage = true")
    name = f"w2@dash-{uuid.uuid4().hex[:6]}"
    second = fleet.start_worker(name)
    row = page.locator(f'tr.worker[data-hostname="{name}"]')
    expect(row).to_contain_text("threads")
    second.send(15)  # SIGTERM: a warm shutdown sends worker-offline
    assert second.wait_exit(15) == 0
    expect(row).to_have_count(0)
    expect(page.locator(f'tr.worker[data-hostname="{fleet.worker_name}"]')).to_have_count(1)
    assert page.evaluate("window.stillTheSamePage") is True  # live, never reloaded
    page.screenshot(path=os.environ.get("DASHBOARD_SCREENSHOT") or str(fleet.dir / "workers.png"))


@SQLITE_ONLY
def test_a_restarted_dashboard_shows_the_earlier_failures(fleet: Fleet, operator: Tab) -> None:
    failed = fleet.app.send_task("d.fail", (77,))
    page = operator.page
    task_in_state(fleet, page, failed.id, "FAILURE")
    before = fleet.dashboard
    assert fleet.stop_dashboard() == 0
    fleet.start_dashboard()  # a new process, the same history file
    assert fleet.dashboard is not before and fleet.dashboard is not None
    # the session outlives the restart: its key is CELERIAC_DASHBOARD_SECRET, not a random one
    page.goto("/tasks?state=FAILURE&name=d.fail")
    assert page.url.endswith("/tasks?state=FAILURE&name=d.fail")
    expect(page.locator("#task-results")).to_contain_text(failed.id)
    page.click(f'a[href="/tasks/{failed.id}"]')
    expect(page.locator("#task-exception")).to_contain_text("bad value 77")
    expect(page.locator("#timeline")).to_contain_text("task-failed")
