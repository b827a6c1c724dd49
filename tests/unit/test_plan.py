"""The plan/apply core: diffs, masking, counts, apply order and failure reporting."""

from __future__ import annotations

import pytest

from runbook_lib.plan import Plan, StageFailed, diff_documents
from runbook_lib.secrets import REDACTOR


def test_diff_only_owned_keys_and_masks_secrets() -> None:
    actual = {
        "online": True,
        "proxy": {"remoteUrl": "https://a", "contentMaxAge": 1440},
        "extra": "left alone",
        "httpClient": {"authentication": {"username": "u"}},
    }
    desired = {
        "online": True,
        "proxy": {"remoteUrl": "https://b", "contentMaxAge": 1440},
        "httpClient": {"authentication": {"username": "u", "password": "pw-value-1"}},
    }
    diff = diff_documents(actual, desired)
    assert diff == {
        "proxy.remoteUrl": ["https://a", "https://b"],
        "httpClient.authentication.password": [None, "***"],
    }


def test_compare_actions_and_counts() -> None:
    plan = Plan("nexus-repos", apply=False)
    plan.compare("docker-proxy", "a", None, {"x": 1})
    plan.compare("docker-proxy", "b", {"x": 1}, {"x": 2})
    plan.compare("docker-proxy", "c", {"x": 1, "y": 0}, {"x": 1})
    assert [c.action for c in plan.changes] == ["create", "update", "unchanged"]
    assert plan.counts() == {"create": 1, "update": 1, "delete": 0, "unchanged": 1}
    rows = plan.rows()
    assert rows[1]["changes"] == "x: 1 → 2"
    assert "plan only" in plan.summary()


def test_plan_mode_writes_nothing() -> None:
    calls = []
    plan = Plan("s", apply=False)
    plan.compare("k", "a", None, {"x": 1}, create=lambda: calls.append("a"))
    result = plan.apply()
    assert calls == [] and result.not_applied == ["create k a"]


def test_apply_in_order_and_failure_says_what_was_applied() -> None:
    calls = []

    def boom():
        raise RuntimeError("Nexus answered 400")

    plan = Plan("s", apply=True)
    plan.compare("proxy", "a", None, {"x": 1}, create=lambda: calls.append("a"))
    plan.compare("proxy", "b", {"x": 1}, {"x": 1})
    plan.compare("group", "g", None, {"m": ["a"]}, create=boom)
    plan.compare("role", "r", None, {"p": 1}, create=lambda: calls.append("r"))
    with pytest.raises(StageFailed) as err:
        plan.apply()
    assert calls == ["a"]
    rec = err.value.failure_record()
    assert rec["step"] == "create group g"
    assert rec["applied"] == ["create proxy a"]
    assert rec["not_applied"] == ["create group g", "create role r"]
    assert "400" in rec["message"]


def test_records_are_scrubbed() -> None:
    REDACTOR.add("leaky-secret-123")
    try:
        plan = Plan("s")
        plan.compare("user", "u", {"note": "old"}, {"note": "has leaky-secret-123 inside"})
        assert "leaky-secret-123" not in str(plan.records()) and "leaky-secret-123" not in str(plan.rows())
    finally:
        REDACTOR.clear()


def test_table_colours_actions_for_the_html_report() -> None:
    plan = Plan("s")
    plan.compare("proxy", "new", None, {"x": 1})
    plan.compare("proxy", "same", {"x": 1}, {"x": 1})
    html = plan.table().to_html()
    assert "color: #1a7f37; font-weight: bold" in html  # create
    assert "color: #6e7781; font-weight: normal" in html  # unchanged
    assert ">new<" in html and ">same<" in html


def test_one_check_type_for_every_stage() -> None:
    """Every stage reports plan.Check (no stage defines its own check class)."""
    import ast
    from pathlib import Path

    import runbook_lib

    root = Path(runbook_lib.__file__).parent
    own = [
        f"{path.relative_to(root)}:{node.name}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Check") and path.name != "plan.py"
    ]
    assert own == []


def test_check_grades_and_ok_agree() -> None:
    from runbook_lib.plan import Check

    assert Check("a", True).status == "ok" and Check("a", False).status == "fail"
    assert Check.graded("b", "warn", "x").ok and Check.graded("b", "skipped").ok
    assert not Check.graded("b", "fail").ok
    assert Check.graded("b", "warn", "x").record() == {
        "name": "b",
        "ok": True,
        "status": "warn",
        "detail": "x",
    }
    with pytest.raises(ValueError):
        Check("c", True, "", "fail")


def test_one_name_for_the_kubernetes_client_argument() -> None:
    """Every function taking the Kubernetes client names it `api_client` (never kube_api, kube, core...)."""
    import ast
    from pathlib import Path

    import runbook_lib

    root = Path(runbook_lib.__file__).parent
    other_names = {"kube_api", "kube", "api", "k8s_api", "client_api", "kube_client"}
    found = [
        f"{path.relative_to(root)}:{node.name}({arg.arg})"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in node.args.args + node.args.kwonlyargs
        if arg.arg in other_names
        or (
            arg.annotation is not None
            and "ApiClient" in ast.unparse(arg.annotation)
            and arg.arg != "api_client"
        )
    ]
    assert found == []


def test_a_write_whose_answer_was_lost_is_reported_as_outcome_unknown() -> None:
    import httpx

    from runbook_lib.plan import answer_lost

    def lost() -> None:
        try:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        except httpx.RemoteProtocolError as err:
            raise RuntimeError("cannot reach Nexus") from err  # how a client wraps it

    plan = Plan("demo", apply=True)
    plan.compare("thing", "a", None, {"x": 1}, create=lambda: None)
    plan.compare("thing", "b", None, {"x": 1}, create=lost)
    plan.compare("thing", "c", None, {"x": 1}, create=lambda: None)
    with pytest.raises(StageFailed, match="the answer was lost") as err:
        plan.apply()
    record = err.value.failure_record()
    assert record["applied"] == ["create thing a"]
    assert record["outcome_unknown"] == ["create thing b"] and record["not_applied"] == ["create thing c"]
    assert not answer_lost(httpx.ConnectError("refused"))  # never sent: plainly not applied
    assert not answer_lost(ValueError("an error answer"))
