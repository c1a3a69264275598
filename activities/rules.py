"""The `policy.rules` activity: the policy's rules for one step, decided on the worker.

An activity (not workflow code) because rules are templates: evaluating them is bounded in
time and size by `template_limits`, runs in a thread off the event loop, and its answer (the
rule that fired, and why) is recorded in the workflow history, so a replay never re-evaluates.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from remedium.models.rule_request import RuleRequest
from remedium.models.rules import RuleDecision
from remedium.names import POLICY_RULES_ACTIVITY
from remedium.rules import decide_rules


@activity.defn(name=POLICY_RULES_ACTIVITY)
async def evaluate_policy_rules(request: RuleRequest) -> RuleDecision:
    return await asyncio.to_thread(decide_rules, request)
