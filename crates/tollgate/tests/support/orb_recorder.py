"""A local stand-in for Orb's API that records every call and validates every request body
against the official `orb-billing` package's request types (pydantic TypeAdapters over the
TypedDicts in `orb.types`), for tests/orb.rs.

Run: python orb_recorder.py --api-key KEY [--grace-hours 12] [--page-size 100]
Prints `listening PORT` on its first line (127.0.0.1, a free port).

Orb endpoints answered (the subset Tollgate calls):
  POST /v1/ingest[?backfill_id=]            events, deduplicated by idempotency_key
  POST /v1/events/backfills                 create (status pending)
  GET  /v1/events/backfills[/ID]            list / fetch
  POST /v1/events/backfills/ID/close        close (status reflected)
  POST /v1/customers                        create (external_customer_id unique)
  GET  /v1/customers/external_customer_id/X fetch (404 when unknown)
  PUT  /v1/customers/external_customer_id/X update
  GET  /v1/invoices?external_customer_id=   list, paginated with `cursor`

A body that does not validate is answered 400 and recorded under `invalid`; the test fails
when that list is not empty. Control endpoints (no auth):
  GET  /_recorder/state      events, backfills, customers, request log, invalid, duplicates
  POST /_recorder/faults     {"path": "/v1/ingest", "statuses": [429, 500]}: the next
                             requests to that path answer these statuses without effect
  POST /_recorder/invoices   [invoice, ...]: invoices GET /v1/invoices serves
"""

import argparse
import datetime as dt
import json
import sys
import threading
import typing
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import TypeAdapter, ValidationError

from orb.types import (
    CustomerCreateParams,
    CustomerUpdateByExternalIDParams,
    EventIngestParams,
    InvoiceListParams,
)
from orb.types.event_ingest_params import Event as IngestEvent
from orb.types.events import BackfillCreateParams

BATCH_EVENTS_MAX = 500

ADAPTERS = {
    "ingest": TypeAdapter(EventIngestParams),
    "backfill_create": TypeAdapter(BackfillCreateParams),
    "customer_create": TypeAdapter(CustomerCreateParams),
    "customer_update": TypeAdapter(CustomerUpdateByExternalIDParams),
    "invoice_list": TypeAdapter(InvoiceListParams),
}
KEYS = {
    "ingest": set(typing.get_type_hints(EventIngestParams)) - {"backfill_id"},
    "event": set(typing.get_type_hints(IngestEvent)),
    "backfill_create": set(typing.get_type_hints(BackfillCreateParams)),
    "customer_create": set(typing.get_type_hints(CustomerCreateParams)),
    "customer_update": set(typing.get_type_hints(CustomerUpdateByExternalIDParams)),
}


class Invalid(Exception):
    pass


def unknown_keys(kind, body):
    if not isinstance(body, dict):
        raise Invalid(f"{kind}: the body is not an object")
    extra = set(body) - KEYS[kind]
    if extra:
        raise Invalid(f"{kind}: unknown fields {sorted(extra)}")


def utc_timestamp(text, what):
    try:
        t = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise Invalid(f"{what} `{text}` is not ISO 8601")
    if t.tzinfo is None or t.utcoffset() != dt.timedelta(0):
        raise Invalid(f"{what} `{text}` is not in UTC")
    return t


def validate(kind, body):
    """Validates with the orb-billing type; returns the validated value."""
    try:
        value = ADAPTERS[kind].validate_python(body)
        if kind == "ingest":
            # `events` is an Iterable: pydantic validates it as it is iterated.
            value = dict(value)
            value["events"] = list(value["events"])
        return value
    except ValidationError as e:
        raise Invalid(f"{kind}: {e}")


