#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Stand-ins for the AWS credential services and a verifying S3 front.

Usage: aws_standins.py STATE_DIR S3_UPSTREAM_PORT

Listens on 127.0.0.1, on ports the kernel picks, and writes them to
STATE_DIR/ports.json once every listener is up:

  sts        STS AssumeRoleWithWebIdentity (an unsigned form POST, XML answer)
  container  the container credentials endpoint (GET /creds, JSON answer)
  imds       IMDSv2 (PUT /latest/api/token, then the role and its credentials)
  s3         a front for the S3 test server at S3_UPSTREAM_PORT that checks
             every request's SigV4 signature against the credentials the
             stand-ins issued (or the static keys of the control file), their
             session token and their expiry, and that its Host names this
             front (or one of control's s3_hosts), and refuses what does not hold (403 InvalidAccessKeyId /
             InvalidToken / SignatureDoesNotMatch, 400 ExpiredToken /
             WrongHost) before passing the rest on, re-signed for the
             S3 test server's own key (which checks no V4 signature itself)
  hang       accepts connections and never answers
  closed     a port that was free and is closed again

STATE_DIR/control.json (read at every request) sets their behaviour:

  lifetime        seconds the issued credentials live (default 3600)
  role_arn        the RoleArn STS accepts
  web_tokens      the WebIdentityTokens STS accepts (others: InvalidIdentityToken)
  container_token the Authorization the container endpoint wants (null: none)
  static          {access key id: {"secret": ..., "token": ... or null}}
  s3_hosts        other Hosts the S3 front answers to besides its own
                  127.0.0.1:PORT (a proxy in front of it keeps the Host)
  sts, container, imds
                  "ok" (default), "error" (the service's error answer),
                  "malformed" (an answer that is not what the API describes),
                  "expired" (credentials that expired an hour ago), "hang"
                  (no answer for 60 s; STS logs a "hang" event), "unavailable"
                  (HTTP 500), "crlf" (a session token "tok-<16 hex>", CR, LF,
                  "X-Injected: yes"), for sts and container "echo" (an
                  error answer whose message echoes the token sent, and a
                  CR LF), and for imds "no_role" (no role attached)

Every issue, refusal and S3 request goes to STATE_DIR/events.jsonl, one JSON
object a line: {"event": "issue", "source", "key", "expires", "secret",
"token"[, "web_token", "session_name"]}, {"event": "refused", "source", "reason"}, {"event": "s3",
"method", "path", "key", "verdict"}.  Secrets and tokens go in the event
log (the tests look for them in ckptconv's outputs, not here).
"""
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse

STATE_DIR = sys.argv[1]
S3_UPSTREAM = int(sys.argv[2])
LOCK = threading.Lock()
ISSUED = {}  # access key id -> {"secret", "token", "expires"}
IMDS_TOKENS = set()
SERIAL = [0]
ROLE = "ckptconv-node-role"


def control():
    try:
        with open(os.path.join(STATE_DIR, "control.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def event(**fields):
    fields["t"] = round(time.time(), 3)
    with LOCK, open(os.path.join(STATE_DIR, "events.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue(source, extra=None):
    """New temporary credentials from `source` ("STS", "CTR", "IMDS")."""
    ctl = control()
    lifetime = float(ctl.get("lifetime", 3600))
    mode = ctl.get(source.lower() if source != "CTR" else "container", "ok")
    with LOCK:
        SERIAL[0] += 1
        key = "ASIA%s%06d" % (source, SERIAL[0])
    now = time.time()
    expires = now - 3600 if mode == "expired" else now + lifetime
    cred = {"secret": "sec-%s-%s" % (key, secrets.token_hex(8)),
            "token": "tok-%s-%s" % (key, secrets.token_hex(24)), "expires": expires}
    if mode == "crlf":  # a session token that would forge a header
        cred["token"] = "tok-%s\r\nX-Injected: yes" % secrets.token_hex(8)
    with LOCK:
        ISSUED[key] = cred
    event(event="issue", source=source, key=key, expires=round(expires, 3), secret=cred["secret"],
          token=cred["token"], **(extra or {}))
    return key, cred


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out without waiting for an ACK

    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body=b"", ctype="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hang(self):
        time.sleep(60)
        self.close_connection = True


class Sts(Handler):
    def do_POST(self):
        form = urllib.parse.parse_qs(self.body().decode(), keep_blank_values=True)
        field = lambda name: (form.get(name) or [""])[0]
        ctl = control()
        mode = ctl.get("sts", "ok")
        if mode == "hang":
            event(event="hang", source="STS")
            return self.hang()
        if mode == "unavailable":
            return self.send(500, "internal error")

        def error(status, code, message):
            event(event="refused", source="STS", reason=code)
            self.send(status, "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                      "<Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                      "<RequestId>r-1</RequestId></ErrorResponse>" % (code, message), "text/xml")

        if mode == "echo":
            return error(400, "InvalidParameterValue", "Request WebIdentityToken=%s\r\nX-Forged: 1"
                         % field("WebIdentityToken"))
        if field("Action") != "AssumeRoleWithWebIdentity" or field("Version") != "2011-06-15":
            return error(400, "InvalidAction", "unknown action or version")
        if mode == "error":
            return error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if ctl.get("role_arn") and field("RoleArn") != ctl["role_arn"]:
            return error(403, "AccessDenied", "wrong role")
        if field("WebIdentityToken") not in ctl.get("web_tokens", []):
            return error(400, "InvalidIdentityToken", "The web identity token is not valid")
        if not field("RoleSessionName"):
            return error(400, "ValidationError", "RoleSessionName is required")
        if mode == "malformed":
            return self.send(200, "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>"
                             "<Credentials><AccessKeyId>ASIAX</AccessKeyId>", "text/xml")
        key, cred = issue("STS", {"web_token": field("WebIdentityToken"),
                                  "session_name": field("RoleSessionName")})
        self.send(200, "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                  "<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:"
                  "ckptconv:ckptconv</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience>"
                  "<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId>"
                  "</AssumedRoleUser><Credentials><SessionToken>%s</SessionToken><SecretAccessKey>%s"
                  "</SecretAccessKey><Expiration>%s</Expiration><AccessKeyId>%s</AccessKeyId>"
                  "</Credentials><Provider>oidc</Provider></AssumeRoleWithWebIdentityResult>"
                  "<ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata>"
                  "</AssumeRoleWithWebIdentityResponse>"
                  % (field("RoleArn"), field("RoleSessionName"), field("RoleSessionName"),
                     cred["token"], cred["secret"], iso(cred["expires"]), key), "text/xml")


def credentials_json(key, cred, with_code):
    answer = {"AccessKeyId": key, "SecretAccessKey": cred["secret"], "Token": cred["token"],
              "Expiration": iso(cred["expires"])}
    if with_code:
        answer.update({"Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC"})
    return json.dumps(answer)


class Container(Handler):
    def do_GET(self):
        ctl = control()
        mode = ctl.get("container", "ok")
        if mode == "hang":
            return self.hang()
        if mode == "unavailable":
            return self.send(500, "internal error")
        want = ctl.get("container_token")
        if mode == "echo":
            return self.send(401, json.dumps({"code": "InvalidToken", "message": "Invalid token %s\r\nX-Forged: 1"
                                              % self.headers.get("Authorization")}), "application/json")
        if self.path != "/creds" or (want is not None and self.headers.get("Authorization") != want):
            event(event="refused", source="CTR", reason="authorization")
            return self.send(401, json.dumps({"code": "InvalidToken", "message": "Invalid authorization token"}),
                             "application/json")
        if mode == "error":
            event(event="refused", source="CTR", reason="error")
            return self.send(403, json.dumps({"code": "AccessDenied", "message": "no role for this pod"}),
                             "application/json")
        if mode == "malformed":
            return self.send(200, "{\"AccessKeyId\": \"ASIAX\", ", "application/json")
        key, cred = issue("CTR")
        self.send(200, credentials_json(key, cred, False), "application/json")


class Imds(Handler):
    def do_PUT(self):
        ctl = control()
        if ctl.get("imds", "ok") == "hang":
            return self.hang()
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            event(event="refused", source="IMDS", reason="token request")
            return self.send(400, "bad token request")
        token = "imds-%s" % secrets.token_hex(12)
        with LOCK:
            IMDS_TOKENS.add(token)
        self.send(200, token, headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def do_GET(self):
        ctl = control()
        mode = ctl.get("imds", "ok")
        if self.headers.get("X-aws-ec2-metadata-token") not in IMDS_TOKENS:
            event(event="refused", source="IMDS", reason="no session token")
            return self.send(401, "")
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            if mode == "no_role":
                return self.send(404, "")
            return self.send(200, ROLE)
        if self.path != base + ROLE:
            return self.send(404, "")
        if mode == "malformed":
            return self.send(200, "{\"Code\": \"Success\", \"AccessKeyId\": 7}")
        if mode == "error":
            return self.send(200, json.dumps({"Code": "AssumeRoleUnauthorizedAccess",
                                              "Message": "the role cannot be assumed"}))
        key, cred = issue("IMDS")
        self.send(200, credentials_json(key, cred, True), "application/json")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def signing_key(secret, date, region, service):
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def canonical_query(query):
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        enc = lambda s: urllib.parse.quote(urllib.parse.unquote(s), safe="-_.~")
        pairs.append((enc(name), enc(value)))
    return "&".join("%s=%s" % p for p in sorted(pairs))


class S3Front(Handler):
    def refuse(self, status, code, key, message):
        event(event="s3", method=self.command, path=self.path, key=key, verdict=code)
        self.send(status, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                  "<Message>%s</Message></Error>" % (code, message), "application/xml")

    def handle_any(self):
        body = self.body()
        auth = self.headers.get("Authorization", "")
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(",")
                     if "=" in p) if auth.startswith("AWS4-HMAC-SHA256 ") else {}
        scope = parts.get("Credential", "").split("/")
        key = scope[0] if scope else ""
        with LOCK:
            cred = ISSUED.get(key)
        static = control().get("static", {}).get(key)
        if static:
            cred = {"secret": static["secret"], "token": static.get("token"), "expires": None}
        if (self.headers.get("Host") != "127.0.0.1:%d" % self.server.server_address[1] and
                self.headers.get("Host") not in control().get("s3_hosts", [])):
            return self.refuse(400, "WrongHost", key, "Host does not name this server.")
        if len(scope) != 5 or not cred:
            return self.refuse(403, "InvalidAccessKeyId", key, "The AWS Access Key Id you provided does not exist in our records.")
        if self.headers.get("x-amz-security-token") != cred["token"]:
            return self.refuse(403, "InvalidToken", key, "The provided token is malformed or otherwise invalid.")
        if cred["expires"] is not None and time.time() >= cred["expires"]:
            return self.refuse(400, "ExpiredToken", key, "The provided token has expired.")
        path, _, query = self.path.partition("?")
        signed = parts.get("SignedHeaders", "").split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return self.refuse(403, "AccessDenied", key, "host and x-amz-date must be signed")
        payload = self.headers.get("x-amz-content-sha256", "")
        if payload != "UNSIGNED-PAYLOAD" and payload != sha256(body):
            return self.refuse(400, "XAmzContentSHA256Mismatch", key, "payload hash")
        canonical = "\n".join([self.command, path, canonical_query(query)] +
                              ["%s:%s" % (h, " ".join((self.headers.get(h) or "").split())) for h in signed] +
                              ["", ";".join(signed), payload])
        string_to_sign = "\n".join(["AWS4-HMAC-SHA256", self.headers.get("x-amz-date", ""),
                                    "/".join(scope[1:]), sha256(canonical.encode())])
        expected = hmac.new(signing_key(cred["secret"], scope[1], scope[2], scope[3]),
                            string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.get("Signature", "")):
            return self.refuse(403, "SignatureDoesNotMatch", key, "The request signature we calculated does not match the signature you provided.")
        event(event="s3", method=self.command, path=self.path, key=key, verdict="ok")
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("authorization", "x-amz-security-token", "connection", "host")}
        headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=S3RVER/%s, SignedHeaders=%s, Signature=%s" % (
            "/".join(scope[1:]), parts["SignedHeaders"], "0" * 64)
        upstream = http.client.HTTPConnection("127.0.0.1", S3_UPSTREAM, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body if body else None, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        finally:
            upstream.close()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                self.send_header(k, v)
        length = reply.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main():
    servers = {name: Server(("127.0.0.1", 0), handler)
               for name, handler in (("sts", Sts), ("container", Container), ("imds", Imds), ("s3", S3Front))}
    ports = {name: s.server_address[1] for name, s in servers.items()}
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    ports["hang"] = hang.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    ports["closed"] = closed.getsockname()[1]
    closed.close()
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    tmp = os.path.join(STATE_DIR, "ports.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(ports, f)
    os.rename(tmp, os.path.join(STATE_DIR, "ports.json"))
    threading.Event().wait()


if __name__ == "__main__":
    main()
