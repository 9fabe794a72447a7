"""The records page in a running container, through Debian's headless Chromium: BIND serves the
records as the user publishes them, the page at the secret link shows each with its state, a
copy button puts the exact value on the clipboard, a record removed in BIND shows as missing
after the worker looks again, and a wrong token gets the 404 of any unknown path.

Screenshots at a phone's and a desktop's width go to tests/artifacts/records-page/ (ignored by
git; CI may keep them), named after the moment they show.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest

from tests.container.browser import Browser, chromium
from tests.container.containers import ROOT, Container, insecure_context
from tests.container.dockercli import docker
from tests.container.worlds import Scene
from tests.container.zoneserver import printed_zone, supporting_zones, without
from tests.polling import eventually

pytestmark = [pytest.mark.container, pytest.mark.xdist_group(__name__)]

HOSTNAME = "mail.example.com"
ARTIFACTS = ROOT / "tests" / "artifacts" / "records-page"
READY = "dns: READY - every required DNS record is in place"
PHONE, DESKTOP = (390, 844), (1280, 900)


def fetch(mail: Container, target: str) -> tuple[int, bytes]:
    """Status and body of a GET on port 443 of the container, as a browser asks for
    MAIL_HOSTNAME (Host and SNI)."""
    assert mail.ip is not None
    with socket.create_connection((mail.ip, 443), timeout=30) as raw, \
            insecure_context().wrap_socket(raw, server_hostname=HOSTNAME) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOSTNAME}\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def cards(browser: Browser) -> dict[tuple[str, str], dict[str, str]]:
    """Each record on the page: (name, type) -> its state and the exact text of its value."""
    found = browser.page.evaluate(
        "[...document.querySelectorAll('div.rec')].map(card => ({name: card.dataset.name, "
        "type: card.dataset.type, status: card.dataset.status, "
        "value: card.querySelector('code').textContent, "
        "button: !card.querySelector('button').hidden}))")
    return {(card["name"], card["type"]): card for card in found}


def screenshots(browser: Browser, moment: str) -> None:
    for label, (width, height) in (("phone", PHONE), ("desktop", DESKTOP)):
        path = ARTIFACTS / f"{moment}-{label}.png"
        browser.screenshot(path, width, height, mobile=label == "phone")
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def records_as_printed(mail: Container) -> list[dict[str, Any]]:
    return [r for r in json.loads(mail.exec("mailboot", "dns", "--json").stdout)
            if r["value"] is not None]


def test_the_records_page_through_a_browser(scene: Scene) -> None:
    mail_ip = scene.address()
    bind = scene.zone_server({"example.com": "", **supporting_zones(mail_ip)})
    mail = scene.mail("page", {"DNS_CHECK_INTERVAL": "2s"}, ip=mail_ip, dns=bind)
    zone = printed_zone(mail, "example.com")
    bind.serve({"example.com": zone, **supporting_zones(mail_ip)})
    mail.wait_for_log(READY)

    link = mail.exec("mailboot", "status", "--link").stdout.strip()
    token = link.removeprefix(f"https://{HOSTNAME}/")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), link
    assert f"page: the records page is at {link} " in mail.logs()  # said at the start

    # A wrong token is any unknown path: the same 404, byte for byte.
    unknown = fetch(mail, "/nothing-here")
    assert unknown[0] == 404
    assert fetch(mail, f"/{token[:-1]}x") == unknown and fetch(mail, f"/{token}/") == unknown
    eventually(lambda: b"READY: every required" in fetch(mail, f"/{token}")[1], 60,
               "the worker's snapshot to show READY", interval=3)

    printed = records_as_printed(mail)
    with chromium(scene.directory / "chromium", {HOSTNAME: mail_ip}) as browser:
        browser.grant_clipboard(f"https://{HOSTNAME}")
        browser.open(link)
        shown = cards(browser)
        for record in printed:
            card = shown[(record["name"], record["type"])]
            assert card["status"] == "ok" or not record["required"], (record, card)
            assert card["button"], card  # the script ran: the copy buttons show
        screenshots(browser, "ready")

        # The DKIM key: the longest value, copied whole, exactly as printed.
        dkim = next(r for r in printed if r["kind"] == "dkim")
        card = shown[(dkim["name"], "TXT")]
        assert card["value"] == dkim["value"]
        selector = f'div.rec[data-name="{dkim["name"]}"] button'
        browser.page.send("Emulation.setFocusEmulationEnabled", enabled=True)
        browser.page.evaluate(f"document.querySelector('{selector}').click()", gesture=True)
        copied = eventually(lambda: browser.page.evaluate("navigator.clipboard.readText()",
                                                          gesture=True) or None,
                            10, "the copied value on the clipboard", interval=0.2)
        assert copied == dkim["value"]
        assert browser.page.evaluate(f"document.querySelector('{selector}').textContent") \
            == "Copied"

        # The user's DMARC record disappears; the worker looks again (SIGUSR1: every task now).
        dmarc = next(r for r in printed if r["kind"] == "dmarc")
        bind.serve({"example.com": without(zone, dmarc["name"], "TXT"),
                    **supporting_zones(mail_ip)})
        docker("kill", "--signal", "USR1", mail.name)
        mail.wait_for_log(f"dns: {dmarc['name'].rstrip('.')} TXT is missing")

        def dmarc_state() -> str | None:  # the run's snapshot is written as it ends
            browser.open(link)
            state = cards(browser)[(dmarc["name"], "TXT")]["status"]
            return state if state == "missing" else None

        # Every look counts against the page's rate limit (a burst of 20, then one in 3 s).
        eventually(dmarc_state, 60, "the page to show the DMARC record missing", interval=3)
        assert "NOT READY" in browser.page.evaluate("document.body.innerText")
        screenshots(browser, "dmarc-missing")

    # A new link: the old one is any unknown path from then on.
    new = mail.exec("mailboot", "status", "--new-link").stdout.strip()
    assert new != link and fetch(mail, f"/{token}") == unknown
    assert fetch(mail, "/" + new.rsplit("/", 1)[1])[0] == 200
