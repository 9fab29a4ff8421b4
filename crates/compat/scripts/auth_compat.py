#!/usr/bin/env python3
"""API authentication checks with the AWS CLI and boto3 against `meshplane serve --auth sigv4`.

Run by crates/compat/tests/auth.rs with the project venv's python:

    python auth_compat.py --data-dir DIR

It uses only what `serve` wrote: `DIR/credentials` (profile `meshplane`) and `DIR/config`
(region, endpoint_url). Prints one line per check and `N passed, N failed`; exits 1 on any
failure.
"""

import argparse
import configparser
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
import unittest.mock
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
from botocore import UNSIGNED

PASSED = 0
FAILED = 0


def check(name, cond, detail=""):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")


def error_code(fn):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    return None, ""


class Env:
    def __init__(self, data_dir):
        self.dir = data_dir
        self.env = dict(os.environ)
        self.env.update({
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(data_dir, "credentials"),
            "AWS_CONFIG_FILE": os.path.join(data_dir, "config"),
            "AWS_PROFILE": "meshplane",
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        })
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"]:
            self.env.pop(k, None)
        cfg = configparser.ConfigParser()
        cfg.read(self.env["AWS_CONFIG_FILE"])
        self.endpoint = cfg["profile meshplane"]["endpoint_url"]
        self.region = cfg["profile meshplane"]["region"]
        creds = configparser.ConfigParser()
        creds.read(self.env["AWS_SHARED_CREDENTIALS_FILE"])
        self.key_id = creds["meshplane"]["aws_access_key_id"]
        self.secret = creds["meshplane"]["aws_secret_access_key"]

    def aws(self, *args):
        p = subprocess.run([os.path.join(sys.prefix, "bin", "aws"), *args, "--output", "json"],
                           env=self.env, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def client(self, service, key_id=None, secret=None, unsigned=False):
        conf = botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False,
                                      signature_version=UNSIGNED if unsigned else None)
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id=key_id or self.key_id,
                            aws_secret_access_key=secret or self.secret, config=conf)

    def raw(self, method, path, body=b"", service="appmesh", key_id=None, secret=None,
            when=None, tamper=None, headers=None):
        """A request signed by botocore's own SigV4 signer (optionally at time `when`,
        optionally with the body replaced after signing)."""
        req = botocore.awsrequest.AWSRequest(method=method, url=self.endpoint + path, data=body,
                                             headers=dict(headers or {}))
        creds = botocore.credentials.Credentials(key_id or self.key_id, secret or self.secret)
        signer = botocore.auth.SigV4Auth(creds, service, self.region)
        if when is not None:
            with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=when):
                signer.add_auth(req)
        else:
            signer.add_auth(req)
        prepared = req.prepare()
        data = tamper if tamper is not None else prepared.body
        return send(prepared.method, prepared.url, dict(prepared.headers), data)


