"""Shadow replay (`remedium replay --shadow`) over the incident library, and `incident export`.

The library's histories are real recordings (scripts/record_histories.py). A changed runbook
must produce exactly the decision diff it causes on them, an unchanged one `same`; the
export test takes an incident from a running `remedium up` and shadow-replays it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from remedium.cli.main import main
from remedium.models import IncidentResult
from remedium.replay import replay_paths
from remedium.shadow import load_history_file, read_history
from tests.support import TargetService
from tests.test_remedium_up import VECTOR, WORKFLOW_ID, Up, _wait_stage, api_incident_env

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "tests" / "histories"
RUNBOOKS = REPO / "runbooks"
# Recorded with the test runbook of remedium.demo.recording (`web-restart`): determinism fixtures.
FIXTURES = ["approval-timeout", "approved-resolved", "rejected", "verify-failed-rolled-back"]
# Recorded with the shipped runbooks/: a shadow replay of runbooks/ must say `same` for each.
SHIPPED = [
    "closed-upstream",
    "escalated-blast-radius",
    "escalated-freeze",
    "escalated-rate-limit",
    "etl-source-timeout-resolved",
    "llm-investigation",
    "no-runbook",
    "resolved-no-approval",
    "resolved-supervised",
]
WEB = "web-health-restart.yaml"
NO_WEB_RUNBOOK = (
    "no candidate runbook's conditions hold (web-health-restart: condition "
    "`facts.health.ok and facts.health.value.status >= 600` is false)"
)


def _shadow(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], runbooks: Path, *paths: str, policy: Path | None = None) -> Any:
    extra = ["--policy", str(policy)] if policy else []
    code, out, _ = _shadow(capsys, "--shadow", str(runbooks), *extra, "--json", *paths)
    document = json.loads(out)
    document["code"] = code
    return document


def _by_name(document: Any) -> dict[str, Any]:
    return {Path(r["path"]).stem: r for r in document["results"]}


def _variant(tmp: Path, old: str, new: str, file: str = WEB) -> Path:
    """runbooks/ with one edit: the change under test."""
    target = tmp / "runbooks"
    shutil.copytree(RUNBOOKS, target)
    text = (target / file).read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {file}"
    (target / file).write_text(text.replace(old, new))
    return target


def _history(name: str) -> str:
    return str(LIBRARY / f"{name}.json")


def test_library_covers_every_outcome_and_replays_deterministically() -> None:
    """The CI check, part 1: every recording replays against today's workflow code."""
    names = sorted(p.stem for p in LIBRARY.glob("*.json"))
    assert set(FIXTURES + SHIPPED) <= set(names)
    results = asyncio.run(replay_paths([LIBRARY]))
    assert [(p.name, e) for p, e in results if e is not None] == []


