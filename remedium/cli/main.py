"""`remedium` entry point: argument parsing and dispatch; each command lives in its own module.

Command modules share only remedium.cli.common and never import this module or each other.

The process ends with os._exit after flushing, because the Temporal SDK's Rust core can
abort a short-lived interpreter at exit (exit 134, sdk-python#300).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from remedium.cli.common import USAGE_ERROR, CommandError, safe_terminal


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remedium", description="Durable incident auto-remediation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the Temporal dev server, the worker and the ingress")
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--ui-port", type=int, default=8233)
    up.add_argument("--ingress-address", default=None, help="host:port (default 127.0.0.1:8088)")
    up.add_argument("--state-dir", default=".remedium")
    up.add_argument(
        "--demo",
        action="store_true",
        help="also start the sandboxes (Kubernetes, Loki, Prometheus, Slack, Jira, PagerDuty) and use them",
    )

    demo = sub.add_parser("demo", help="run one scenario end to end on the embedded stack and sandboxes")
    demo.add_argument("--scenario", default="etl-source-timeout")
    demo.add_argument("--variant", default=None, help="a scenario's variant, e.g. worsening")
    demo.add_argument("--keep-running", action="store_true", help="keep everything up afterwards")

    sub.add_parser("worker", help="run the worker against REMEDIUM_TEMPORAL_ADDRESS")
    sub.add_parser("ingress", help="run the webhook ingress against REMEDIUM_TEMPORAL_ADDRESS")

    runbook = sub.add_parser("runbook", help="validate or try runbooks").add_subparsers(
        dest="runbook_command", required=True, metavar="SUBCOMMAND"
    )
    validate = runbook.add_parser("validate", help="check runbook (and policy) files")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--json", action="store_true", help="one JSON document: the problems found")
    test = runbook.add_parser("test", help="show match, rendered plan and dry run for an alert")
    test.add_argument("runbook", metavar="RUNBOOK")
    test.add_argument("--alert", required=True, metavar="ALERT.json")
    test.add_argument("--facts", metavar="FACTS.json", help="diagnostic results to decide with")
    test.add_argument(
        "--live", action="store_true", help="read the diagnostics from the configured systems (GET only)"
    )
    test.add_argument("--json", action="store_true")

    incident = sub.add_parser("incident", help="inspect incidents").add_subparsers(
        dest="incident_command", required=True, metavar="SUBCOMMAND"
    )
    listing = incident.add_parser("list", help="open and recent incidents")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=50)
    show = incident.add_parser("show", help="one incident's state and audit trail")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    export = incident.add_parser("export", help="one incident's history (JSON), for `remedium replay`")
    export.add_argument("id", metavar="ID")
    export.add_argument("-o", "--output", metavar="FILE", default=None, help="default: stdout")

    for verb in ("approve", "reject"):
        p = sub.add_parser(verb, help=f"{verb} the pending step of an incident")
        p.add_argument("id", metavar="ID")
        p.add_argument("--step", help="the pending step (required: a decision without it is refused)")
        p.add_argument("--as", dest="by", required=True, metavar="USER")
        p.add_argument("--reason", default="")
        p.add_argument(
            "--request", type=int, default=None, metavar="N", help="the approval request's number, to bind to"
        )
        p.add_argument("--json", action="store_true")

    policy = sub.add_parser("policy", help="try the policy's rules").add_subparsers(
        dest="policy_command", required=True, metavar="SUBCOMMAND"
    )
    p_test = policy.add_parser("test", help="which rule fires for a step (STEP.json), and why")
    p_test.add_argument("policy", metavar="POLICY")
    p_test.add_argument("--step", required=True, metavar="STEP.json")
    p_test.add_argument("--json", action="store_true")

    approvals = sub.add_parser("approvals", help="every pending approval across incidents")
    approvals.add_argument("--json", action="store_true")

    freeze = sub.add_parser("freeze", help="global kill switch: no state-changing action starts")
    freeze.add_argument("--reason", required=True)
    freeze.add_argument("--as", dest="by", default=None, metavar="USER", help="default: $USER")
    freeze.add_argument("--json", action="store_true")
    unfreeze = sub.add_parser("unfreeze", help="lift the global freeze")
    unfreeze.add_argument("--as", dest="by", default=None, metavar="USER", help="default: $USER")
    unfreeze.add_argument("--json", action="store_true")

    autonomy = sub.add_parser("autonomy", help="runbooks' earned autonomy levels").add_subparsers(
        dest="autonomy_command", required=True
    )
    a_show = autonomy.add_parser("show", help="level, cap, record and history of the runbooks")
    a_show.add_argument("runbook", nargs="?", default=None, metavar="RUNBOOK")
    a_show.add_argument("--json", action="store_true")
    a_set = autonomy.add_parser("set", help="set a runbook's level (and cap it there)")
    a_set.add_argument("runbook", metavar="RUNBOOK")
    a_set.add_argument("level", choices=["advisory", "supervised", "conditional", "full"])
    a_set.add_argument("--as", dest="by", required=True, metavar="USER")
    a_set.add_argument("--reason", required=True)
    a_set.add_argument("--json", action="store_true")
    review = sub.add_parser("review", help="post-hoc verdict on an incident a runbook handled")
    review.add_argument("id", metavar="ID")
    review.add_argument("--verdict", required=True, choices=["good", "bad"])
    review.add_argument("--as", dest="by", required=True, metavar="USER")
    review.add_argument("--reason", default="")
    review.add_argument("--json", action="store_true")

    breaker = sub.add_parser("breaker", help="an incident's LLM circuit breaker").add_subparsers(
        dest="breaker_command", required=True, metavar="SUBCOMMAND"
    )
    reset = breaker.add_parser("reset", help="re-arm a CIRCUIT_BROKEN breaker (audited)")
    reset.add_argument("id", metavar="ID")
    reset.add_argument("--as", dest="by", required=True, metavar="USER")
    reset.add_argument("--reason", default="")
    reset.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="replay exported workflow histories (JSON)")
    replay.add_argument("paths", nargs="+", metavar="PATH")
    replay.add_argument("--json", action="store_true", help="one JSON document; no progress display")
    replay.add_argument(
        "--shadow", metavar="RUNBOOK_DIR", default=None, help="decision diff under these runbooks"
    )
    replay.add_argument(
        "--policy", metavar="FILE", default=None, help="with --shadow (default: the recorded one)"
    )

    codec = sub.add_parser(
        "codec-server", help="the Temporal UI's codec endpoint: decrypt payloads for operators"
    )
    codec.add_argument("--address", default=None, help="host:port (default 127.0.0.1:8888)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its CommandError becomes `remedium: <sentence>` on stderr and its code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    with safe_terminal():  # alert, audit and fact text cannot steer the terminal (nor the logs)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return _dispatch(args)
        except KeyboardInterrupt:
            return 130
        except CommandError as exc:
            print(f"remedium: {exc}", file=sys.stderr)
            return exc.code


def _dispatch(args: argparse.Namespace) -> int:
    """Import only the chosen command's module: `--help` and `runbook validate` stay quick."""
    command = args.command
    if command == "runbook" and args.runbook_command == "validate":
        from remedium.cli.runbook_cmd import validate_command

        return validate_command(args.paths, args.json)
    if command == "runbook":
        from remedium.cli.runbook_try import runbook_test_command

        return asyncio.run(runbook_test_command(args.runbook, args.alert, args.facts, args.live, args.json))
    if command == "replay":
        from remedium.cli.replay_cmd import replay_command, shadow_command

        if args.shadow is not None:
            return asyncio.run(shadow_command(args.shadow, args.policy, args.paths, args.json))
        if args.policy is not None:
            raise CommandError("--policy is only for --shadow", code=USAGE_ERROR)
        return asyncio.run(replay_command(args.paths, args.json))
    if command == "codec-server":
        from remedium.cli.codec_cmd import codec_server_command

        return asyncio.run(codec_server_command(args.address))
    if command in ("up", "demo", "worker", "ingress"):
        return _dispatch_stack(args)
    if command == "incident":
        from remedium.cli.incident_cmd import incident_export, incident_list, incident_show

        if args.incident_command == "list":
            return asyncio.run(incident_list(args.json, args.limit))
        if args.incident_command == "export":
            return asyncio.run(incident_export(args.id, args.output))
        return asyncio.run(incident_show(args.id, args.json))
    if command in ("approve", "reject"):
        from remedium.cli.approve_cmd import decide_command

        return asyncio.run(
            decide_command(args.id, command, args.step, args.by, args.reason, args.request, args.json)
        )
    if command == "policy":
        from remedium.cli.policy_cmd import policy_test_command

        return policy_test_command(args.policy, args.step, args.json)
    if command == "approvals":
        from remedium.cli.approvals_cmd import approvals_command

        return asyncio.run(approvals_command(args.json))
    if command in ("autonomy", "review"):
        from remedium.cli import autonomy_cmd

        if command == "review":
            return asyncio.run(
                autonomy_cmd.review_command(args.id, args.verdict, args.by, args.reason, args.json)
            )
        if args.autonomy_command == "show":
            return asyncio.run(autonomy_cmd.autonomy_show(args.runbook, args.json))
        return asyncio.run(
            autonomy_cmd.autonomy_set(args.runbook, args.level, args.by, args.reason, args.json)
        )
    if command == "breaker":
        from remedium.cli.breaker_cmd import breaker_reset_command

        return asyncio.run(breaker_reset_command(args.id, args.by, args.reason, args.json))
    if command in ("freeze", "unfreeze"):
        from remedium.cli.freeze_cmd import freeze_command

        return asyncio.run(
            freeze_command(command == "freeze", getattr(args, "reason", ""), args.by, args.json)
        )
    raise CommandError(f"unknown command {command}", USAGE_ERROR)


def _dispatch_stack(args: argparse.Namespace) -> int:
    from remedium.cli import stack_cmd

    if args.command == "up":
        return asyncio.run(
            stack_cmd.up_command(
                args.temporal_port, args.ui_port, args.ingress_address, args.state_dir, args.demo
            )
        )
    if args.command == "demo":
        return asyncio.run(stack_cmd.demo_command(args.scenario, args.variant, args.keep_running))
    if args.command == "worker":
        return asyncio.run(stack_cmd.worker_command())
    return asyncio.run(stack_cmd.ingress_command())


def entry() -> None:
    """The console script: flush, then os._exit (see the module docstring for why)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