def send(method, url, headers, data):
    r = urllib.request.Request(url, data=data if data else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def err_type(headers):
    for k, v in headers.items():
        if k.lower() == "x-amzn-errortype":
            return v.split(":")[0]
    return None


def run(env):
    # 1. The CLI with nothing but the generated files.
    rc, out, err = env.aws("appmesh", "list-meshes")
    check("aws appmesh list-meshes with the generated credentials and config", rc == 0 and "meshes" in json.loads(out or "{}"), err)
    rc, out, err = env.aws("appmesh", "create-mesh", "--mesh-name", "m.1")
    check("aws appmesh create-mesh m.1", rc == 0, err)
    rc, out, err = env.aws("servicediscovery", "list-namespaces")
    check("aws servicediscovery list-namespaces", rc == 0, err)

    # 2. boto3 on names that need encoding.
    am = env.client("appmesh")
    am.create_virtual_router(meshName="m.1", virtualRouterName="r",
                             spec={"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]})
    am.create_virtual_node(meshName="m.1", virtualNodeName="n", spec={})
    am.create_route(meshName="m.1", virtualRouterName="r", routeName="a:b",
                    spec={"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}},
                    tags=[{"key": "team", "value": "a b/c"}])
    r = am.describe_route(meshName="m.1", virtualRouterName="r", routeName="a:b")["route"]
    check("boto3 route a:b in mesh m.1 signs and verifies", r["routeName"] == "a:b")
    tags = am.list_tags_for_resource(resourceArn=r["metadata"]["arn"])["tags"]
    check("boto3 tag value with space and / round-trips", tags == [{"key": "team", "value": "a b/c"}], tags)
    rc, out, err = env.aws("appmesh", "describe-route", "--mesh-name", "m.1", "--virtual-router-name", "r", "--route-name", "a:b")
    check("aws appmesh describe-route a:b", rc == 0 and json.loads(out)["route"]["routeName"] == "a:b", err)
    am.tag_resource(resourceArn=r["metadata"]["arn"], tags=[{"key": "k/x", "value": "v w=1&2"}])
    check("boto3 tag-resource with encoded query", len(am.list_tags_for_resource(resourceArn=r["metadata"]["arn"])["tags"]) == 2)
    sd = env.client("servicediscovery")
    op = sd.create_http_namespace(Name="auth-ns")["OperationId"]
    check("boto3 servicediscovery create-http-namespace", sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS")

    # 3. Refusals, with AWS's names.
    code, _ = error_code(lambda: env.client("appmesh", secret="x" * 40).list_meshes())
    check("wrong secret -> InvalidSignatureException", code == "InvalidSignatureException", code)
    code, _ = error_code(lambda: env.client("appmesh", key_id="MPAKAAAAAAAAAAAAAAAA").list_meshes())
    check("unknown key -> UnrecognizedClientException", code == "UnrecognizedClientException", code)
    code, _ = error_code(lambda: env.client("appmesh", unsigned=True).list_meshes())
    check("unsigned -> MissingAuthenticationTokenException", code == "MissingAuthenticationTokenException", code)
    code, _ = error_code(lambda: env.client("servicediscovery", secret="y" * 40).list_namespaces())
    check("cloud map wrong secret -> InvalidSignatureException", code == "InvalidSignatureException", code)
    code, _ = error_code(lambda: env.client("servicediscovery", unsigned=True).list_namespaces())
    check("cloud map unsigned -> MissingAuthenticationTokenException", code == "MissingAuthenticationTokenException", code)
    rc, out, err = env.aws("appmesh", "list-meshes", "--no-sign-request")
    check("aws --no-sign-request -> MissingAuthenticationTokenException", rc != 0 and "MissingAuthenticationTokenException" in err, err)

    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    status, headers, body = env.raw("GET", "/v20190125/meshes", when=old)
    check("request signed 20 minutes ago -> 403 InvalidSignatureException 'Signature expired'",
          status == 403 and err_type(headers) == "InvalidSignatureException" and b"Signature expired" in body, (status, headers, body))
    status, headers, body = env.raw("GET", "/v20190125/meshes")
    check("botocore SigV4Auth now -> 200", status == 200, (status, body))
    status, headers, body = env.raw("PUT", "/v20190125/meshes", body=b'{"meshName":"t1"}',
                                    headers={"Content-Type": "application/json"}, tamper=b'{"meshName":"t2"}')
    check("tampered body -> InvalidSignatureException", status == 403 and err_type(headers) == "InvalidSignatureException", (status, body))
    check("tampered body wrote nothing", "t2" not in [m["meshName"] for m in am.list_meshes()["meshes"]])

    url = am.generate_presigned_url("list_meshes", ExpiresIn=2)
    status, _, _ = send("GET", url, {}, None)
    check("presigned URL before expiry -> 200", status == 200, status)
    time.sleep(3.5)
    status, headers, body = send("GET", url, {}, None)
    check("presigned URL replayed past expiry -> InvalidSignatureException",
          status == 403 and err_type(headers) == "InvalidSignatureException" and b"Signature expired" in body, (status, body))

    # 4. Policies through the API.
    def create_key(name, policy):
        status, headers, body = env.raw("POST", "/meshplane/v1/access-keys",
                                        body=json.dumps({"name": name, "policy": policy}).encode(),
                                        headers={"Content-Type": "application/json"})
        return status, headers, json.loads(body or b"{}")

    am.create_mesh(meshName="dev")
    am.create_mesh(meshName="prod")
    status, _, k = create_key("dev", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "appmesh:*",
        "Resource": ["arn:aws:appmesh:*:*:mesh/dev", "arn:aws:appmesh:*:*:mesh/dev/*"]}]})
    check("create key dev", status == 200, k)
    dev = env.client("appmesh", key_id=k["accessKeyId"], secret=k["secretAccessKey"])
    dev.create_virtual_node(meshName="dev", virtualNodeName="web", spec={})
    dev.update_mesh(meshName="dev", spec={"egressFilter": {"type": "ALLOW_ALL"}})
    check("dev key changes mesh dev", dev.describe_virtual_node(meshName="dev", virtualNodeName="web")["virtualNode"]["virtualNodeName"] == "web")
    code, msg = error_code(lambda: dev.create_virtual_node(meshName="prod", virtualNodeName="web", spec={}))
    check("dev key on prod -> AccessDeniedException", code == "AccessDeniedException" and "is not authorized to perform: appmesh:CreateVirtualNode" in msg, (code, msg))
    try:
        dev.delete_mesh(meshName="prod")
        check("dev key cannot delete prod", False, "deleted")
    except botocore.exceptions.ClientError as e:
        check("dev key cannot delete prod (403)", e.response["ResponseMetadata"]["HTTPStatusCode"] == 403)
    check("prod still exists", am.describe_mesh(meshName="prod")["mesh"]["meshName"] == "prod")
    status, _, k = create_key("ro", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["appmesh:Describe*", "appmesh:List*"], "Resource": "*"}]})
    ro = env.client("appmesh", key_id=k["accessKeyId"], secret=k["secretAccessKey"])
    check("read-only key lists", len(ro.list_meshes()["meshes"]) >= 3)
    code, _ = error_code(lambda: ro.update_mesh(meshName="dev", spec={}))
    check("read-only key cannot update", code == "AccessDeniedException", code)
    ro_env = dict(env.env)
    ro_env.update({"AWS_ACCESS_KEY_ID": k["accessKeyId"], "AWS_SECRET_ACCESS_KEY": k["secretAccessKey"]})
    p = subprocess.run([os.path.join(sys.prefix, "bin", "aws"), "appmesh", "delete-mesh", "--mesh-name", "dev"],
                       env=ro_env, capture_output=True, text=True, timeout=60)
    check("aws CLI with read-only key: delete-mesh -> AccessDeniedException", p.returncode != 0 and "AccessDeniedException" in p.stderr, p.stderr)
    status, _, k = create_key("deny", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "appmesh:DeleteMesh", "Resource": "arn:aws:appmesh:*:*:mesh/prod"}]})
    dn = env.client("appmesh", key_id=k["accessKeyId"], secret=k["secretAccessKey"])
    code, _ = error_code(lambda: dn.delete_mesh(meshName="prod"))
    check("explicit Deny beats Allow", code == "AccessDeniedException", code)
    status, headers, body = create_key("bad", {"Version": "2012-10-17", "Statement": [{"Effect": "Alow", "Action": "*", "Resource": "*"}]})
    check("malformed policy -> 400 BadRequestException naming Statement[0].Effect",
          status == 400 and err_type(headers) == "BadRequestException" and "Statement[0].Effect" in body.get("message", ""), (status, body))
    status, _, k = create_key("cm", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "servicediscovery:List*", "Resource": "*"}]})
    cm = env.client("servicediscovery", key_id=k["accessKeyId"], secret=k["secretAccessKey"])
    check("servicediscovery:List* key lists namespaces", len(cm.list_namespaces()["Namespaces"]) >= 1)
    code, _ = error_code(lambda: cm.create_http_namespace(Name="nope"))
    check("servicediscovery:List* key cannot create -> AccessDeniedException", code == "AccessDeniedException", code)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    try:
        run(Env(args.data_dir))
    except Exception:
        traceback.print_exc()
        check("script ran to the end", False)
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
