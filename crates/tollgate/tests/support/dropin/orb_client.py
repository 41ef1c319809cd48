"""Drives Tollgate's Orb ingest with the official `orb-billing` client.

Reads a JSON spec on stdin: {"base", "key", "events": [...Orb events...], "bad_events": [...]}.
Sends the events in batches, then every batch again (a retry), then a batch mixing already
sent and bad events, then a request with an unknown key. Prints what the client returned or
raised, as JSON, for the Rust test to check.
"""
import datetime
import json
import sys

import orb

spec = json.load(sys.stdin)
client = orb.Orb(api_key=spec["key"], base_url=spec["base"] + "/v1", max_retries=0)
events = spec["events"]
# Half the timestamps go as `datetime` objects, which the client serialises with isoformat().
for i, e in enumerate(events):
    if i % 2 == 0:
        e["timestamp"] = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))

out = {"first": [], "retry": None, "bad": None, "auth": None}
batches = [events[i:i + 40] for i in range(0, len(events), 40)]
for batch in batches:
    r = client.events.ingest(events=batch)
    out["first"].append(r.to_dict())
# The retry: every batch again, one request, with Orb's debug listing.
r = client.events.ingest(events=events, extra_query={"debug": "true"})
out["retry"] = r.to_dict()
try:
    client.events.ingest(events=events[:3] + spec["bad_events"])
    out["bad"] = {"raised": None}
except orb.BadRequestError as e:
    out["bad"] = {
        "raised": type(e).__name__,
        "is_request_validation_error": isinstance(e, orb.RequestValidationError),
        "status": e.status_code,
        "validation_errors": getattr(e, "validation_errors", None),
        "body": e.body,
    }
try:
    orb.Orb(api_key="tg_not_a_key", base_url=spec["base"] + "/v1", max_retries=0).events.ingest(
        events=events[:1]
    )
    out["auth"] = {"raised": None}
except orb.AuthenticationError as e:
    out["auth"] = {"raised": type(e).__name__, "status": e.status_code}
print(json.dumps(out, default=str))
