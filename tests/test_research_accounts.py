"""Accounts under attack: logout ends the login on the server, logins are throttled per client
address and per account without telling which accounts exist, and parallel logins cannot drive
the server's memory up (argon2 needs 64 MiB per check)."""

from __future__ import annotations

import threading
import time

import psutil
from research_helpers import PASSWORD, csrf_token, login, make_researcher, make_study


def _client_from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _attempt(client, email: str, password: str):
    token = csrf_token(client.get("/research/login").get_data(as_text=True))
    return client.post("/research/login", data={"email": email, "password": password, "csrf_token": token})


def test_a_cookie_captured_before_logout_opens_nothing_after(scored_app, client):
    make_researcher(scored_app)
    study_id = make_study(scored_app)
    login(client)
    captured = client.get_cookie("session").value
    assert client.get("/research/").status_code == 200
    token = csrf_token(client.get("/research/").get_data(as_text=True))
    assert client.post("/research/logout", data={"csrf_token": token}).status_code == 302
    thief = scored_app.test_client()
    thief.set_cookie("session", captured)
    assert thief.get("/research/").status_code == 302
    assert thief.get(f"/api/research/studies/{study_id}/summary").status_code == 401
    assert thief.get(f"/research/studies/{study_id}/export?format=csv").status_code == 401


def test_failed_logins_are_throttled_per_account_and_per_address(scored_app):
    scored_app.config["LOGIN_LIMITS"] = "3 per minute"
    make_researcher(scored_app)
    attacker = scored_app.test_client()
    for _ in range(3):
        assert _attempt(attacker, "ada@example.org", "wrong password!").status_code == 401
    refused = _attempt(attacker, "ada@example.org", PASSWORD)  # even the right one, now
    assert refused.status_code == 429
    message = refused.get_data(as_text=True)
    assert "Too many failed logins" in message
    # The same words for an account that does not exist: the throttle reveals nothing.
    other = _client_from(scored_app, "10.0.0.2")
    for _ in range(3):
        assert _attempt(other, "nobody@example.org", "wrong password!").status_code == 401
    unknown = _attempt(other, "nobody@example.org", "wrong password!")
    assert unknown.status_code == 429 and "Too many failed logins" in unknown.get_data(as_text=True)
    # Per account: from a third address, Ada's account is still locked for a while...
    third = _client_from(scored_app, "10.0.0.3")
    assert _attempt(third, "ada@example.org", PASSWORD).status_code == 429
    # ...while another account logs in from there.
    make_researcher(scored_app, email="bo@example.org")
    assert _attempt(third, "bo@example.org", PASSWORD).status_code == 302


def test_successful_logins_do_not_use_up_the_limit(scored_app):
    scored_app.config["LOGIN_LIMITS"] = "2 per minute"
    make_researcher(scored_app)
    for _ in range(4):
        assert _attempt(scored_app.test_client(), "ada@example.org", PASSWORD).status_code == 302


def test_parallel_logins_cannot_drive_memory_up(scored_app):
    scored_app.config["LOGIN_LIMITS"] = "1000 per minute"
    make_researcher(scored_app)
    process = psutil.Process()
    clients = []
    for i in range(20):
        c = _client_from(scored_app, f"10.1.0.{i}")
        clients.append((c, csrf_token(c.get("/research/login").get_data(as_text=True))))
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def attempt(c, token) -> None:
        barrier.wait()
        reply = c.post("/research/login", data={"email": "ada@example.org",
                                                "password": "wrong password!", "csrf_token": token})
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=attempt, args=pair) for pair in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    sampler.join()
    assert sorted(statuses) == [401] * 20
    grown_mb = (peak - baseline) / 2**20
    assert grown_mb < 300, f"20 parallel logins grew the process by {grown_mb:.0f} MB"
