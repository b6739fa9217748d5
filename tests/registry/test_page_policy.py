"""The technician page's Content-Security-Policy names the configured alert origin only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_registry.technician_page import (
    _ORIGIN,
    TechnicianPageError,
    alerts_origin,
    page_policy,
)

DIRECTIVES = [
    "default-src",
    "script-src",
    "connect-src",
    "img-src",
    "style-src",
    "object-src",
    "base-uri",
    "form-action",
    "frame-ancestors",
]


def connect_src(policy: str) -> list[str]:
    """The sources of the policy's connect-src."""
    directives = [d.split() for d in policy.split(";")]
    assert [d[0] for d in directives] == DIRECTIVES  # nothing added, nothing split
    return next(d[1:] for d in directives if d[0] == "connect-src")


@pytest.mark.parametrize(
    ("url", "sources"),
    [
        ("", ["'self'"]),
        ("/alerts", ["'self'"]),  # behind the registry's own address
        ("http://127.0.0.1:9110", ["'self'", "http://127.0.0.1:9110"]),
        ("https://Hub.Kota.example/alerts/x?y#z", ["'self'", "https://hub.kota.example"]),
        ("http://[::1]:9110/", ["'self'", "http://[::1]:9110"]),
    ],
)
def test_the_policy_names_the_alert_origin(url: str, sources: list[str]) -> None:
    assert connect_src(page_policy(url)) == sources


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http://a;b/",  # would end the directive and start another
        "http://user:pw@hub/",
        "http://hub,evil/",
        "http://'unsafe-eval'/",
        "https://hub:99999999/",
    ],
)
def test_an_origin_a_policy_cannot_name_is_refused(url: str) -> None:
    with pytest.raises(TechnicianPageError, match="not scheme://host"):
        alerts_origin(url)


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(lambda s, rest: s + rest, st.sampled_from(["http://", "https://"]), st.text()),
    )
)
def test_any_url_gives_one_origin_or_a_refusal(url: str) -> None:
    """Whatever the setting says, the policy keeps its directives and names at most one
    origin, never a wildcard or a scheme alone."""
    try:
        policy = page_policy(url)
    except TechnicianPageError:
        return
    sources = connect_src(policy)
    assert sources[0] == "'self'"
    assert len(sources) <= 2
    assert all(_ORIGIN.match(s) for s in sources[1:])
