"""A party renamed over JSON-RPC: how long until the demo page shows it.

Needs the stack running (``bin/start --daemon``) and headless Chromium
(``make build`` installs it). Opens ``/demo/`` through nginx in Chromium,
logs in as the admin, creates a party, then renames it N times over
JSON-RPC, one rename at a time, and prints a Markdown row per transport:
from the moment the JSON-RPC call is sent to the moment the page's row
shows the new name (a ``MutationObserver`` stamps it with the page's clock,
the same machine's clock as the caller's), and the JSON-RPC round trip
alone (trytond's write and commit, which the first includes).

    bin/python bench/browser_latency.py --renames 100

``websocket`` is the client's normal path (polling, then the upgrade);
``polling`` blocks the WebSocket in the browser, as a proxy without
WebSocket support would. The party is deleted and the admin's sessions
ended at the end: trytond checks a session against every live session of
the user from that address, so sessions left by earlier runs or tests
slow the writes measured here (about 25 ms more with 250 of them).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, percentile, watchdog

sys.path.insert(0, str(ROOT))
from tests.appliance import Appliance
from tests.browser import launch

#: Milliseconds to wait for one rename to show before giving up the run.
SHOWN_MS = 20_000

#: Installed in the page: records, per party id, when its name cell took
#: each text (performance.timeOrigin + now: wall-clock milliseconds).
OBSERVER = """
(partyId) => {
  window.__shown = {};
  const table = document.querySelector('#parties');
  new MutationObserver(() => {
    const cell = table.querySelector(`tr[data-id="${partyId}"] td.name`);
    if (cell && !(cell.textContent in window.__shown)) {
      window.__shown[cell.textContent] = performance.timeOrigin + performance.now();
    }
  }).observe(table, {subtree: true, childList: true, characterData: true});
}
"""


def block_websocket(context) -> None:
    context.route_web_socket("**/socket.io/**", lambda route: route.close())


def measure(browser, stack: Appliance, session: str, renames: int, transport: str):
    """Rename a party *renames* times; return (shown ms, round trip ms)."""
    context = browser.new_context()
    if transport == "polling":
        block_websocket(context)
    page = context.new_page()
    party_id = None
    try:
        page.goto(f"{stack.url}/demo/")
        page.fill("#login", "admin")
        page.fill("#password", stack.admin_password)
        page.click("#login-button")
        page.wait_for_selector('#connection[data-state="connected"]', timeout=SHOWN_MS)
        token = secrets.token_hex(3)
        (party_id,) = stack.rpc(
            "model.party.party.create", [[{"name": f"bench {token}"}], {}], session
        )
        page.wait_for_selector(f'#parties tr[data-id="{party_id}"]', timeout=SHOWN_MS)
        used = page.evaluate("demo.socket && demo.socket.transport")
        if used != transport:
            raise SystemExit(f"the page uses {used!r}, not {transport!r}")
        page.evaluate(OBSERVER, party_id)
        shown, round_trips = [], []
        for number in range(renames):
            name = f"bench {token} #{number}"
            sent = time.time() * 1000
            stack.rpc(
                "model.party.party.write", [[party_id], {"name": name}, {}], session
            )
            answered = time.time() * 1000
            page.wait_for_function(
                "(name) => name in window.__shown", arg=name, timeout=SHOWN_MS
            )
            shown.append(page.evaluate("(name) => window.__shown[name]", name) - sent)
            round_trips.append(answered - sent)
        return shown, round_trips
    finally:
        if party_id is not None:
            stack.rpc("model.party.party.delete", [[party_id], {}], session)
        # The page's session ends in Tryton (left, it would slow every
        # later check of the admin's sessions).
        if page.locator("#logout").is_visible():
            page.click("#logout")
            page.wait_for_selector("#login-view", timeout=SHOWN_MS)
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renames", type=int, default=100)
    parser.add_argument(
        "--transport",
        nargs="+",
        default=["websocket", "polling"],
        choices=["websocket", "polling"],
    )
    parser.add_argument("--deadline", type=float, default=600)
    args = parser.parse_args()
    watchdog(args.deadline)
    stack = Appliance(ROOT)
    if not stack.supervisord_running():
        raise SystemExit("the stack is not running: bin/start --daemon")
    session = stack.login()

    from playwright.sync_api import sync_playwright

    print("| transport | renames | shown p50 | p90 | p99 | max | JSON-RPC write p50 |")
    print("|---|---|---|---|---|---|---|")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for transport in args.transport:
                shown, round_trips = measure(
                    browser, stack, session, args.renames, transport
                )
                shown.sort()
                round_trips.sort()
                print(
                    f"| {transport} | {len(shown)} "
                    f"| {percentile(shown, 0.5):.0f} ms "
                    f"| {percentile(shown, 0.9):.0f} ms "
                    f"| {percentile(shown, 0.99):.0f} ms | {shown[-1]:.0f} ms "
                    f"| {percentile(round_trips, 0.5):.0f} ms |",
                    flush=True,
                )
        finally:
            browser.close()
            stack.logout_all()


if __name__ == "__main__":
    main()