def test_unchanged_shipped_runbooks_are_the_same_on_the_whole_library(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The CI check, part 2: runbooks/ shadow-replays as `same`; the four fixtures, recorded
    with the test runbook, are `same` under that runbook (written back from their histories)."""
    document = _json(capsys, RUNBOOKS, *[_history(n) for n in SHIPPED])
    assert document["code"] == 0, document
    assert (document["same"], document["differ"], document["errors"]) == (len(SHIPPED), 0, 0)

    for name in FIXTURES:  # each recorded with its own variant of that runbook
        recorded = tmp_path / name
        recorded.mkdir()
        rec = asyncio.run(read_history(load_history_file(LIBRARY / f"{name}.json")))
        assert rec.prepared is not None
        for runbook in rec.prepared.candidates:
            (recorded / f"{runbook.name}.yaml").write_text(
                yaml.safe_dump(runbook.model_dump(mode="json", by_alias=True, exclude_defaults=True))
            )
        fixture = _json(capsys, recorded, _history(name))
        assert fixture["code"] == 0 and fixture["same"] == 1, fixture
    # ...and against runbooks/ they differ by the runbook chosen, which is what a shadow is for
    (result,) = _json(capsys, RUNBOOKS, _history("verify-failed-rolled-back"))["results"]
    assert result["diff"] == ["runbook: web-restart -> web-health-restart"]


def _policy_of(name: str, tmp: Path, **changes: Any) -> Path:
    """The policy a recording ran under, with top-level sections replaced: the change under test."""
    rec = asyncio.run(read_history(load_history_file(LIBRARY / f"{name}.json")))
    assert rec.prepared is not None
    policy = rec.prepared.policy.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    file = tmp / "policy.yaml"
    file.write_text(yaml.safe_dump(policy | changes))
    return file


def test_an_investigated_incident_replays_its_recorded_finding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The model's replies are facts of the history: the proposal is decided on the new library."""
    (same,) = _json(capsys, RUNBOOKS, _history("llm-investigation"))["results"]
    assert same["same"] is True, same
    assert same["shadow"]["investigation"] == {"breaker": "ARMED", "proposal": "crashloop-restart"}
    assert same["shadow"]["level"] == "advisory"  # the demo policy has trust; a proposal is held there

    renamed = _variant(
        tmp_path / "a", "  - id: restart\n", "  - id: restart-deployment\n", "crashloop-restart.yaml"
    )
    (result,) = _json(capsys, renamed, _history("llm-investigation"))["results"]
    needs = (
        "needs the dry run of step restart-deployment (kubernetes.rollout_restart) with these params, "
        "not in the history"
    )
    assert result["diff"][:2] == ["steps: ['restart'] -> ['restart-deployment']", "step restart: removed"]
    assert result["diff"][2].startswith("step restart-deployment: added (kubernetes.rollout_restart ")
    assert result["diff"][-1].endswith(f"-> unknown ({needs})")
    assert result["needs"] == [needs]

    gone = tmp_path / "b"
    shutil.copytree(RUNBOOKS, gone)
    (gone / "crashloop-restart.yaml").unlink()
    (refused,) = _json(capsys, gone, _history("llm-investigation"))["results"]
    why = "runbook 'crashloop-restart' is not in the library"
    assert refused["diff"][:2] == [
        f"runbook: crashloop-restart -> none (its proposal was refused: {why})",
        f"proposal: crashloop-restart -> refused ({why})",
    ]
    assert refused["diff"][-1] == (
        "escalation: resolved (recovered: all conditions hold) -> escalated (its proposal was refused: "
        f"{why})"
    )
    assert refused["shadow"]["investigation"] == {"breaker": "ARMED", "proposal": f"refused ({why})"}


def test_a_recorded_level_against_a_lower_supervised_max_risk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """At the recorded level supervised a medium step ran unasked; with supervised_max_risk low it asks."""
    (recorded,) = _json(capsys, RUNBOOKS, _history("resolved-supervised"))["results"]
    assert recorded["same"] is True and recorded["recorded"]["level"] == "supervised"
    trust = {"start": "supervised", "supervised_max_risk": "low", "review_sample": 0.0}
    policy = _policy_of("resolved-supervised", tmp_path, trust=trust)
    (result,) = _json(capsys, RUNBOOKS, _history("resolved-supervised"), policy=policy)["results"]
    asked = "needs a human's decision on step restart-pool, not in the history (nobody was asked)"
    assert result["diff"] == [
        "step restart-pool approval: not needed -> needed (level supervised asks for medium-risk steps "
        "(supervised_max_risk low))",
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        f"escalation: resolved (recovered: all conditions hold) -> unknown ({asked})",
    ]
    assert result["needs"] == [asked]
    # without trust the level is gone, and the risk list (empty) lets the step run as recorded
    plain = _policy_of("resolved-supervised", tmp_path, trust=None)
    (untrusted,) = _json(capsys, RUNBOOKS, _history("resolved-supervised"), policy=plain)["results"]
    assert untrusted["diff"] == ["level: supervised -> none (no trust)"]


def test_a_policy_rule_that_denies_a_recorded_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Rules are judged on the recorded dry run at the recorded time (not now)."""
    rec = asyncio.run(read_history(load_history_file(LIBRARY / "resolved-no-approval.json")))
    at = rec.dry_run_at["restart-pool"]
    then = f"time.date == '{at:%Y-%m-%d}' and time.hhmm == '{at:%H:%M}'"
    rules = [
        {"id": "never-at-other-times", "when": f"not ({then})", "effect": "deny"},
        {
            "id": "no-pool-restarts",
            "when": "step.action == 'http.request' and 'restart' in dry_run.target",
            "effect": "deny",
        },
    ]
    policy = _policy_of("resolved-no-approval", tmp_path, rules=rules)
    (result,) = _json(capsys, RUNBOOKS, _history("resolved-no-approval"), policy=policy)["results"]
    assert result["diff"] == [
        "step restart-pool guard: not refused -> refused by policy_rule (step restart-pool refused by "
        "policy rule no-pool-restarts)",
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        "escalation: resolved (recovered: all conditions hold) -> escalated (refused by policy rule "
        "no-pool-restarts)",
    ]
    assert result["needs"] == []


def test_an_added_escalate_when_that_holds_on_recorded_facts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runbooks = _variant(
        tmp_path, "escalate:\n", "escalate:\n  when:\n    - facts.health.value.status >= 500\n"
    )
    (result,) = _json(capsys, runbooks, _history("resolved-no-approval"))["results"]
    held = "escalate.when `facts.health.value.status >= 500` holds"
    assert result["diff"] == [
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        f"escalate.when: none held -> would escalate at diagnosis ({held})",
        f"escalation: resolved (recovered: all conditions hold) -> escalated ({held})",
    ]


def test_a_changed_threshold_gives_exactly_its_diff(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runbooks = _variant(tmp_path, "facts.health.value.status >= 500", "facts.health.value.status >= 600")
    results = _by_name(_json(capsys, runbooks, _history("resolved-no-approval"), _history("no-runbook")))
    assert results["no-runbook"]["same"] is True  # nothing matched before, nothing matches now
    assert results["resolved-no-approval"]["diff"] == [
        f"runbook: web-health-restart -> none ({NO_WEB_RUNBOOK})",
        "steps: ['restart-pool'] -> []",
        "step restart-pool: removed",
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        f"escalation: resolved (recovered: all conditions hold) -> escalated ({NO_WEB_RUNBOOK})",
    ]
    assert results["resolved-no-approval"]["needs"] == []


def test_a_changed_threshold_on_the_etl_incident(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The README's worked example: the lag threshold raised from 30 min to 3 h."""
    runbooks = _variant(
        tmp_path,
        "facts.replica_lag.value.by[vars.lagging_replica] > 1800",
        "facts.replica_lag.value.by[vars.lagging_replica] > 10800",
        "etl-source-timeout.yaml",
    )
    (result,) = _json(capsys, runbooks, _history("etl-source-timeout-resolved"))["results"]
    reason = (
        "no candidate runbook's conditions hold (etl-source-timeout: condition "
        "`facts.replica_lag.ok and facts.replica_lag.value.by[vars.lagging_replica] > 10800` is false)"
    )
    assert result["diff"][:4] == [
        f"runbook: etl-source-timeout -> none ({reason})",
        "steps: ['switch-source', 'rerun-job'] -> []",
        "step switch-source: removed",
        "step rerun-job: removed",
    ]
    assert result["diff"][4].startswith("verify round 1: not_resolved (")
    assert result["diff"][5] == "verify round 2: resolved (recovered: all conditions hold) -> not run"
    assert result["diff"][6:] == [
        f"escalation: resolved (recovered: all conditions hold) -> escalated ({reason})"
    ]


def test_a_different_step_needs_its_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    runbooks = _variant(tmp_path, "  - id: restart-pool\n", "  - id: drain-pool\n")
    results = _by_name(_json(capsys, runbooks, _history("resolved-no-approval"), _history("closed-upstream")))
    needs = "needs the dry run of step drain-pool (http.request) with these params, not in the history"
    resolved = results["resolved-no-approval"]
    assert resolved["diff"][:3] == [
        "steps: ['restart-pool'] -> ['drain-pool']",
        "step restart-pool: removed",
        resolved["diff"][2],
    ]
    assert resolved["diff"][2].startswith('step drain-pool: added (http.request {"json": {"pool": "web"}')
    assert resolved["diff"][3:] == [
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        f"escalation: resolved (recovered: all conditions hold) -> unknown ({needs})",
    ]
    assert resolved["needs"] == [needs]
    # closed upstream before that step: the shadow stops where the recording was stopped
    closed = results["closed-upstream"]
    assert closed["needs"] == [] and len(closed["diff"]) == 3


def test_an_added_approval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    runbooks = _variant(tmp_path, "approval: {timeout: 30m}", "approval: {required: true, timeout: 30m}")
    results = _by_name(
        _json(capsys, runbooks, _history("resolved-no-approval"), _history("escalated-blast-radius"))
    )
    asked = "needs a human's decision on step restart-pool, not in the history (nobody was asked)"
    assert results["resolved-no-approval"]["diff"] == [
        "step restart-pool approval: not needed -> needed (the runbook asks for approval)",
        "verify round 1: resolved (recovered: all conditions hold) -> not run",
        f"escalation: resolved (recovered: all conditions hold) -> unknown ({asked})",
    ]
    assert results["resolved-no-approval"]["needs"] == [asked]
    # the blast radius refuses before anyone is asked: only the approval rule differs
    assert results["escalated-blast-radius"]["diff"] == [
        "step restart-pool approval: not needed -> needed (the runbook asks for approval)"
    ]


def test_a_stricter_policy_with_policy_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rec = asyncio.run(read_history(load_history_file(LIBRARY / "escalated-freeze.json")))
    assert rec.prepared is not None
    policy = rec.prepared.policy.model_dump(mode="json", by_alias=True)
    policy["freeze"]["on_frozen"] = "wait"  # the recorded policy escalated on a freeze
    file = tmp_path / "policy.yaml"
    file.write_text(yaml.safe_dump(policy))
    (result,) = _json(capsys, RUNBOOKS, _history("escalated-freeze"), policy=file)["results"]
    assert result["diff"][0] == (
        "step restart-pool guard: refused by freeze (step restart-pool not started: global freeze by "
        "carol: change window) -> not refused"
    )
    assert result["diff"][1].startswith("escalation: escalated (step restart-pool not started") and result[
        "diff"
    ][1].endswith("-> unknown (needs the result of step restart-pool (http.request), not in the history)")


def test_a_fact_the_history_lacks_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    runbooks = _variant(
        tmp_path,
        "decide:\n  when:\n",
        "  - id: error_rate\n    kind: metric\n    with:\n      query: 'rate(http_errors_total[5m])'\n"
        "      above: 1\ndecide:\n  when:\n    - facts.error_rate.ok and facts.error_rate.value.breached\n",
    )
    code, out, err = _shadow(capsys, "--shadow", str(runbooks), _history("resolved-no-approval"))
    assert code == 3 and err == ""
    assert "  needs fact error_rate (web-health-restart diagnose, kind metric), not in the history\n" in out
    assert out.splitlines()[-1] == "0 same, 1 differ, 0 failed"


def test_exit_codes_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _shadow(capsys, "--shadow", str(RUNBOOKS), _history("no-runbook"))
    assert code == 0 and out == f"same    {_history('no-runbook')}\n1 same, 0 differ, 0 failed\n"

    changed = _variant(tmp_path, "facts.health.value.status >= 500", "facts.health.value.status >= 600")
    code, out, _ = _shadow(capsys, "--shadow", str(changed), _history("resolved-no-approval"))
    assert code == 3 and out.startswith(f"DIFFERS {_history('resolved-no-approval')} (")

    broken = tmp_path / "broken.json"
    broken.write_text('{"events": "no"}')
    code, out, _ = _shadow(capsys, "--shadow", str(RUNBOOKS), str(broken), _history("no-runbook"))
    assert code == 1 and "FAILED  " in out and out.splitlines()[-1] == "1 same, 0 differ, 1 failed"

    code, _, err = _shadow(capsys, "--shadow", str(tmp_path / "nowhere"), _history("no-runbook"))
    assert code == 1 and err.count("\n") == 1 and "is not one" in err
    code, _, err = _shadow(capsys, "--policy", str(tmp_path / "p.yaml"), _history("no-runbook"))
    assert code == 2 and err == "remedium: --policy is only for --shadow\n"


@pytest.mark.timeout(400)
async def test_export_from_remedium_up_then_shadow_replay(tmp_path: Path) -> None:
    vector = json.loads(VECTOR.read_text())
    target = TargetService().start()
    env = api_incident_env(tmp_path, target, vector["secrets"]["current"])
    up = Up(tmp_path, env)
    await up.start()
    cli_env = {**env, "REMEDIUM_TEMPORAL_ADDRESS": f"127.0.0.1:{up.temporal_port}"}

    def remedium(*argv: str) -> subprocess.CompletedProcess[str]:
        binary = str(Path(sys.executable).with_name("remedium"))
        return subprocess.run([binary, *argv], env=cli_env, capture_output=True, text=True, timeout=120)

    rb_dir = Path(env["REMEDIUM_RUNBOOKS_DIR"])
    try:
        import httpx

        async with httpx.AsyncClient(base_url=f"http://{up.ingress}", timeout=20) as http:
            sent = await http.post(
                "/webhooks/pagerduty", content=vector["raw_body"].encode(), headers=vector["http"]["headers"]
            )
        assert sent.status_code == 202, sent.text
        client = await Client.connect(f"127.0.0.1:{up.temporal_port}", data_converter=pydantic_data_converter)
        handle = client.get_workflow_handle(WORKFLOW_ID, result_type=IncidentResult)
        await _wait_stage(handle, "awaiting_approval")

        open_file = tmp_path / "open.json"
        exported = await asyncio.to_thread(remedium, "incident", "export", WORKFLOW_ID, "-o", str(open_file))
        assert exported.returncode == 0, exported.stderr
        shadow = await asyncio.to_thread(remedium, "replay", "--shadow", str(rb_dir), str(open_file))
        assert shadow.returncode == 0, shadow.stdout + shadow.stderr  # open, and nothing differs so far

        await handle.signal("approve", {"step": "flush-cache", "by": "alice"})
        assert (await asyncio.wait_for(handle.result(), 60)).outcome == "resolved"
        closed = await asyncio.to_thread(remedium, "incident", "export", WORKFLOW_ID)  # to stdout
        assert closed.returncode == 0, closed.stderr
        closed_file = tmp_path / "closed.json"
        closed_file.write_text(closed.stdout)
        replayed = await asyncio.to_thread(remedium, "replay", str(closed_file))
        assert replayed.returncode == 0 and replayed.stdout.endswith("1 replayed, 0 failed\n")
        same = await asyncio.to_thread(
            remedium, "replay", "--shadow", str(rb_dir), "--json", str(closed_file)
        )
        assert same.returncode == 0 and json.loads(same.stdout)["same"] == 1, same.stdout

        # the same incident under a runbook whose flush step is low-risk, with a policy asking for high only
        changed = tmp_path / "changed"
        changed.mkdir()
        for file in rb_dir.glob("*.yaml"):
            runbook = yaml.safe_load(file.read_text())
            for step in runbook["plan"]:
                step["risk"] = "low"
                step.pop("approval", None)
            (changed / file.name).write_text(yaml.safe_dump(runbook))
        policy = yaml.safe_load(Path(env["REMEDIUM_POLICY_FILE"]).read_text())
        policy["approval"]["required_for"] = ["high"]
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
        differs = await asyncio.to_thread(
            remedium,
            "replay",
            "--shadow",
            str(changed),
            "--policy",
            str(tmp_path / "policy.yaml"),
            str(closed_file),
        )
        assert differs.returncode == 3, differs.stdout + differs.stderr
        assert "  step flush-cache approval: needed (" in differs.stdout
        assert ") -> not needed\n" in differs.stdout

        missing = await asyncio.to_thread(remedium, "incident", "export", "incident-pagerduty-NOSUCH")
        assert missing.returncode == 1
        assert missing.stderr == "remedium: no incident 'incident-pagerduty-NOSUCH'\n"
    finally:
        await up.stop()
        target.stop()
    assert os.path.exists(open_file)


def test_an_encrypted_history_is_read_with_the_configured_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    from remedium.codec import codec_for
    from remedium.settings import Settings
    from tests.test_codec import keys, payloads_in

    secret = keys(("k1", os.urandom(32)))
    codec = codec_for(Settings(codec_keys=SecretStr(secret)))
    assert codec is not None
    history = load_history_file(LIBRARY / "escalated-blast-radius.json")
    for event in history.events:
        if event.marker_recorded_event_attributes.marker_name == "core_patch":
            continue  # the SDK's own patch markers stay in the clear, as a worker leaves them
        for payload in payloads_in(event):
            payload.CopyFrom(asyncio.run(codec.encode([payload]))[0])
    encrypted = tmp_path / "encrypted.json"
    encrypted.write_text(history.to_json())
    assert "refused by policy" not in encrypted.read_text()

    monkeypatch.setenv("REMEDIUM_CODEC_KEYS", secret)
    code, out, _ = _shadow(capsys, "--shadow", str(RUNBOOKS), str(encrypted))
    assert code == 0 and out.startswith("same    "), out
    monkeypatch.delenv("REMEDIUM_CODEC_KEYS")
    code, out, err = _shadow(capsys, "--shadow", str(RUNBOOKS), str(encrypted))
    assert code == 1 and out.startswith(f"FAILED  {encrypted}: "), out
    assert "Traceback" not in err
