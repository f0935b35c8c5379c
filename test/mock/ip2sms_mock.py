#!/usr/bin/env python3
"""A mock IP2SMS gateway speaking the wire protocol of ip2sms-protocol.md.

Binds 127.0.0.1 on a free port (or --port) and writes the port to
--port-file once it listens. Both endpoints are POST with Basic auth:
  /ip2sms/          send one SMS  (<message><service id="single" .../>...)
  /ip2sms-request/  status        (<request id="...">status</request>)

What a number gets is scripted by its last digit:
  2 -> refused at send: Rejected, error "Invalid abonent number"
  3 -> accepted, then Expired
  4 -> accepted, then Enroute for ever
  anything else -> accepted, then Delivered

Fault modes, for every request, only the next COUNT ones or only for the
next SECONDS, switched at run time with GET /control?mode=MODE[&count=N]
[&seconds=S][&delay_ms=N][&form=aggregate][&kind=send|status] (faults hit
only requests of that kind)[&match=REGEX] (faults hit only sends whose
text matches)[&then=1] (the mode follows, once the COUNT of the one before
it is spent, instead of replacing it):
  normal, 401, 403, 400, 500, 503, 5xx (HTTP 503), garbage (200 with
  non-XML), slow (answers after delay_ms), hang (never answers), wrong_id
  (a status answer about another id than the one asked for). form=aggregate answers sends in
  the aggregate form (id in detail/id). A faulty answer never accepts the
  SMS, so a retried SMS reaches the "phone" once.

Every request is appended to --log as one JSON line: t (arrival time, Unix
seconds), kind, to, text,
source, validity, id, auth (whether the credentials matched),
content_type, and outcome (the state answered, or the fault).
GET /log returns the log; GET /stats counts by outcome.
"""
import argparse
import base64
import json
import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from email.utils import format_datetime
from datetime import datetime, timezone, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

lock = threading.Lock()
state = {"mode": "normal", "count": 0, "until": None, "delay_ms": 0, "form": "single",
         "kind": "any", "match": None}
queued_modes = []      # control?then=1: modes that follow the current one
messages = {}          # gateway id -> final state word
next_id = [6615134392391]
log_lines = []
log_file = None
args = None
KYIV = timezone(timedelta(hours=3))


def rfc1123_now():
    return format_datetime(datetime.now(KYIV).replace(microsecond=0))


def fault_now(kind, text):
    """The fault mode a request of this kind and text gets (consuming one of COUNT)."""
    with lock:
        if state["until"] is not None and time.time() >= state["until"]:
            state["mode"] = "normal"
            state["until"] = None
        mode = state["mode"]
        if state["kind"] not in ("any", kind):
            return "normal", 0, state["form"]
        if state["match"] is not None and not re.search(state["match"], text or ""):
            return "normal", 0, state["form"]
        delay_ms = state["delay_ms"]
        if mode != "normal" and state["count"] > 0:
            state["count"] -= 1
            if state["count"] == 0:
                state.update(queued_modes.pop(0) if queued_modes else {"mode": "normal"})
        return mode, delay_ms, state["form"]


