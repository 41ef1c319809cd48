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

Usage: python localstripe_shim.py PORT
"""

import sys

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


server.app.middlewares.insert(0, faults)
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
