"""Studio Executions (v2, and v1's same resource): the JSON shape and the checks on a REST-triggered execution.

Pure: no Flask. The routes live in :mod:`gatekeeper.sandbox.app`. The shape is the one
``twilio.rest.studio.v2.flow.execution.ExecutionInstance`` (and its v1 twin) reads; dates are ISO 8601 as
Studio writes them. The sandbox keeps no Flow definitions: an execution is recorded and stays
``active`` (nothing runs its widgets), and ``flow_version`` is always 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gatekeeper.sandbox.errors import TwilioApiError
from gatekeeper.sandbox.resources import iso8601

STUDIO_BASE = "https://studio.twilio.com"
FLOW_SID = re.compile(r"^FW[0-9a-fA-F]{32}$")
#: Twilio's limit on To and From together (error 81023 beyond it).
CONTACT_BYTES_LIMIT = 300


def missing_parameter(name: str) -> TwilioApiError:
    """The 400 Studio answers for a missing required form field."""
    return TwilioApiError(400, 20001, f"Missing required parameter {name} in the post body")


def check_contacts(to: str, from_: str) -> None:
    """Raise Studio's 400 for a missing ``To``/``From`` or for the pair being too long."""
    if not to:
        raise missing_parameter("To")
    if not from_:
        raise missing_parameter("From")
    if len(to.encode()) + len(from_.encode()) > CONTACT_BYTES_LIMIT:
        raise TwilioApiError(
            400, 81023, "Creating an Execution via REST API failed due to malformed contact parameters"
        )


def parse_parameters(raw: str | None) -> dict[str, Any]:
    """The ``Parameters`` form field: absent or empty → ``{}``; anything but a JSON object → 400."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise TwilioApiError(400, 20001, "Invalid parameter Parameters: not valid JSON") from None
    if not isinstance(value, dict):
        raise TwilioApiError(400, 20001, "Invalid parameter Parameters: must be a JSON object")
    return value


def execution_json(
    *,
    sid: str,
    account_sid: str,
    flow_sid: str,
    contact_sid: str,
    to: str,
    from_: str,
    parameters: Mapping[str, Any],
    initiated_by: str,
    now: float,
    version: str = "v2",
) -> dict[str, Any]:
    """A new Execution resource. ``context`` holds what the Flow's Liquid variables read:
    ``flow.data`` (the Parameters), ``flow.channel.address`` (From), ``contact.channel.address`` (To)."""
    url = f"{STUDIO_BASE}/{version}/Flows/{flow_sid}/Executions/{sid}"
    context = {
        "flow": {
            "flow_sid": flow_sid,
            "sid": sid,
            "channel": {"address": from_},
            "data": dict(parameters),
        },
        "contact": {"channel": {"address": to}},
    }
    execution = {
        "sid": sid,
        "account_sid": account_sid,
        "flow_sid": flow_sid,
        "contact_channel_address": to,
        "contact_sid": contact_sid,
        "flow_version": 1,
        "context": context,
        "status": "active",
        "date_created": iso8601(now),
        "date_updated": iso8601(now),
        "initiated_by": initiated_by,
        "url": url,
        "links": {"steps": f"{url}/Steps", "execution_context": f"{url}/Context"},
    }
    if version == "v1":  # v1's Execution has neither field
        del execution["flow_version"], execution["initiated_by"]
    return execution
