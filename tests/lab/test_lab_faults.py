"""Faults the stand-ins inject at run time (runbook_lab.faults): the control endpoint, each kind as a client
meets it, and the seeded draw that makes a fault sequence repeatable."""

from __future__ import annotations

import httpx
import pytest

from runbook_lab.faults import CONTROL_PATH, FaultSettings

STATUS = "/service/rest/v1/status"


def set_faults(url: str, **settings) -> dict:
    resp = httpx.put(url + CONTROL_PATH, json=settings, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_control_endpoint_sets_reports_and_clears(nexus) -> None:
    assert httpx.get(nexus.url + CONTROL_PATH).json()["settings"] == FaultSettings().__dict__
    doc = set_faults(nexus.url, error_rate=1, methods=["get"])
    assert doc["settings"]["error_rate"] == 1 and doc["settings"]["methods"] == ["GET"]
    assert httpx.get(nexus.url + STATUS).status_code == 503
    assert httpx.get(nexus.url + CONTROL_PATH).json()["injected"]["error"] == 1
    assert httpx.delete(nexus.url + CONTROL_PATH).json()["injected"] == dict.fromkeys(
        ("error", "reset", "timeout", "conflict"), 0
    )
    assert httpx.get(nexus.url + STATUS).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error_rate": 2}, "error_rate must be a number from 0 to 1"),
        ({"reset_rate": True}, "reset_rate must be a number from 0 to 1"),
        ({"error_status": 200}, "error_status must be a 4xx or 5xx code"),
        ({"typo_rate": 0.5}, "unknown fault setting(s): typo_rate"),
        ([1, 2], "fault settings must be a JSON object"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(nexus, body, message) -> None:
    resp = httpx.put(nexus.url + CONTROL_PATH, json=body)
    assert resp.status_code == 400 and resp.json()["error"] == message
    assert httpx.get(nexus.url + CONTROL_PATH).json()["settings"] == FaultSettings().__dict__


def test_the_same_seed_gives_the_same_faults(nexus) -> None:
    def sequence() -> list[int]:
        set_faults(nexus.url, error_rate=0.5, seed=7)
        return [httpx.get(nexus.url + STATUS).status_code for _ in range(20)]

    first = sequence()
    assert first == sequence() and set(first) == {200, 503}


def test_a_reset_closes_the_connection_without_an_answer(nexus) -> None:
    set_faults(nexus.url, reset_rate=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(nexus.url + STATUS)


def test_a_reset_after_processing_loses_only_the_answer(nexus) -> None:
    """The write happened; the client cannot know: what a retried POST would run into."""
    auth = ("admin", nexus.admin_password)
    set_faults(nexus.url, reset_rate=1, reset_after=True, methods=["PUT"])
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.put(
            nexus.url + "/service/rest/v1/security/realms/active",
            json=["NexusAuthenticatingRealm", "DockerToken"],
            auth=auth,
        )
    active = httpx.get(nexus.url + "/service/rest/v1/security/realms/active", auth=auth).json()
    assert active == ["NexusAuthenticatingRealm", "DockerToken"]


def test_a_timeout_holds_the_answer_past_the_clients_wait(nexus) -> None:
    set_faults(nexus.url, timeout_rate=1, timeout_s=2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(nexus.url + STATUS, timeout=0.3)


def test_latency_is_added_to_matching_requests_only(nexus) -> None:
    set_faults(nexus.url, latency_s=5, path_prefix="/service/rest/v1/repositories")
    assert httpx.get(nexus.url + STATUS, timeout=1).status_code == 200  # not matching: no delay
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(nexus.url + "/service/rest/v1/repositories", timeout=0.3)


def test_kube_conflicts_hit_writes_only_in_the_apiservers_status_shape(kube) -> None:
    set_faults(kube.url, conflict_rate=1)
    pod = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    resp = httpx.post(kube.url + "/api/v1/namespaces/default/configmaps", json=pod)
    assert resp.status_code == 409
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "Conflict" and status["code"] == 409
    assert "the object has been modified" in status["message"]
    assert httpx.get(kube.url + "/api/v1/namespaces/default/configmaps").status_code == 200
    assert httpx.get(kube.url + CONTROL_PATH).json()["injected"]["conflict"] == 1


def test_kube_unavailable_answers_503_status(kube) -> None:
    set_faults(kube.url, error_rate=1)
    resp = httpx.get(kube.url + "/api/v1/namespaces")
    assert resp.status_code == 503 and resp.json()["reason"] == "ServiceUnavailable"
