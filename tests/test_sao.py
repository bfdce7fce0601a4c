"""sao, the Tryton web client, served by the appliance, in headless Chromium.

Everything goes through the appliance's nginx (``appliance.url``, database
``oe``): trytond serves sao at ``/`` (``[web] root``), and sao's bus polls
(``POST /oe/bus``) go to oe_web_socketio. ERP code publishes as trytond
modules do, in a trytond transaction of a fresh interpreter that commits.

What sao 8.0 listens to (``Sao.Bus`` in ``dist/tryton-sao.js``): it polls
``client:<Sao.Bus.id>`` and ``notification:<user id>``, and the server adds
``user:<user id>``, which sao has no handler for, so
``trytond.bus.notify(title, body, user=...)`` shows nothing in sao.

* A ``res.notification`` record created for a user publishes
  ``{"type": "user-notification", "count", "content"}`` on
  ``notification:<user id>``: sao puts the count on the badge of its user
  menu at once, from the bus, and lists the notifications in that menu.
* ``trytond.bus.notify(title, body, client=<Sao.Bus.id>)`` (what ERP code
  called from that sao tab does, with the ``client`` of its context) pops
  up a desktop notification, ``new Notification(title, {body})``, when the
  page may notify: the tests grant that permission and record each
  ``Notification`` the page creates (the browser's own still runs).

Each test logs in as a user of its own, deactivated afterwards.
"""

from __future__ import annotations

import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .browser import console_recorder, screenshot

pytestmark = pytest.mark.timeout(300)

#: Seconds a test waits for what should come at once (Playwright's waits
#: are in milliseconds: see :data:`WAIT_MS`).
DEADLINE = 20.0
WAIT_MS = int(DEADLINE * 1000)

#: Records each desktop notification the page creates, then creates it.
RECORD_NOTIFICATIONS = """
(() => {
    const Original = window.Notification;
    window.__notifications = [];
    class Recorded extends Original {
        constructor(title, options) {
            window.__notifications.push({title, body: (options || {}).body});
            super(title, options);
        }
    }
    window.Notification = Recorded;
})();
"""


@dataclass(frozen=True)
class User:
    login: str
    name: str
    password: str
    id: int


@pytest.fixture
def sao_user(appliance) -> Iterator[User]:
    """A user of the appliance's database, deactivated afterwards."""
    admin = appliance.login()
    login = f"sao_{uuid.uuid4().hex[:12]}"
    name = f"Sao {login[4:]}"
    password = uuid.uuid4().hex
    (uid,) = appliance.rpc(
        "model.res.user.create",
        [[{"login": login, "name": name, "password": password}], {}],
        session=admin,
    )
    try:
        yield User(login, name, password, uid)
    finally:
        appliance.rpc(
            "model.res.user.write", [[uid], {"active": False}, {}], session=admin
        )


@pytest.fixture
def page(browser_context, appliance):
    """A page of sao's origin that may show desktop notifications, and
    records them."""
    browser_context.grant_permissions(["notifications"], origin=appliance.url)
    browser_context.add_init_script(RECORD_NOTIFICATIONS)
    page = browser_context.new_page()
    page.console_lines = console_recorder(page)
    page.bus_polls = []
    page.on(
        "request",
        lambda request: (
            request.url.endswith(f"/{appliance.database}/bus")
            and page.bus_polls.append(request.url)
        ),
    )
    return page


def open_login(page, appliance, user: User) -> None:
    """Open sao and give *user*'s login: sao then asks for the password."""
    page.goto(f"{appliance.url}/#{appliance.database}")
    # The database field shows once sao has the list of databases.
    page.locator("#database:visible").wait_for(timeout=WAIT_MS)
    page.locator("#login").fill(user.login)
    page.locator("#login").press("Enter")


def log_in(page, appliance, user: User) -> None:
    """Log in to sao as *user*, and wait until it polls the bus."""
    open_login(page, appliance, user)
    page.locator("#ask-dialog-entry").fill(user.password)
    page.locator("#ask-dialog-entry").press("Enter")
    # The user menu shows the user's name once sao has their preferences.
    page.locator("#user-preferences > a").filter(has_text=user.name).wait_for(
        timeout=WAIT_MS
    )
    page.wait_for_function("Sao.Bus.listening", timeout=WAIT_MS)


