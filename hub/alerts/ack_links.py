"""One-tap acknowledgement links: signed, expiring, good for one use.

A link's token is ``base64url(key|instance|expires_ms|nonce) . base64url(HMAC-SHA256)``
under ``[alerts] link_secret``. ``acknowledge_by_link`` refuses a token whose signature
does not check out (forged or altered), that has expired, or that was used before (its
nonce is kept in the alert database); otherwise it acknowledges that instance of the
alert, as ``link``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from hub.alerts.alert_store import AlertStore, AlertStoreError


class LinkOutcome(StrEnum):
    """What became of a tapped link."""

    ACKNOWLEDGED = "acknowledged"
    ALREADY = "already acknowledged or resolved"
    USED = "this link was used already"
    EXPIRED = "this link has expired"
    FORGED = "this link is not valid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class LinkSigner:
    """Makes and checks link tokens with one secret."""

    secret: bytes
    ttl_ms: int

    def token(self, key: str, instance: int, now_ms: int) -> str:
        """A fresh token acknowledging ``instance`` of alert ``key``."""
        body = f"{key}|{instance}|{now_ms + self.ttl_ms}|{secrets.token_urlsafe(12)}".encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.secret, body, hashlib.sha256).digest()

    def read(self, token: str, now_ms: int) -> tuple[str, int, str] | LinkOutcome:
        """(key, instance, nonce) of a good token; else why it is refused."""
        try:
            body_text, mac_text = token.split(".", 1)
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, UnicodeError):
            return LinkOutcome.FORGED
        if not hmac.compare_digest(mac, self._mac(body)):
            return LinkOutcome.FORGED
        try:
            key_part, instance, expires, nonce = body.decode().rsplit("|", 3)
            instance_no, expires_ms = int(instance), int(expires)
        except (ValueError, UnicodeError):
            return LinkOutcome.FORGED
        if now_ms >= expires_ms:
            return LinkOutcome.EXPIRED
        return key_part, instance_no, nonce


def acknowledge_by_link(
    store: AlertStore, signer: LinkSigner, token: str, now_ms: int
) -> LinkOutcome:
    """Check a tapped token and acknowledge its alert once."""
    read = signer.read(token, now_ms)
    if isinstance(read, LinkOutcome):
        return read
    key, instance, nonce = read
    if not store.use_link(nonce, now_ms):
        return LinkOutcome.USED
    try:
        done = store.operator_event(key, "ack", "link", now_ms, instance=instance)
    except AlertStoreError:
        return LinkOutcome.ALREADY
    return LinkOutcome.ACKNOWLEDGED if done else LinkOutcome.ALREADY
