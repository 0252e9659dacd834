"""Studio: an execution of a Flow, to the decided number, told what the gate knows about it.

The Flow decides how to reach the person (a text, a call, WhatsApp); the gate screens the number
first and merges its facts into the execution's ``parameters`` (``flow.data`` in the Flow):
``line_type``, ``carrier``, ``country_code``, ``action`` and ``reasons``. A key the caller set
is never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twilio.rest import Client

from gatekeeper.channels.base import BaseChannel, Prepared, SendPolicy, sdk_params
from gatekeeper.errors import InvalidArgument
from gatekeeper.models import Action, Decision, SendRequest


def enriched(parameters: object, decision: Decision) -> dict[str, Any]:
    """The caller's parameters (a mapping, or its JSON text) with the decision's facts added under their keys."""
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters)
        except ValueError:
            raise InvalidArgument("parameters must be a JSON object") from None
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise InvalidArgument("parameters must be a JSON object (a mapping)")
    facts = decision.facts
    ours = {
        "line_type": facts.line_type if facts else None,
        "carrier": facts.carrier_name if facts else None,
        "country_code": facts.country_code if facts else None,
        "action": decision.action.value,
        "reasons": list(decision.reasons),
    }
    return {**ours, **parameters}


class StudioChannel(BaseChannel):
    """``studio.v2.flows(sid).executions.create`` (v1 when the caller used v1) with ``to`` the decided number
    and enriched parameters."""

    def __init__(self, policy: SendPolicy) -> None:
        self.policy = policy

    def prepare(self, client: Client, action: Action, decision: Decision, request: SendRequest) -> Prepared:
        if not request.flow_sid:
            raise InvalidArgument("a Studio execution needs the Flow's SID")
        if not request.from_:
            raise InvalidArgument("a Studio execution needs from_")
        params = sdk_params(request, action)
        parameters = enriched(params.pop("parameters", None), decision)
        params.update(to=decision.to, from_=request.from_, parameters=parameters)
        studio = client.studio.v1 if request.studio_version == "v1" else client.studio.v2
        return Prepared(studio.flows(request.flow_sid).executions, params)
