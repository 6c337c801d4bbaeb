"""The SDK docs' checkout example (docs/sdk.md) runs as written, against the in-process fake."""

from __future__ import annotations

import pathlib
import re
import time

import pytest

from loyalty.clients import LoyaltyClient
from loyalty.clients.testing import FakeLoyaltyServer

README = pathlib.Path(__file__).resolve().parent.parent / "docs" / "sdk.md"


def example_code() -> str:
    """The first Python block of the section: the e-commerce example."""
    section = README.read_text().split("## Example: an e-commerce checkout with points", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


@pytest.fixture
def fake(monkeypatch):
    with FakeLoyaltyServer() as server:
        monkeypatch.setenv("LOYALTY_TARGET", server.target)
        monkeypatch.delenv("LOYALTY_API_KEY", raising=False)
        yield server


def final_state(fake):
    with LoyaltyClient(fake.target) as client:
        balance = client.get_balance("customer-1042")
        kinds = [t.kind for t in client.iter_transactions("customer-1042")]
    return balance, kinds


def test_the_example_runs_and_prints_what_its_comments_say(fake, capsys):
    exec(compile(example_code(), str(README), "exec"), {"__name__": "example"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["104 [('sneakers', 89), ('socks', 15)]", "40 10 64", "15 0 49"]
    assert len(lines) == 3 + 5  # one line per transaction
    balance, kinds = final_state(fake)
    assert (balance.available, balance.redeemed, balance.reversed) == (49, 40, 15)
    assert kinds == ["REVERSE", "CAPTURE", "RESERVE", "EARN", "ENROLL"]


def test_the_example_resolves_a_capture_whose_answer_was_lost(fake, capsys, monkeypatch):
    # Every capture attempt is applied (the first) or replayed, then its answer is
    # lost: the retries run out and the example's resolve branch takes over.
    fake.fail_next(100, method="Capture", after_apply=True)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # no waiting between retries
    exec(compile(example_code(), str(README), "exec"), {"__name__": "example"})
    assert capsys.readouterr().out.splitlines()[1:3] == ["40 10 64", "15 0 49"]
    assert len(fake.calls_to("Capture")) == 5 and len({c.request.request_id for c in fake.calls_to("Capture")}) == 1
    assert fake.calls_to("GetOperation")[0].request.request_id == "order-5002-capture"
    balance, _ = final_state(fake)
    assert balance.redeemed == 40  # captured once


def test_the_example_resends_a_capture_that_never_arrived(fake, capsys, monkeypatch):
    fake.fail_next(5, method="Capture")  # refused before applying, five times: all retries
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)
    exec(compile(example_code(), str(README), "exec"), {"__name__": "example"})
    assert capsys.readouterr().out.splitlines()[1] == "40 10 64"
    assert len(fake.calls_to("Capture")) == 6  # five failed attempts, then the resend
    balance, _ = final_state(fake)
    assert balance.redeemed == 40
