"""Prints SigV4-signed requests made by botocore as JSON, for crates/auth/tests/sigv4.rs.

Fixed credentials and time (2026-12-06T11:00:00Z, by patching botocore.auth's clock), so the
Rust test verifies exactly what botocore sends: SigV4Auth (Authorization header) and
SigV4QueryAuth (presigned query string), for appmesh and servicediscovery.
"""
import datetime
import json
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

NOW = datetime.datetime(2026, 12, 6, 11, 0, 0)
CREDS = Credentials("AKIDBOTOCORE0001", "botocore/Secret+Key/0001")
ENDPOINT = "http://127.0.0.1:9080"
MESH = "/v20190125/meshes/a%2Fb%3Ac%2Bd%C3%A9"
CASES = [
    # (service, method, path, query, body, presign)
    ("appmesh", "GET", "/v20190125/meshes", "limit=10&nextToken=a%2Bb", "", False),
    ("appmesh", "PUT", MESH, "", '{"spec":{}}', False),
    ("appmesh", "GET", MESH + "/virtualNodes", "limit=10", "", False),
    ("appmesh", "GET", "/v20190125/meshes/a%2Fb:c+d%C3%A9/virtualNodes", "", "", False),
    ("appmesh", "DELETE", MESH + "/virtualRouters/r%20one", "meshOwner=123456789012", "", False),
    ("appmesh", "GET", MESH + "/virtualNodes", "limit=10&nextToken=a%2Bb", "", True),
    ("servicediscovery", "POST", "/", "", '{"ServiceId":"srv-1","InstanceId":"i-1"}', False),
    ("servicediscovery", "GET", "/", "", "", True),
]


def main():
    out = []
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=NOW):
        for service, method, path, query, body, presign in CASES:
            url = ENDPOINT + path + ("?" + query if query else "")
            headers = {}
            if body and service == "servicediscovery":
                headers["Content-Type"] = "application/x-amz-json-1.1"
                headers["X-Amz-Target"] = "Route53AutoNaming_v20170314.RegisterInstance"
            elif body:
                headers["Content-Type"] = "application/json"
            request = AWSRequest(method=method, url=url, data=body, headers=headers)
            if presign:
                signer = botocore.auth.SigV4QueryAuth(CREDS, service, "us-west-2", expires=300)
            else:
                signer = botocore.auth.SigV4Auth(CREDS, service, "us-west-2")
            signer.add_auth(request)
            out.append(
                {
                    "service": service,
                    "method": request.method,
                    "url": request.url,
                    "headers": {k: v for k, v in request.headers.items()},
                    "body": body,
                }
            )
    print(json.dumps(out))


main()
