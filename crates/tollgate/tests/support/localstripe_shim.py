"""Runs localstripe (a stateful fake Stripe server) for Tollgate's tests, with three changes.

- Its state stays in memory: localstripe writes every change to /tmp/localstripe.pickle, a
  file every instance on the machine would share; tests run in parallel, so that is turned off.
- `POST /v1/invoices/{id}/finalize`, which localstripe 1.15.10 lacks, does what Stripe's does:
  a draft invoice becomes `open` (finalizing an invoice that is not a draft is a 400).
- `POST /v1/invoices` without a subscription creates a one-off invoice from the customer's
  pending invoice items and keeps its `metadata`, as Stripe's does (`pending_invoice_items_behavior
  =include`, `auto_advance` accepted); localstripe 1.15.10 only invoices subscriptions and
  drops the metadata.
- Fault injection for retry tests: `POST /_config/tollgate/faults` with `status`, `count`, `when`
  (`before`: answer `status` without doing the request; `after`: do it, then answer `status`
  anyway, the way a lost answer looks) and optional `path` (a prefix) makes the next `count`
  matching /v1 requests fail; `DELETE /_config/tollgate/faults` clears them. `GET /_config/tollgate/requests` lists every /v1 request seen (method,
  path, Idempotency-Key).
- `POST /v1/billing/meter_events`, which localstripe 1.15.10 lacks, validates the form as Stripe
  documents it (`event_name` 1..=100 characters; `payload[stripe_customer_id]` and
  `payload[value]` present, the value a whole number of at most 15 digits; `identifier` at most
  100 characters; `timestamp` whole seconds within the past 35 days or up to 5 minutes ahead;
  no other parameter but `expand[]`) and answers a `billing.meter_event`. Like Stripe, it keeps
  identifiers and refuses one it already holds with a 400 `invalid_request_error` ("An event
  already exists with identifier …"), and answers a repeated `Idempotency-Key` with the first
  answer (a different body under the same key is a 400 `idempotency_error`).
  `GET /_config/tollgate/meter_events` lists the events taken, the duplicate refusals, the
  idempotent replays and `problems` (events naming a customer localstripe does not know: Stripe
  reports those asynchronously, so they are accepted here too, but recorded);
  `DELETE /_config/tollgate/idempotency` forgets idempotency keys (as Stripe does after 24 hours).

Usage: python localstripe_shim.py PORT
"""

import sys
import time

from aiohttp import web

import localstripe.resources as resources
from localstripe.errors import UserError

resources.Store.dump_to_disk = lambda self: None

from localstripe import server  # noqa: E402  (after the patch above)

FAULTS = []
REQUESTS = []


def finalize_invoice(id, **kwargs):
    obj = resources.Invoice._api_retrieve(id)
    if obj.status != "draft":
        raise UserError(400, "This invoice is already finalized")
    obj._finalize()
    return obj


_invoice_create = resources.Invoice._api_create.__func__


def invoice_create(cls, customer=None, subscription=None, description=None,
                   metadata=None, pending_invoice_items_behavior=None,
                   auto_advance=None, **kwargs):
    # `auto_advance` (Stripe collects after finalization) has no effect here: localstripe
    # does not collect on its own.
    if subscription is None and not kwargs:
        if pending_invoice_items_behavior not in (None, "include"):
            raise UserError(400, "Only pending_invoice_items_behavior=include")
        return cls(customer=customer, description=description,
                   metadata=metadata)
    return _invoice_create(cls, customer=customer, subscription=subscription,
                           description=description, metadata=metadata,
                           **kwargs)


resources.Invoice._api_create = classmethod(invoice_create)


@web.middleware
async def faults(request, handler):
    if not request.path.startswith("/v1/"):
        return await handler(request)
    REQUESTS.append({
        "method": request.method,
        "path": request.path,
        "idempotency_key": request.headers.get("Idempotency-Key"),
    })
    fault = next((f for f in FAULTS if f["count"] > 0
                  and request.path.startswith(f.get("path") or "/v1/")
                  and request.method == "POST"), None)
    if fault is None:
        return await handler(request)
    fault["count"] -= 1
    body = {"error": {"type": "api_error", "message": "injected fault"}}
    if fault["when"] == "after":
        await handler(request)
    return web.json_response(body, status=fault["status"])


async def add_fault(request):
    data = await request.json()
    FAULTS.append({
        "status": int(data.get("status", 500)),
        "count": int(data.get("count", 1)),
        "when": data.get("when", "before"),
        "path": data.get("path"),
    })
    return web.json_response({"ok": True})


async def clear_faults(request):
    FAULTS.clear()
    return web.json_response({"ok": True})


async def list_requests(request):
    return web.json_response(REQUESTS)


METER_EVENTS = []          # accepted meter events, in order
METER_IDENTIFIERS = {}     # identifier -> index in METER_EVENTS
METER_DUPLICATES = []      # identifiers refused as duplicates
METER_PROBLEMS = []        # accepted, but naming an unknown customer
IDEMPOTENCY = {}           # Idempotency-Key -> (form, status, body)
IDEMPOTENT_REPLAYS = []    # keys answered from IDEMPOTENCY
METER_NAME_MAX = 100
METER_IDENTIFIER_MAX = 100
METER_PAST_S = 35 * 24 * 3600
METER_FUTURE_S = 5 * 60
METER_VALUE_DIGITS_MAX = 15


