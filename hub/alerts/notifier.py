"""Send the outbox's pages through apprise, with retries and a log of every attempt.

The notifier has its own thread and its own connection to the alert database. A page
is taken from the outbox when due, sent, and its attempt written to ``deliveries``;
a failure is retried with a capped exponential backoff (``retry_min_s`` doubling up
to ``retry_max_s``) until ``max_attempts``, then marked failed (and logged). Webhook
pages (``json://``, ``jsons://``, ``form://``, ``xml://``) carry the page id in the header
``X-Kotahub-Page``, so a receiver can drop the rare resend after a crash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apprise

from hub.alerts.alert_store import AlertStore, Page
from hub.alerts.clock import Clock

log = logging.getLogger(__name__)

HEADER_SCHEMES = ("json://", "jsons://", "form://", "forms://", "xml://", "xmls://")
LinkMaker = Callable[[Page], str]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a page is tried."""

    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    max_attempts: int = 12
    timeout_s: float = 10.0


def with_page_header(url: str, page_id: int) -> str:
    """The apprise URL with the page id as a header, for the schemes that post HTTP."""
    if not url.startswith(HEADER_SCHEMES):
        return url
    return f"{url}{'&' if '?' in url else '?'}+X-Kotahub-Page={page_id}"


def send_page(url: str, title: str, body: str, timeout_s: float) -> tuple[bool, str]:
    """One delivery attempt through apprise: (delivered, what happened)."""
    problems: list[str] = []
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False, "not a notification URL apprise knows"
    for service in notifier:
        service.socket_read_timeout = timeout_s
        service.socket_connect_timeout = timeout_s

    def collect(entry: object, _plugin: object = None) -> None:
        problems.append(str(getattr(entry, "message", entry)))

    try:
        ok = bool(
            notifier.notify(body=body, title=title, log_callback=collect, log_level=logging.WARNING)
        )
    except Exception as err:  # a plugin bug must not stop the notifier
        return False, f"{type(err).__name__}: {err}"
    return ok, "delivered" if ok else ("; ".join(problems)[-300:] or "not delivered")


class Notifier:
    """Drains the outbox on its own thread; ``wake`` after new pages were saved."""

    def __init__(
        self,
        database: Path,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        link: LinkMaker | None = None,
        send: Callable[[str, str, str, float], tuple[bool, str]] = send_page,
    ) -> None:
        self.database = database
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.link = link
        self._send = send
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="alerts-notifier", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New pages may be due."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the page being sent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        store = AlertStore(self.database)
        try:
            while not self._stop.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                try:
                    self.drain(store)
                except Exception:
                    log.exception("alert notifier failed; retrying in a second")
                    self._stop.wait(1.0)
        finally:
            store.close()

    def drain(self, store: AlertStore) -> int:
        """Send every page that is due; return how many were tried."""
        tried = 0
        while not self._stop.is_set():
            due = store.due_pages(self.clock.now_ms())
            if not due:
                return tried
            for page in due:
                if self._stop.is_set():
                    return tried
                self.deliver(store, page)
                tried += 1
        return tried

    def deliver(self, store: AlertStore, page: Page) -> bool:
        """Try one page and record the attempt."""
        body = page.body
        if self.link is not None and page.kind not in ("clear", "flap_end"):
            body = f"{body}\nAcknowledge: {self.link(page)}"
        url = with_page_header(page.target, page.id)
        ok, detail = self._send(url, page.title, body, self.policy.timeout_s)
        now = self.clock.now_ms()
        attempt = page.attempts + 1
        retry_at: int | None = None
        if not ok:
            self.failures += 1
            if attempt < self.policy.max_attempts:
                delay = min(self.policy.retry_max_s, self.policy.retry_min_s * 2 ** (attempt - 1))
                retry_at = now + round(delay * 1000)
                if attempt == 1:
                    log.warning(
                        "page %d to %s failed (%s); retrying", page.id, _safe(page.target), detail
                    )
            else:
                log.error(
                    "page %d to %s failed %d times, given up: %s",
                    page.id,
                    _safe(page.target),
                    attempt,
                    detail,
                )
        else:
            self.sent += 1
        store.record_attempt(page, now, ok=ok, detail=detail, retry_at_ms=retry_at)
        return ok


def _safe(url: str) -> str:
    """A notification URL without its credentials, for logs."""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{host}"
