"""Drives Tollgate's OpenMeter ingest path with the official `openmeter` client.

Reads a JSON spec on stdin: {"base", "key", "events": [...CloudEvents...], "bad_event"}. Sends the
first event alone (application/cloudevents+json), the rest as one batch
(application/cloudevents-batch+json), then everything again (a retry), then a batch with a bad
event, then a request with an unknown key. Prints what the client returned or raised, as JSON.
"""
import json
import sys

from corehttp.exceptions import ClientAuthenticationError, HttpResponseError
from openmeter import Client

spec = json.load(sys.stdin)
client = Client(endpoint=spec["base"], token=spec["key"])
events = spec["events"]


def raised(f):
    try:
        f()
        return {"raised": None}
    except HttpResponseError as e:
        body = e.response.json() if e.response is not None else None
        return {"raised": type(e).__name__, "status": e.status_code, "body": body}


out = {}
out["single"] = raised(lambda: client.events.ingest_event(events[0]))
out["batch"] = raised(lambda: client.events.ingest_events(events[1:]))
out["retry"] = raised(lambda: client.events.ingest_events(events))
out["bad"] = raised(lambda: client.events.ingest_events(events[:2] + [spec["bad_event"]]))
auth = raised(lambda: Client(endpoint=spec["base"], token="tg_not_a_key").events.ingest_event(events[0]))
try:
    Client(endpoint=spec["base"], token="tg_not_a_key").events.ingest_event(events[0])
except ClientAuthenticationError:
    auth["client_authentication_error"] = True
out["auth"] = auth
print(json.dumps(out, default=str))
