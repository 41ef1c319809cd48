"""Drives Tollgate's Stripe meter events with the official `stripe` client.

Reads a JSON spec on stdin: {"base", "key", "events": [{event_name, customer, value, identifier?,
idempotency_key?, timestamp}], "old_timestamp"}. Sends every event, then every event again (a
retry: same identifier, or same Idempotency-Key), then the failures: a missing customer, an
identifier reused for another value, a timestamp outside the window, an unknown key. Prints what
the client returned or raised, as JSON.
"""
import json
import sys

import stripe

spec = json.load(sys.stdin)
stripe.api_key = spec["key"]
stripe.api_base = spec["base"]
stripe.max_network_retries = 0


def send(e):
    params = {
        "event_name": e["event_name"],
        "payload": {"stripe_customer_id": e["customer"], "value": str(e["value"])},
        "timestamp": e["timestamp"],
    }
    if e.get("identifier"):
        params["identifier"] = e["identifier"]
    if e.get("idempotency_key"):
        params["idempotency_key"] = e["idempotency_key"]
    return stripe.billing.MeterEvent.create(**params)


def raised(f):
    try:
        f()
        return {"raised": None}
    except stripe.StripeError as e:
        err = (e.json_body or {}).get("error", {})
        return {
            "raised": type(e).__name__,
            "status": e.http_status,
            "code": e.code or err.get("code"),
            "param": err.get("param"),
            "type": err.get("type"),
        }


out = {"first": [], "retry": []}
for e in spec["events"]:
    m = send(e)
    out["first"].append({"object": m.object, "identifier": m.identifier, "payload": m.payload.to_dict()})
for e in spec["events"]:
    m = send(e)
    out["retry"].append({"object": m.object, "identifier": m.identifier})
first = spec["events"][0]
out["missing_customer"] = raised(
    lambda: stripe.billing.MeterEvent.create(event_name=first["event_name"], payload={"value": "1"})
)
out["conflict"] = raised(
    lambda: send(dict(first, value=first["value"] + 1000, identifier=first["identifier"]))
)
out["too_old"] = raised(
    lambda: send(dict(first, identifier="too-old-1", timestamp=spec["old_timestamp"]))
)
out["unmapped"] = raised(lambda: send(dict(first, identifier="unmapped-1", event_name="no_such_meter")))
stripe.api_key = "tg_not_a_key"
out["auth"] = raised(lambda: send(dict(first, identifier="auth-1")))
print(json.dumps(out, default=str))