def erp(appliance, code: str) -> None:
    """Run *code* as ERP code: in a transaction of the appliance's database
    that commits, with ``Pool`` and ``bus`` (``trytond.bus``) at hand, in the
    appliance's ``bin/python`` (its eggs, its Tryton modules, its
    etc/trytond.conf)."""
    database = appliance.database
    script = textwrap.dedent(
        f"""
        import warnings
        # trytond 8.0.12 trips over its own deprecation.
        warnings.filterwarnings("ignore", "trytond.config.config is deprecated")
        from trytond.pool import Pool
        from trytond.transaction import Transaction
        import trytond.bus as bus
        with Transaction().start({database!r}, 0):
            Pool({database!r}).init()
        with Transaction().start({database!r}, 0):
        """
    ) + textwrap.indent(textwrap.dedent(code), "    ")
    result = appliance.run("python", "-c", script, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def notify_user(appliance, user: User, label: str, description: str) -> None:
    """A ``res.notification`` for *user*, as ERP code creates one."""
    erp(
        appliance,
        f"""
        Notification = Pool().get("res.notification")
        Notification.create([{{
            "user": {user.id}, "label": {label!r}, "description": {description!r},
        }}])
        """,
    )


def open_notifications(page) -> None:
    """Open the user menu, which lists the user's notifications."""
    page.locator("#user-preferences > a").click()
    page.locator(".notification-menu .notification-item").first.wait_for(
        timeout=WAIT_MS
    )


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def bus_lines(path: Path, offset: int) -> list[str]:
    """The lines about ``POST /<db>/bus`` written to *path* after *offset*
    (from its start when it was rotated meanwhile)."""
    if not path.exists():
        return []
    with path.open("rb") as log:
        if log_size(path) >= offset:
            log.seek(offset)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if re.search(r"POST /\w+/bus ", line)]


def health(appliance, worker: str) -> dict:
    return appliance.worker_health(worker)


def wait_listening(appliance) -> None:
    """Wait until each of the appliance's real-time workers answers and
    listens to its database (it misses what is published before)."""
    deadline = time.monotonic() + DEADLINE
    for worker in appliance.workers:
        while True:
            try:
                listener = health(appliance, worker)["listeners"][appliance.database]
                if listener["state"] == "listening":
                    break
            except OSError:
                listener = "not answering"
            assert time.monotonic() < deadline, f"oe_web_socketio {worker}: {listener}"
            time.sleep(0.2)


# -- sao is served whole ------------------------------------------------------


def test_sao_loads_every_file_it_asks_for(appliance, page, sao_user):
    """No request of sao fails, before or after the login, but its probes of
    locale catalogues: it asks ``locale/en_US.json``, falls back to
    ``locale/en.json``, and English, its own language, has none."""
    answers: list[tuple[int, str]] = []
    failures: list[str] = []
    page.on(
        "response", lambda response: answers.append((response.status, response.url))
    )
    page.on(
        "requestfailed",
        lambda request: failures.append(f"{request.url}: {request.failure}"),
    )
    log_in(page, appliance, sao_user)
    bad = [
        (status, url)
        for status, url in answers
        if status >= 400 and not re.search(r"/locale/en(_[A-Z]+)?\.json$", url)
    ]
    assert bad == [], page.console_lines
    # sao aborts its held bus poll itself when it listens to a new channel,
    # and the blob: URLs it makes of icons never reach a server: an <img>
    # replaced before it drew one aborts that load (seen once in CI).
    assert [
        f for f in failures if "/oe/bus:" not in f and not f.startswith("blob:")
    ] == []
    loaded = {
        url.removeprefix(appliance.url) for status, url in answers if status == 200
    }
    # The page and what its index.html loads from node_modules/ beside it.
    assert {
        "/",
        "/node_modules/jquery/dist/jquery.js",
        "/node_modules/bootstrap/dist/js/bootstrap.js",
        "/node_modules/d3/dist/d3.js",
        "/node_modules/billboard.js/dist/billboard.css",
        "/dist/tryton-sao.js",
        "/dist/tryton-sao.css",
        "/custom.js",
        "/custom.css",
    } <= loaded
    assert page.evaluate("Sao.__version__").startswith("8.0.")


def test_sao_speaks_the_browsers_language(appliance, browser):
    """The catalogues are installed: a French browser gets sao in French
    (``fr_FR`` is missing, sao falls back to ``fr``)."""
    context = browser.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        with page.expect_response(re.compile(r"/locale/fr\.json$")) as french:
            page.goto(f"{appliance.url}/#{appliance.database}")
        assert french.value.status == 200
        page.locator("label[for=login]").filter(has_text="Nom d'utilisateur").wait_for(
            timeout=WAIT_MS
        )
    finally:
        context.close()