def stripe_error(status, message, param=None, type_="invalid_request_error"):
    error = {"type": type_, "message": message}
    if param is not None:
        error["param"] = param
    return web.json_response({"error": error}, status=status)


def meter_event_answer(form):
    """(status, body) of Stripe's meter event create for this form."""
    allowed = {"event_name", "identifier", "timestamp"}
    payload = {}
    for key in form:
        if key.startswith("payload[") and key.endswith("]"):
            payload[key[len("payload["):-1]] = form[key]
        elif key.startswith("expand["):
            pass
        elif key not in allowed:
            return 400, {"message": f"Received unknown parameter: {key}", "param": key}
    name = form.get("event_name")
    if not name:
        return 400, {"message": "Missing required param: event_name.", "param": "event_name"}
    if len(name) > METER_NAME_MAX:
        return 400, {"message": "event_name is too long", "param": "event_name"}
    for k in ("stripe_customer_id", "value"):
        if not payload.get(k):
            return 400, {"message": f"Missing required param: payload[{k}].",
                         "param": f"payload[{k}]"}
    value = payload["value"]
    digits = value[1:] if value.startswith("-") else value
    if not digits.isdigit():
        return 400, {"message": "The value in the event payload must be a whole number.",
                     "param": "payload[value]"}
    if len(digits.lstrip("0")) > METER_VALUE_DIGITS_MAX:
        return 400, {"message": f"The value in the event payload can have at most "
                                f"{METER_VALUE_DIGITS_MAX} digits. Received {value}.",
                     "param": "payload[value]"}
    now = int(time.time())
    ts = form.get("timestamp")
    if ts is None:
        ts = now
    else:
        try:
            ts = int(ts)
        except ValueError:
            return 400, {"message": "Invalid integer: timestamp", "param": "timestamp"}
        if ts < now - METER_PAST_S or ts > now + METER_FUTURE_S:
            return 400, {"message": "Timestamp must be within the past 35 calendar days "
                                    "or up to 5 minutes in the future.", "param": "timestamp"}
    identifier = form.get("identifier") or f"gen_{len(METER_EVENTS)}_{now}"
    if len(identifier) > METER_IDENTIFIER_MAX:
        return 400, {"message": "identifier is too long", "param": "identifier"}
    if identifier in METER_IDENTIFIERS:
        METER_DUPLICATES.append(identifier)
        return 400, {"message": f"An event already exists with identifier {identifier}."}
    try:
        resources.Customer._api_retrieve(payload["stripe_customer_id"])
    except UserError:
        METER_PROBLEMS.append({"identifier": identifier, "problem": "unknown customer",
                               "customer": payload["stripe_customer_id"]})
    event = {"object": "billing.meter_event", "created": now, "event_name": name,
             "identifier": identifier, "livemode": False, "payload": payload,
             "timestamp": ts}
    METER_IDENTIFIERS[identifier] = len(METER_EVENTS)
    METER_EVENTS.append(event)
    return 200, event


async def create_meter_event(request):
    auth = request.headers.get("Authorization", "")
    if not (auth.startswith("Bearer sk_") or auth.startswith("Basic ")):
        return stripe_error(401, "Invalid API Key provided")
    form = {k: v for k, v in (await request.post()).items()}
    key = request.headers.get("Idempotency-Key")
    if key is not None and key in IDEMPOTENCY:
        first_form, status, body = IDEMPOTENCY[key]
        if first_form != form:
            return stripe_error(400, "Keys for idempotent requests can only be used with the "
                                     "same parameters they were first used with.",
                                type_="idempotency_error")
        IDEMPOTENT_REPLAYS.append(key)
        response = web.json_response(body, status=status)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    status, body = meter_event_answer(form)
    if status != 200:
        body = {"error": {"type": "invalid_request_error", **body}}
    if key is not None:
        IDEMPOTENCY[key] = (form, status, body)
    return web.json_response(body, status=status)


async def list_meter_events(request):
    return web.json_response({"events": METER_EVENTS, "duplicates": METER_DUPLICATES,
                              "replays": IDEMPOTENT_REPLAYS, "problems": METER_PROBLEMS})


async def forget_idempotency(request):
    IDEMPOTENCY.clear()
    return web.json_response({"ok": True})


server.app.middlewares.insert(0, faults)
server.app.router.add_post("/v1/billing/meter_events", create_meter_event)
server.app.router.add_get("/_config/tollgate/meter_events", list_meter_events)
server.app.router.add_delete("/_config/tollgate/idempotency", forget_idempotency)
server.app.router.add_post("/_config/tollgate/faults", add_fault)
server.app.router.add_delete("/_config/tollgate/faults", clear_faults)
server.app.router.add_get("/_config/tollgate/requests", list_requests)
# Extra routes must come before /v1/invoices/{id}; aiohttp matches in order, and
# `/finalize` has its own segment, so appending is enough.
server.app.router.add_route(
    "POST", "/v1/invoices/{id}/finalize",
    server.api_extra(finalize_invoice, "/v1/invoices/{id}/finalize"))

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--port", sys.argv[1], "--from-scratch"]
    server.start()
