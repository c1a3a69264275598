"""Runbook and policy validation: every problem at its exact `path:line:col`.

The expected lines and columns were counted by hand from the fixtures, so a problem that
drifts to the wrong node fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remedium.cli.runbook_cmd import validate_command
from remedium.errors import ProblemsError
from remedium.models.policy import Policy
from remedium.policy_loader import load_policy, validate_policy_file
from remedium.runbook.loader import load_runbooks, validate_paths, validate_runbook_file
from remedium.yamldoc import Problem

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path("tests/fixtures")  # relative, as a user would type it (tests run from the repo root)
VALID = FIXTURES / "runbooks" / "valid"
INVALID = FIXTURES / "runbooks" / "invalid"
POLICIES = FIXTURES / "policies"

# Every registered kind is listed in the message, so an operator sees what they could have meant.
KNOWN_DIAGNOSTICS = "http, kubernetes, llm, logs, metric"
KNOWN_ACTIONS = ", ".join(
    [
        "http.request",
        "jobs.rerun",
        "jobs.trigger_cronjob",
        "jobs.wait",
        "kubernetes.delete_pod",
        "kubernetes.patch_configmap",
        "kubernetes.rollback",
        "kubernetes.rollout_restart",
        "kubernetes.scale",
        "kubernetes.wait_rollout",
    ]
)
HTTP_KEYS = "expect_status, headers, json, method, undo, url"
STEP_KEYS = "action, approval, description, id, risk, timeout, when, with"
TOP_KEYS = "apiVersion, decide, diagnose, escalate, kind, limits, match, metadata, plan, report, vars, verify"

EXPECTED: dict[str, list[str]] = {
    "bad-params.yaml": [
        "8:5: missing required key 'with.url'",
        f"15:7: unknown key 'methd' (allowed: {HTTP_KEYS})",
        "16:28: plan[0].with.expect_status[1]: expected an integer, got 'accepted'",
        "17:19: plan[0].with.undo.url: expected a URL (relative URL without a base), got 'not-a-url'",
    ],
    "condition-syntax.yaml": [
        "10:7: condition syntax error: chunk after expression",
        "14:11: condition syntax error: expected token 'name', got '|'",
        "18:13: condition syntax error: unexpected 'end of template'",
    ],
    "duplicate-step-id.yaml": [
        "15:9: duplicate step id 'restart' (first at line 12)",
        "20:11: duplicate step id 'health' (first at line 8)",
    ],
    "duplicate-yaml-key.yaml": ["12:7: duplicate key 'url' (first at line 11)"],
    "invalid-duration.yaml": [
        "10:14: plan[0].timeout: invalid duration '5 minutes': use forms like 45s, 30m, 1h30m",
    ],
    "missing-section.yaml": ["1:1: missing required section 'verify'"],
    "several-problems.yaml": [
        "4:9: metadata.name: expected a lowercase name of letters, digits, '-' and '_' (like 'web-restart'), "
        "got 'Several Problems'",
        "6:23: match.source[1]: expected 'pagerduty', 'alertmanager' or 'manual', got 'nagios'",
        "8:5: missing required key 'id'",
        "9:11: plan[0].risk: expected 'low', 'medium' or 'high', got 'huge'",
        "13:12: verify.success: expected at least 1 item(s), got 0",
        "14:10: verify.every: invalid duration 'soon': use forms like 45s, 30m, 1h30m",
        "16:16: limits.max_actions: must be >= 1, got 0",
        f"17:1: unknown key 'owner' (allowed: {TOP_KEYS})",
    ],
    "template-syntax.yaml": [
        "11:12: template syntax error: unexpected '}'",
        "18:5: template syntax error: unexpected '}'",  # third line of the `|` block
    ],
    "typo-key.yaml": [
        "8:5: missing required key 'action'",
        f"9:5: unknown key 'actoin' (allowed: {STEP_KEYS})",
    ],
    "unknown-action.yaml": [
        f"9:11: unknown diagnostic kind 'htp' (known: {KNOWN_DIAGNOSTICS})",
        f"13:13: unknown action 'k8s.restrat' (known: {KNOWN_ACTIONS})",
    ],
    "wrong-type.yaml": ["15:16: limits.max_actions: expected an integer, got 'three'"],
    "yaml-syntax.yaml": [
        "7:5: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 6, column 11)",
    ],
}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def lines(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def expected_lines(name: str) -> list[str]:
    return [f"{INVALID / name}:{line}" for line in EXPECTED[name]]


def test_every_invalid_fixture_has_expectations() -> None:
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_fixture_reports_exact_locations(name: str) -> None:
    runbook, problems = validate_runbook_file(INVALID / name)
    assert runbook is None
    assert lines(problems) == expected_lines(name)


def test_valid_fixtures_load() -> None:
    runbooks = load_runbooks([VALID])
    assert [r.name for r in runbooks] == ["queue-drain", "web-restart"]  # sorted file names, .yml too
    web = runbooks[1]
    assert web.plan[0].with_["url"] == "{{ alert.annotations.admin_url }}/restart"
    assert web.plan[0].approval.timeout is not None and web.plan[0].approval.timeout.total_seconds() == 900


def test_template_values_are_not_type_errors() -> None:
    # bad-params.yaml's url is a template where a URL is expected: rendered later, not reported.
    _, problems = validate_runbook_file(INVALID / "bad-params.yaml")
    assert not any("with.url:" in p.message for p in problems)


def test_several_problems_are_all_reported() -> None:
    _, problems = validate_runbook_file(INVALID / "several-problems.yaml")
    assert len(problems) == 8


def test_load_runbooks_is_all_or_nothing(tmp_path: Path) -> None:
    for source in VALID.iterdir():
        shutil.copy(source, tmp_path / source.name)
    shutil.copy(INVALID / "typo-key.yaml", tmp_path / "typo-key.yaml")
    with pytest.raises(ProblemsError) as caught:
        load_runbooks([tmp_path])
    bad = str(tmp_path / "typo-key.yaml")
    assert str(caught.value).splitlines() == [
        f"{bad}:8:5: missing required key 'action'",
        f"{bad}:9:5: unknown key 'actoin' (allowed: {STEP_KEYS})",
    ]
    assert all(p.path == bad for p in caught.value.problems)


def test_load_runbooks_reports_every_file() -> None:
    with pytest.raises(ProblemsError) as caught:
        load_runbooks([INVALID])
    assert str(caught.value).splitlines() == [
        line for name in sorted(EXPECTED) for line in expected_lines(name)
    ]


def test_duplicate_runbook_name_across_files(tmp_path: Path) -> None:
    original = (VALID / "web-restart.yaml").read_text()
    (tmp_path / "a.yaml").write_text(original)
    (tmp_path / "b.yaml").write_text("# a copy\n" + original)
    problems = validate_paths([tmp_path])
    assert lines(problems) == [
        f"{tmp_path / 'b.yaml'}:5:9: duplicate runbook name 'web-restart' (first in {tmp_path / 'a.yaml'}:4)"
    ]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    assert load_runbooks([tmp_path]) == []
    assert lines(validate_paths(["no/such/runbooks"])) == ["no/such/runbooks:1:1: no such file or directory"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "1:1: file is empty: expected a YAML mapping"),
        (b"# only a comment\n", "1:1: file is empty: expected a YAML mapping"),
        (b"\n- a\n- b\n", "2:1: top level must be a mapping, got a list"),
        (b"kind: Runbook\nmetadata:\n  name: caf\xe9\n", "3:12: file is not valid UTF-8 (byte 0xe9)"),
        (b"kind: Runbook\nmetadata: \x07\n", "2:11: YAML syntax error: unacceptable character #x0007"),
        (
            b"a: 1\n---\nb: 2\n",
            "2:1: YAML syntax error: expected a single document in the stream, but found another document",
        ),
    ],
)
def test_unreadable_documents(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert lines(validate_runbook_file(path)[1]) == [f"{path}:{expected}"]


def test_empty_value_points_at_its_key(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    text = (VALID / "web-restart.yaml").read_text()
    text = text.replace("  name: web-restart\n", "").replace("  description: Restart the", "  # Restart the")
    path.write_text(text)
    assert lines(validate_runbook_file(path)[1]) == [f"{path}:3:1: metadata: expected a mapping, got null"]


# --- policy ----------------------------------------------------------------------------------


def test_policy_default_when_no_file() -> None:
    assert load_policy(None) == Policy()


def test_policy_valid() -> None:
    policy = load_policy(POLICIES / "policy.yaml")
    assert policy.approval.approvers == ["alice", "bob"]
    assert policy.approval.required_for == ["medium", "high"]
    assert validate_policy_file(POLICIES / "policy.yaml") == []


def test_policy_typo_reports_line_and_column() -> None:
    path = POLICIES / "typo-policy.yaml"
    with pytest.raises(ProblemsError) as caught:
        load_policy(path)
    assert str(caught.value).splitlines() == [
        f"{path}:5:3: unknown key 'requred_for' "
        "(allowed: approvers, quorum, require_verified, required_for, timeout)",
        f"{path}:6:12: approval.timeout: invalid duration '10 minutes': use forms like 45s, 30m, 1h30m",
    ]


def test_policy_escalation_takes_one_way_to_hand_over(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: remedium/v1\nkind: Policy\nescalation:\n  pagerduty:\n"
        "    escalation_level: 3\n    assign_to: [PUSER01]\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f"{path}:5:5: escalation.pagerduty: choose one way to escalate, not escalation_level and assign_to"
    )
    path.write_text("escalation:\n  pagerduty:\n    assign_to: [PUSER01, PUSER02]\n")
    assert load_policy(path).escalation.pagerduty.describe() == "reassigns this incident to PUSER01, PUSER02"


def test_policy_missing_file() -> None:
    with pytest.raises(ProblemsError) as caught:
        load_policy(Path("no/such/policy.yaml"))
    assert str(caught.value) == "no/such/policy.yaml:1:1: no such file or directory"


# --- the CLI ---------------------------------------------------------------------------------


def run_cli(*paths: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from remedium.cli.runbook_cmd import validate_command; import sys; "
        "sys.exit(validate_command(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_invalid_directory() -> None:
    result = run_cli(f"{INVALID}/")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{INVALID}/{name}:{line}" for name in sorted(EXPECTED) for line in EXPECTED[name]
    ]


def test_cli_valid_directory_and_policy() -> None:
    result = run_cli(str(POLICIES / "policy.yaml"), str(VALID))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["ok: 2 runbooks and 1 policy valid"]
    result = run_cli(str(VALID))
    assert (result.returncode, result.stdout) == (0, "ok: 2 runbooks valid\n")


def test_cli_policy_problems_in_argument_order(capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(POLICIES / "typo-policy.yaml")
    wrong = str(INVALID / "wrong-type.yaml")
    assert validate_command([policy, wrong, "missing.yaml"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{policy}:5:3: unknown key 'requred_for' "
        "(allowed: approvers, quorum, require_verified, required_for, timeout)",
        f"{policy}:6:12: approval.timeout: invalid duration '10 minutes': use forms like 45s, 30m, 1h30m",
        f"{wrong}:15:16: limits.max_actions: expected an integer, got 'three'",
        "missing.yaml:1:1: no such file or directory",
    ]


def test_cli_takes_a_policy_without_kind_as_the_worker_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  approvers: [alice]\n  timeout: 30m\n")
    assert validate_command([str(policy), str(VALID)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ok: 2 runbooks and 1 policy valid"]
    policy.write_text("approval:\n  approvers: [alice]\n  timeout: soon\n")
    assert validate_command([str(policy)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{policy}:3:12: approval.timeout: invalid duration 'soon': use forms like 45s, 30m, 1h30m"
    ]