def test_a_wrong_password_asks_again(appliance, page, sao_user):
    """sao's own answer to a wrong password (trytond's ``401``): it asks
    for the password again, and the right one then logs in."""
    open_login(page, appliance, sao_user)
    page.locator("#ask-dialog-entry").fill("not-" + sao_user.password)
    with page.expect_response(re.compile(r"/oe/session/login$")) as refused:
        page.locator("#ask-dialog-entry").press("Enter")
    assert refused.value.status == 401
    entry = page.locator("#ask-dialog-entry")
    entry.wait_for(timeout=WAIT_MS)
    assert entry.input_value() == ""
    assert page.bus_polls == []
    entry.fill(sao_user.password)
    entry.press("Enter")
    page.locator("#user-preferences > a").filter(has_text=sao_user.name).wait_for(
        timeout=WAIT_MS
    )


# -- notifications through oe_web_socketio -------------------------------------


def test_a_notification_pops_up_in_sao(appliance, page, sao_user):
    """A notification ERP code creates for the user shows in sao at once:
    its count on the badge, then the notification in the user menu. The
    bus poll that brought it was answered by oe_web_socketio, not trytond:
    its log has the answer, trytond's has no bus request at all."""
    trytonds = appliance.directory / "var" / "log" / "trytond.log"
    # Each real-time worker's log: the poll reaches one of them.
    ours = [appliance.worker_log(name) for name in appliance.workers]
    offsets = {path: log_size(path) for path in (*ours, trytonds)}
    log_in(page, appliance, sao_user)
    badge = page.locator("#user-preferences .notification-badge")
    assert not badge.is_visible()
    assert (
        sum(
            health(appliance, name)["bus"][appliance.database]["polls"]
            for name in appliance.workers
        )
        >= 1
    )

    label = f"Invoice {uuid.uuid4().hex[:6]} is due"
    notify_user(appliance, sao_user, label, "Pay it before Friday.")
    badge.filter(has_text=re.compile(r"^1$")).wait_for(timeout=WAIT_MS)

    answered = [line for path in ours for line in bus_lines(path, offsets[path])]
    assert any('"POST /oe/bus HTTP/1.1" 200' in line for line in answered), answered
    assert bus_lines(trytonds, offsets[trytonds]) == []

    open_notifications(page)
    item = page.locator(".notification-menu .notification-item").first
    assert item.locator(".notification-label").inner_text() == label
    assert item.locator(".notification-description").inner_text() == (
        "Pay it before Friday."
    )
    screenshot(page, "sao-notification")
    # The desktop notification sao popped up with the same message.
    assert page.evaluate("window.__notifications") == [
        {"title": "Tryton", "body": f"{label}\nPay it before Friday."}
    ]


def test_bus_notify_to_the_client_pops_up(appliance, page, sao_user):
    """``trytond.bus.notify(title, body, client=...)`` to the channel of
    this sao tab pops up a desktop notification with its title and body."""
    log_in(page, appliance, sao_user)
    client = page.evaluate("Sao.Bus.id")
    erp(appliance, f"bus.notify('Backup done', 'All 3 volumes.', client={client!r})")
    page.wait_for_function("window.__notifications.length > 0", timeout=WAIT_MS)
    assert page.evaluate("window.__notifications") == [
        {"title": "Backup done", "body": "All 3 volumes."}
    ]


def test_sao_recovers_when_oe_web_socketio_restarts(appliance, page, sao_user):
    """sao's poll fails while oe_web_socketio restarts; sao polls again
    (with its own backoff: 1 s, 2 s, 4 s ...) and the notification
    published once the server is back still pops up."""
    log_in(page, appliance, sao_user)
    polls = len(page.bus_polls)
    restart = appliance.run("supervisorctl", "restart", "oe_web_socketio:*")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    wait_listening(appliance)

    label = f"Back {uuid.uuid4().hex[:6]}"
    notify_user(appliance, sao_user, label, "after the restart")
    # The server keeps the message until sao's next poll, after its backoff.
    page.locator("#user-preferences .notification-badge").filter(
        has_text=re.compile(r"^1$")
    ).wait_for(timeout=3 * WAIT_MS)
    assert len(page.bus_polls) > polls + 1
    open_notifications(page)
    first = page.locator(".notification-menu .notification-label").first
    assert first.inner_text() == label