class State:
    def __init__(self, api_key, grace_hours, page_size):
        self.lock = threading.Lock()
        self.api_key = api_key
        self.grace = dt.timedelta(hours=grace_hours)
        self.page_size = page_size
        self.events = {}  # idempotency_key -> {"event": ..., "backfill_id": ...}
        self.duplicates = 0
        self.backfills = {}
        self.customers = {}  # external_customer_id -> customer
        self.invoices = []
        self.faults = {}  # path -> [status, ...]
        self.log = []
        self.invalid = []
        self.seq = 0

    def next_id(self, prefix):
        self.seq += 1
        return f"{prefix}_{self.seq:06d}"

    def snapshot(self):
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "backfills": list(self.backfills.values()),
            "customers": list(self.customers.values()),
            "log": self.log,
            "invalid": self.invalid,
        }


def now():
    return dt.datetime.now(dt.timezone.utc)


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State = None

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return status

    def error(self, status, title, detail=None, **extra):
        body = {"type": "https://docs.withorb.com/reference/error-responses", "status": status,
                "title": title, "detail": detail}
        body.update(extra)
        return self.answer(status, body)

    def handle_any(self, method):
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with st.lock:
            if path.startswith("/_recorder/"):
                return self.control(method, path, body)
            entry = {"method": method, "path": path, "query": query, "body": body,
                     "idempotency_key": self.headers.get("Idempotency-Key")}
            st.log.append(entry)
            if self.headers.get("Authorization") != f"Bearer {st.api_key}":
                entry["status"] = self.error(401, "Authentication failed")
                return
            pending = st.faults.get(path)
            if pending:
                status = pending.pop(0)
                entry["status"] = self.error(status, "Injected fault")
                return
            try:
                entry["status"] = self.route(method, path, query, body)
            except Invalid as e:
                st.invalid.append({"method": method, "path": path, "error": str(e)})
                entry["status"] = self.error(400, "Invalid request", str(e))

    def control(self, method, path, body):
        st = self.state
        if path == "/_recorder/state" and method == "GET":
            return self.answer(200, st.snapshot())
        if path == "/_recorder/faults" and method == "POST":
            st.faults.setdefault(body["path"], []).extend(body["statuses"])
            return self.answer(200, {"ok": True})
        if path == "/_recorder/invoices" and method == "POST":
            st.invoices.extend(body)
            return self.answer(200, {"ok": True})
        return self.error(404, "Not found")

    def route(self, method, path, query, body):
        st = self.state
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["v1", "ingest"]:
            return self.ingest(query, body)
        if parts[:3] == ["v1", "events", "backfills"]:
            if method == "POST" and len(parts) == 3:
                unknown_keys("backfill_create", body)
                v = validate("backfill_create", body)
                start = utc_timestamp(v["timeframe_start"], "timeframe_start")
                end = utc_timestamp(v["timeframe_end"], "timeframe_end")
                if not start < end:
                    raise Invalid("backfill timeframe_start must be before timeframe_end")
                bid = st.next_id("bf")
                st.backfills[bid] = {
                    "id": bid, "status": "pending", "created_at": iso(now()),
                    "timeframe_start": v["timeframe_start"], "timeframe_end": v["timeframe_end"],
                    "customer_id": None, "external_customer_id": v.get("external_customer_id"),
                    "events_ingested": 0, "replace_existing_events": v.get("replace_existing_events", False),
                    "close_time": None, "reverted_at": None, "deprecation_filter": None,
                }
                return self.answer(201, st.backfills[bid])
            if method == "GET" and len(parts) == 3:
                return self.answer(200, {"data": list(st.backfills.values()),
                                         "pagination_metadata": {"has_more": False, "next_cursor": None}})
            if len(parts) >= 4 and parts[3] in st.backfills:
                b = st.backfills[parts[3]]
                if method == "GET" and len(parts) == 4:
                    return self.answer(200, b)
                if method == "POST" and parts[4:] == ["close"]:
                    if b["status"] != "pending":
                        return self.error(400, "Backfill is not pending")
                    b["status"] = "reflected"
                    b["close_time"] = iso(now())
                    return self.answer(200, b)
            return self.error(404, "Backfill not found")
        if parts == ["v1", "customers"] and method == "POST":
            unknown_keys("customer_create", body)
            v = validate("customer_create", body)
            ext = v.get("external_customer_id")
            if ext in st.customers:
                return self.error(400, "Duplicate external_customer_id", ext)
            c = {"id": st.next_id("cus"), "external_customer_id": ext, "name": v["name"],
                 "email": v["email"], "metadata": v.get("metadata") or {}, "currency": v.get("currency"),
                 "updates": 0}
            st.customers[ext] = c
            return self.answer(201, c)
        if parts[:3] == ["v1", "customers", "external_customer_id"] and len(parts) == 4:
            ext = urllib.parse.unquote(parts[3])
            c = st.customers.get(ext)
            if c is None:
                return self.error(404, "Customer not found", ext)
            if method == "GET":
                return self.answer(200, c)
            if method == "PUT":
                unknown_keys("customer_update", body)
                v = validate("customer_update", body)
                for k in ("name", "email", "metadata"):
                    if k in v:
                        c[k] = v[k]
                c["updates"] += 1
                return self.answer(200, c)
        if parts == ["v1", "invoices"] and method == "GET":
            v = validate("invoice_list", query)
            mine = [i for i in st.invoices
                    if i["customer"]["external_customer_id"] == v.get("external_customer_id")]
            start = int(v.get("cursor") or 0)
            size = min(v.get("limit", 20), st.page_size)
            page = mine[start:start + size]
            more = start + size < len(mine)
            return self.answer(200, {"data": page, "pagination_metadata": {
                "has_more": more, "next_cursor": str(start + size) if more else None}})
        return self.error(404, "Not found", f"{method} {path}")

    def ingest(self, query, body):
        st = self.state
        unknown_keys("ingest", body)
        v = validate("ingest", body)
        events = v["events"]
        if len(events) > BATCH_EVENTS_MAX:
            raise Invalid(f"ingest: {len(events)} events in one request (limit {BATCH_EVENTS_MAX})")
        backfill_id = query.get("backfill_id")
        backfill = None
        if backfill_id is not None:
            backfill = st.backfills.get(backfill_id)
            if backfill is None or backfill["status"] != "pending":
                raise Invalid(f"ingest: backfill {backfill_id} is not a pending backfill")
        failed = []
        for e in events:
            unknown_keys("event", e)
            errors = []
            if (e.get("customer_id") is None) == (e.get("external_customer_id") is None):
                errors.append("exactly one of customer_id and external_customer_id")
            for k, val in e["properties"].items():
                if isinstance(val, (dict, list)) or val is None:
                    errors.append(f"property {k} is not a string, number or boolean")
            t = utc_timestamp(e["timestamp"], "timestamp")
            if t > now() + dt.timedelta(minutes=5):
                errors.append("timestamp is more than 5 minutes in the future")
            if backfill is None and t < now() - st.grace:
                errors.append("timestamp is older than the grace period; use a backfill")
            if backfill is not None:
                if not (utc_timestamp(backfill["timeframe_start"], "start") <= t
                        < utc_timestamp(backfill["timeframe_end"], "end")):
                    errors.append("timestamp is outside the backfill's timeframe")
                if backfill["external_customer_id"] not in (None, e.get("external_customer_id")):
                    errors.append("the event's customer is not the backfill's")
            if errors:
                failed.append({"idempotency_key": e["idempotency_key"], "validation_errors": errors})
        if failed:
            st.invalid.append({"method": "POST", "path": "/v1/ingest", "error": failed})
            return self.answer(400, {"validation_failed": failed})
        for e in events:
            key = e["idempotency_key"]
            if key in st.events:
                st.duplicates += 1
                continue
            st.events[key] = {"event": e, "backfill_id": backfill_id}
            if backfill is not None:
                backfill["events_ingested"] += 1
        return self.answer(200, {"validation_failed": [], "debug": None})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api-key", required=True)
    p.add_argument("--grace-hours", type=float, default=12.0)
    p.add_argument("--page-size", type=int, default=100)
    args = p.parse_args()
    Handler.state = State(args.api_key, args.grace_hours, args.page_size)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