def record(entry):
    line = json.dumps(entry, ensure_ascii=False)
    with lock:
        log_lines.append(entry)
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def answer(self, code, body, ctype="text/xml; charset=utf-8"):
        data = body.encode("utf-8")
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="ip2sms"')
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # a slow answer whose client gave up (a stopped worker) goes nowhere
            pass

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/control":
            with lock:
                mode = {"mode": q.get("mode", "normal"), "count": int(q.get("count", "0")),
                        "until": (time.time() + float(q["seconds"])) if "seconds" in q else None,
                        "delay_ms": int(q.get("delay_ms", "0")),
                        "form": q.get("form", state["form"]), "kind": q.get("kind", "any"),
                        "match": q.get("match")}
                if q.get("then") == "1" and state["mode"] != "normal":
                    queued_modes.append(mode)
                else:
                    queued_modes.clear()
                    state.update(mode)
            self.answer(200, "ok\n", "text/plain")
        elif url.path == "/log":
            with lock:
                body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in log_lines)
            self.answer(200, body, "application/json")
        elif url.path == "/stats":
            counts = {}
            with lock:
                for e in log_lines:
                    counts[e["outcome"]] = counts.get(e["outcome"], 0) + 1
            self.answer(200, json.dumps(counts), "application/json")
        else:
            self.answer(404, "no such page\n", "text/plain")

    def authorized(self):
        want = "Basic " + base64.b64encode(
            (args.login + ":" + args.password).encode()).decode()
        return self.headers.get("Authorization") == want

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        path = urlparse(self.path).path
        entry = {"t": time.time(), "path": path, "auth": self.authorized(),
                 "content_type": self.headers.get("Content-Type")}
        try:
            doc = ET.fromstring(raw)
        except ET.ParseError:
            doc = None

        if path.rstrip("/") == "/ip2sms" and doc is not None and doc.tag == "message":
            service = doc.find("service")
            entry.update(kind="send", to=doc.findtext("to"), text=doc.findtext("body"),
                         source=service.get("source") if service is not None else None,
                         validity=service.get("validity") if service is not None else None)
        elif path.rstrip("/") == "/ip2sms-request" and doc is not None and doc.tag == "request":
            entry.update(kind="status", id=doc.get("id"))
        else:
            entry.update(kind="bad", outcome="parse_failed")
            record(entry)
            return self.answer(200, "Request not recognized - xml parse failed", "text/plain")

        mode, delay_ms, form = fault_now(entry["kind"], entry.get("text"))
        if not entry["auth"]:
            entry["outcome"] = "401"
            record(entry)
            return self.answer(401, "Unauthorized")
        if mode in ("401", "403"):
            entry["outcome"] = mode
            record(entry)
            return self.answer(int(mode), "Unauthorized" if mode == "401" else "Forbidden")
        if mode in ("5xx", "503", "500", "400"):
            code = 503 if mode == "5xx" else int(mode)
            entry["outcome"] = mode
            record(entry)
            return self.answer(code, {400: "Bad Request", 500: "Internal Server Error",
                                      503: "Service Unavailable"}[code], "text/plain")
        if mode == "garbage":
            entry["outcome"] = "garbage"
            record(entry)
            return self.answer(200, "<status id=\"12\"><sta")
        if mode == "hang":
            entry["outcome"] = "hang"
            record(entry)
            time.sleep(3600)
            return
        if mode == "slow":
            time.sleep(delay_ms / 1000.0)

        date = rfc1123_now()
        if entry["kind"] == "send":
            to = entry["to"] or ""
            if to.endswith("2"):
                entry["outcome"] = "Rejected"
                record(entry)
                return self.answer(200, '<status date=""><state error="Invalid abonent number">'
                                        'Rejected</state></status>')
            with lock:
                gid = str(next_id[0])
                next_id[0] += 1
                messages[gid] = {"3": "Expired", "4": "Enroute"}.get(to[-1:], "Delivered")
            entry.update(outcome="Accepted", id=gid)
            record(entry)
            if form == "aggregate":
                return self.answer(200, '<status date="%s" reports="waiting"><state>sending</state>'
                                        '<total>1</total><detail><id>%s</id><state>Accepted</state>'
                                        '</detail></status>' % (date, gid))
            return self.answer(200, '<status id="%s" date="%s"><state>Accepted</state></status>'
                               % (gid, date))

        gid = entry["id"]
        if mode == "wrong_id":
            entry["outcome"] = "wrong_id"
            record(entry)
            return self.answer(200, '<status id="%d" date="%s"><state>Delivered</state></status>'
                               % (int(gid) + 1, date))
        with lock:
            final = messages.get(gid)
        if final is None:
            entry["outcome"] = "Rejected"
            record(entry)
            return self.answer(200, '<status id="%s" date="%s"><state error="Message not found">'
                                    'Rejected</state></status>' % (gid, date))
        entry["outcome"] = final
        record(entry)
        return self.answer(200, '<status id="%s" date="%s"><state>%s</state></status>'
                           % (gid, date, final))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    global args, log_file
    p = argparse.ArgumentParser(description="mock IP2SMS gateway")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log")
    p.add_argument("--login", default="user")
    p.add_argument("--password", default="secret")
    args = p.parse_args()
    if args.log:
        log_file = open(args.log, "a", encoding="utf-8")
    server = Server(("127.0.0.1", args.port), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
