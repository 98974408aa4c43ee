# SPDX-License-Identifier: MIT
"""Independent SigV4 reference for tests/check_sigv4.c.

Reads a JSON list of request descriptions (method, endpoint, addressing
style, region, bucket, raw key, raw query parameters, Range, body in hex,
credentials, time stamp), builds each request's URL the way botocore does
and signs it with botocore's S3SigV4Auth at the given time.  Prints a JSON
object mapping each case name to the URL (with botocore's canonical query
string) and the Authorization header.

Usage: sigv4_reference.py CASES.json
"""
import datetime
import json
import sys
from unittest import mock
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials


def base_url(case):
    """Scheme, host and path for the case's addressing style."""
    endpoint = case.get("endpoint")
    if endpoint:
        scheme, _, authority = endpoint.partition("://")
    else:
        scheme, authority = "https", "s3.%s.amazonaws.com" % case["region"]
    key = case.get("key")
    encoded_key = quote(key, safe="/~") if key is not None else None
    if case["style"] == "virtual":
        host = "%s.%s" % (case["bucket"], authority)
        path = "/" + (encoded_key or "")
    else:
        host = authority
        path = "/" + case["bucket"] + ("/" + encoded_key if encoded_key is not None else "")
    return "%s://%s%s" % (scheme, host, path)


def sign(case):
    url = base_url(case)
    headers = {}
    if case.get("range"):
        headers["Range"] = case["range"]
    body = bytes.fromhex(case.get("body_hex", ""))
    params = [(name, value) for name, value in case.get("params", [])]
    request = AWSRequest(method=case["method"], url=url, headers=headers, data=body,
                         params=dict(params))
    if url.startswith("https") and body:
        # As the AWS CLI does over TLS: the payload is not hashed.
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    credentials = Credentials(case["access_key"], case["secret_key"], case.get("token"))
    auth = S3SigV4Auth(credentials, "s3", case["region"])
    when = datetime.datetime.utcfromtimestamp(case["time"])

    class FixedClock(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

    with mock.patch("botocore.auth.datetime.datetime", FixedClock):
        auth.add_auth(request)
    query = auth.canonical_query_string(request)
    return {
        "url": url + ("?" + query if query else ""),
        "authorization": request.headers["Authorization"],
        "payload_hash": request.headers["X-Amz-Content-SHA256"],
    }


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    json.dump({case["name"]: sign(case) for case in cases}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
