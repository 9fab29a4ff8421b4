#!/usr/bin/env python3
"""App Mesh compatibility checks against a running meshplane, with clients nobody here wrote.

Run by crates/compat/tests/aws_cli.rs with the project venv's python:

    python aws_compat.py --endpoint http://127.0.0.1:PORT --quota-endpoint http://127.0.0.1:PORT2

`--endpoint` is a fresh server (default quotas); `--quota-endpoint` a fresh server started
with `--quota-virtual-nodes 2`. Drives every one of the 38 App Mesh operations through the
AWS CLI: the installed `aws` executable as a subprocess for a smoke test (output, errors,
exit codes, endpoint by flag or environment), and awscli's own driver in-process for the
bulk (same code, ~10x faster; `--cli-mode subprocess` runs every call through the
executable). Then boto3 for paginators and modeled exceptions, and raw `http.client`
requests for bodies the SDKs refuse to send (malformed JSON, wrong types, oversize bodies).
Prints one line per check and a final `N passed, N failed`; exits 1 on any failure.
"""

import argparse
import contextlib
import datetime
import http.client
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.parse
import uuid

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions

ACCOUNT = "000000000000"
REGION = "us-east-1"
ARN_PREFIX = f"arn:aws:appmesh:{REGION}:{ACCOUNT}:"

# The 38 CLI commands of operations.tsv; each must succeed at least once through the CLI.
ALL_COMMANDS = sorted(
    [f"{verb}-{kind}" for verb in ("create", "describe", "update", "delete")
     for kind in ("mesh", "virtual-node", "virtual-service", "virtual-router", "route",
                  "virtual-gateway", "gateway-route")]
    + ["list-meshes", "list-virtual-nodes", "list-virtual-services", "list-virtual-routers",
       "list-routes", "list-virtual-gateways", "list-gateway-routes",
       "tag-resource", "untag-resource", "list-tags-for-resource"]
)
assert len(ALL_COMMANDS) == 38

PASSED = 0
FAILED = 0
COVERED = set()
COVERED_SUBPROCESS = set()
STARTED = time.time()


def check(name, cond, detail=""):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return cond


def section(title):
    print(f"--- {title} ({time.time() - STARTED:.1f}s)")


class CliError(Exception):
    def __init__(self, code, stderr, rc):
        super().__init__(f"{code}: {stderr}")
        self.code, self.stderr, self.rc = code, stderr, rc


# Access keys per endpoint (`--credentials`, `--quota-credentials`): each server issued its
# own administrator key on first start (`<data-dir>/credentials`).
CREDS = {}
MAIN = []


def creds(endpoint=None):
    return CREDS.get(endpoint) or CREDS[MAIN[0]]


def isolated_env(endpoint=None):
    """The environment every CLI run gets: the server's issued key, no local AWS config, no
    retries."""
    key_id, secret = creds(endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    })
    return env


class Proc:
    """What a CLI run returned (the shape of subprocess.CompletedProcess)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


_DRIVER = []


def run_inprocess(argv):
    """Runs awscli's own entry point (`awscli.clidriver`, what the `aws` script calls) in this
    process: the same argument parsing, client-side validation, request signing and output
    formatting as the executable, without paying ~0.7 s of interpreter start and imports
    per command. One driver (one botocore session) is reused, as in a shell loop."""
    if not _DRIVER:
        from awscli.clidriver import create_clidriver
        _DRIVER.append(create_clidriver())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _DRIVER[0].main(argv)
    return Proc(rc, out.getvalue(), err.getvalue())


class Cli:
    """`aws appmesh ...`, isolated from any local AWS configuration: either the `aws`
    executable as a subprocess, or awscli's driver in-process (see run_inprocess)."""

    def __init__(self, aws, endpoint, subprocess_mode=False):
        self.aws, self.endpoint = aws, endpoint
        self.env = isolated_env(endpoint)
        # The in-process driver signs with this process's environment (the main server's
        # key); another server's calls go through the executable with their own key.
        self.subprocess_mode = subprocess_mode or creds(endpoint) != creds()

    def raw(self, *args, endpoint_flag=True, extra_env=None, use_subprocess=None):
        argv = ["appmesh", *args, "--output", "json",
                "--cli-read-timeout", "20", "--cli-connect-timeout", "5"]
        if endpoint_flag:
            argv += ["--endpoint-url", self.endpoint]
        if use_subprocess if use_subprocess is not None else (self.subprocess_mode or extra_env):
            env = dict(self.env, **(extra_env or {}))
            return subprocess.run([self.aws, *argv], env=env, capture_output=True, text=True, timeout=60)
        return run_inprocess(argv)

    def __call__(self, *args, **kw):
        p = self.raw(*args, **kw)
        if p.returncode != 0:
            m = re.search(r"An error occurred \((\w+)\) when calling the (\w+) operation", p.stderr)
            raise CliError(m.group(1) if m else None, p.stderr.strip(), p.returncode)
        COVERED.add(args[0])
        if self.subprocess_mode:
            COVERED_SUBPROCESS.add(args[0])
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def expect_error(self, name, code, *args, contains=()):
        """Checks that the command fails with exception `code` (and message substrings)."""
        try:
            out = self(*args)
        except CliError as e:
            ok = e.code == code and all(c in e.stderr for c in contains)
            return check(f"cli {name} -> {code}", ok, f"rc={e.rc} stderr={e.stderr!r}")
        return check(f"cli {name} -> {code}", False, f"succeeded: {json.dumps(out)[:300]}")


def is_epoch(v):
    now = time.time()
    return isinstance(v, (int, float)) and not isinstance(v, bool) and now - 3600 < v < now + 60


def check_data(name, data, names, arn, version, status="ACTIVE", spec=None):
    """Checks an XData object (Create/Describe/Update/Delete output)."""
    problems = []
    for k, v in names.items():
        if data.get(k) != v:
            problems.append(f"{k}={data.get(k)!r} want {v!r}")
    md = data.get("metadata") or {}
    if md.get("arn") != arn:
        problems.append(f"arn={md.get('arn')!r} want {arn!r}")
    if md.get("version") != version or not isinstance(md.get("version"), int):
        problems.append(f"version={md.get('version')!r} want {version}")
    if not re.fullmatch(r"[0-9a-f-]{36}", str(md.get("uid", ""))):
        problems.append(f"uid={md.get('uid')!r}")
    for k in ("createdAt", "lastUpdatedAt"):
        if not is_epoch(md.get(k)):
            problems.append(f"{k}={md.get(k)!r} is not a recent epoch-seconds number")
    if is_epoch(md.get("createdAt")) and is_epoch(md.get("lastUpdatedAt")):
        if md["lastUpdatedAt"] < md["createdAt"]:
            problems.append("lastUpdatedAt < createdAt")
    if md.get("meshOwner") != ACCOUNT or md.get("resourceOwner") != ACCOUNT:
        problems.append(f"owners={md.get('meshOwner')!r}/{md.get('resourceOwner')!r}")
    if (data.get("status") or {}).get("status") != status:
        problems.append(f"status={data.get('status')!r} want {status}")
    if spec is not None and data.get("spec") != spec:
        problems.append(f"spec={json.dumps(data.get('spec'))} want {json.dumps(spec)}")
    return check(name, not problems, "; ".join(problems))


def check_ref(name, ref, names, arn, version):
    problems = []
    for k, v in names.items():
        if ref.get(k) != v:
            problems.append(f"{k}={ref.get(k)!r} want {v!r}")
    if ref.get("arn") != arn:
        problems.append(f"arn={ref.get('arn')!r} want {arn!r}")
    if ref.get("version") != version:
        problems.append(f"version={ref.get('version')!r} want {version}")
    for k in ("createdAt", "lastUpdatedAt"):
        if not is_epoch(ref.get(k)):
            problems.append(f"{k}={ref.get(k)!r}")
    if ref.get("meshOwner") != ACCOUNT or ref.get("resourceOwner") != ACCOUNT:
        problems.append("owners")
    if "uid" in ref or "spec" in ref:
        problems.append("a ref carries uid/spec")
    return check(name, not problems, "; ".join(problems))


# ---------------------------------------------------------------------------------------
# Specs

VN_SPEC = {
    "listeners": [{
        "portMapping": {"port": 8080, "protocol": "http"},
        "healthCheck": {"protocol": "http", "path": "/ping", "healthyThreshold": 2,
                        "unhealthyThreshold": 3, "timeoutMillis": 2000, "intervalMillis": 5000},
        "timeout": {"http": {"perRequest": {"value": 15, "unit": "s"}}},
    }],
    "serviceDiscovery": {"dns": {"hostname": "serviceb.simpleapp.local", "responseType": "ENDPOINTS"}},
    "backends": [{"virtualService": {"virtualServiceName": "servicea.simpleapp.local"}}],
    "logging": {"accessLog": {"file": {"path": "/dev/stdout",
                                       "format": {"json": [{"key": "code", "value": "%RESPONSE_CODE%"}]}}}},
}
VN_SPEC_2 = json.loads(json.dumps(VN_SPEC))
VN_SPEC_2["listeners"][0]["portMapping"]["port"] = 8080
VN_SPEC_2["backends"].append({"virtualService": {"virtualServiceName": "servicec.simpleapp.local"}})


def simple_node(host, port=8080):
    return {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": host}}}


ROUTER_SPEC = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}
ROUTER_SPEC_2 = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http2"}}]}
ROUTE_SPEC = {
    "priority": 10,
    "httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "serviceB", "weight": 1}]},
        "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"value": 1, "unit": "s"},
                        "httpRetryEvents": ["server-error", "gateway-error"]},
        "timeout": {"perRequest": {"value": 5, "unit": "s"}},
    },
}
ROUTE_SPEC_2 = {
    "http2Route": {
        "match": {"prefix": "/v2", "headers": [{"name": "x-canary", "match": {"exact": "1"}}]},
        "action": {"weightedTargets": [{"virtualNode": "serviceB", "weight": 90},
                                       {"virtualNode": "serviceC", "weight": 10}]},
    },
}
GW_SPEC = {"listeners": [{"portMapping": {"port": 8088, "protocol": "http"}}]}
GW_SPEC_2 = {"listeners": [{"portMapping": {"port": 8088, "protocol": "http"},
                            "connectionPool": {"http": {"maxConnections": 100}}}]}
GR_SPEC = {"httpRoute": {"match": {"prefix": "/"},
                         "action": {"target": {"virtualService": {"virtualServiceName": "servicea.simpleapp.local"}}}}}
GR_SPEC_2 = {"httpRoute": {"match": {"prefix": "/api"},
                           "action": {"target": {"virtualService": {"virtualServiceName": "serviceb.simpleapp.local"}},
                                      "rewrite": {"prefix": {"defaultPrefix": "DISABLED"}}}}}


# ---------------------------------------------------------------------------------------
# The lifecycle of every kind through the CLI: create, describe, update, list, delete.

def cli_executable_smoke(aws, endpoint):
    """The installed `aws` executable as a subprocess: output, errors, exit codes, and the
    endpoint given by flag or by environment variable."""
    section("aws executable (subprocess)")
    cli = Cli(aws, endpoint, subprocess_mode=True)
    m = "exe-mesh"
    out = cli("create-mesh", "--mesh-name", m, "--tags", "key=via,value=exe")
    check_data("aws create-mesh", out.get("mesh", {}), {"meshName": m}, f"{ARN_PREFIX}mesh/{m}", 1, spec={})
    out = cli("update-mesh", "--mesh-name", m, "--spec", '{"egressFilter":{"type":"ALLOW_ALL"}}')
    check_data("aws update-mesh", out.get("mesh", {}), {"meshName": m}, f"{ARN_PREFIX}mesh/{m}", 2,
               spec={"egressFilter": {"type": "ALLOW_ALL"}})
    out = cli("create-virtual-node", "--mesh-name", m, "--virtual-node-name", "exe node",
              "--spec", json.dumps(VN_SPEC))
    check_data("aws create-virtual-node (encoded name, full spec)", out.get("virtualNode", {}),
               {"meshName": m, "virtualNodeName": "exe node"}, f"{ARN_PREFIX}mesh/{m}/virtualNode/exe node", 1,
               spec=VN_SPEC)
    out = cli("list-tags-for-resource", "--resource-arn", f"{ARN_PREFIX}mesh/{m}")
    check("aws list-tags-for-resource", out.get("tags") == [{"key": "via", "value": "exe"}], out)
    p = cli.raw("describe-virtual-node", "--mesh-name", m, "--virtual-node-name", "ghost")
    check("aws error: non-zero exit and the App Mesh message on stderr",
          p.returncode != 0 and "An error occurred (NotFoundException) when calling the DescribeVirtualNode "
          "operation" in p.stderr and "ghost" in p.stderr, (p.returncode, p.stderr))
    p = cli.raw("list-meshes", endpoint_flag=False, extra_env={"AWS_ENDPOINT_URL_APP_MESH": endpoint})
    ok = p.returncode == 0 and any(r.get("meshName") == m for r in json.loads(p.stdout or "{}").get("meshes", []))
    check("AWS_ENDPOINT_URL_APP_MESH instead of --endpoint-url", ok, p.stderr[-300:])
    p = cli.raw("describe-mesh", "--mesh-name", m, endpoint_flag=False, extra_env={"AWS_ENDPOINT_URL": endpoint})
    check("AWS_ENDPOINT_URL (global) instead of --endpoint-url", p.returncode == 0, p.stderr[-300:])
    p = cli.raw("describe-mesh", "--mesh-name", m, "--no-sign-request", use_subprocess=True)
    check("--no-sign-request (no Authorization header) -> MissingAuthenticationTokenException",
          p.returncode != 0 and "MissingAuthenticationTokenException" in p.stderr, p.stderr[-300:])
    cli("delete-virtual-node", "--mesh-name", m, "--virtual-node-name", "exe node")
    out = cli("delete-mesh", "--mesh-name", m)
    check("aws delete-mesh -> DELETED", out.get("mesh", {}).get("status", {}).get("status") == "DELETED", out)


def cli_lifecycle(cli):
    section("CLI lifecycle of every kind")
    m = "cli-mesh"
    marn = f"{ARN_PREFIX}mesh/{m}"
    out = cli("create-mesh", "--mesh-name", m, "--spec", '{"egressFilter":{"type":"ALLOW_ALL"}}',
              "--tags", "key=team,value=core", "key=empty,value=")
    check_data("create-mesh", out.get("mesh", {}), {"meshName": m}, marn, 1,
               spec={"egressFilter": {"type": "ALLOW_ALL"}})
    uid = out["mesh"]["metadata"]["uid"]
    out = cli("describe-mesh", "--mesh-name", m)
    check_data("describe-mesh", out.get("mesh", {}), {"meshName": m}, marn, 1)
    out = cli("describe-mesh", "--mesh-name", m, "--mesh-owner", ACCOUNT)
    check_data("describe-mesh --mesh-owner", out.get("mesh", {}), {"meshName": m}, marn, 1)
    out = cli("update-mesh", "--mesh-name", m, "--spec",
              '{"egressFilter":{"type":"DROP_ALL"},"serviceDiscovery":{"ipPreference":"IPv4_ONLY"}}')
    check_data("update-mesh -> version 2", out.get("mesh", {}), {"meshName": m}, marn, 2,
               spec={"egressFilter": {"type": "DROP_ALL"}, "serviceDiscovery": {"ipPreference": "IPv4_ONLY"}})
    check("update-mesh keeps uid", out["mesh"]["metadata"]["uid"] == uid)
    out = cli("list-meshes")
    refs = [r for r in out.get("meshes", []) if r.get("meshName") == m]
    check("list-meshes has the mesh", len(refs) == 1, json.dumps(out)[:300])
    if refs:
        check_ref("list-meshes ref", refs[0], {"meshName": m}, marn, 2)

    # virtual nodes
    vn_arn = f"{marn}/virtualNode/serviceB"
    out = cli("create-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceB",
              "--spec", json.dumps(VN_SPEC), "--tags", "key=app,value=b")
    check_data("create-virtual-node (listener, health check, DNS, backends, logging)",
               out.get("virtualNode", {}), {"meshName": m, "virtualNodeName": "serviceB"}, vn_arn, 1,
               spec=VN_SPEC)
    out = cli("create-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceC",
              "--spec", json.dumps(simple_node("servicec.simpleapp.local")), "--mesh-owner", ACCOUNT)
    check_data("create-virtual-node --mesh-owner", out.get("virtualNode", {}),
               {"meshName": m, "virtualNodeName": "serviceC"}, f"{marn}/virtualNode/serviceC", 1)
    out = cli("describe-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceB")
    check_data("describe-virtual-node", out.get("virtualNode", {}),
               {"meshName": m, "virtualNodeName": "serviceB"}, vn_arn, 1, spec=VN_SPEC)
    out = cli("update-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceB",
              "--spec", json.dumps(VN_SPEC_2))
    check_data("update-virtual-node -> version 2", out.get("virtualNode", {}),
               {"meshName": m, "virtualNodeName": "serviceB"}, vn_arn, 2, spec=VN_SPEC_2)
    out = cli("list-virtual-nodes", "--mesh-name", m)
    names = sorted(r.get("virtualNodeName") for r in out.get("virtualNodes", []))
    check("list-virtual-nodes", names == ["serviceB", "serviceC"], names)
    for r in out.get("virtualNodes", []):
        if r.get("virtualNodeName") == "serviceB":
            check_ref("list-virtual-nodes ref", r, {"meshName": m, "virtualNodeName": "serviceB"}, vn_arn, 2)

    # virtual routers and routes
    vr_arn = f"{marn}/virtualRouter/router1"
    out = cli("create-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1",
              "--spec", json.dumps(ROUTER_SPEC))
    check_data("create-virtual-router", out.get("virtualRouter", {}),
               {"meshName": m, "virtualRouterName": "router1"}, vr_arn, 1, spec=ROUTER_SPEC)
    out = cli("describe-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1")
    check_data("describe-virtual-router", out.get("virtualRouter", {}),
               {"meshName": m, "virtualRouterName": "router1"}, vr_arn, 1)
    out = cli("list-virtual-routers", "--mesh-name", m)
    check("list-virtual-routers", [r.get("virtualRouterName") for r in out.get("virtualRouters", [])] == ["router1"],
          json.dumps(out)[:300])
    rt_arn = f"{vr_arn}/route/route1"
    rt_names = {"meshName": m, "virtualRouterName": "router1", "routeName": "route1"}
    out = cli("create-route", "--mesh-name", m, "--virtual-router-name", "router1", "--route-name", "route1",
              "--spec", json.dumps(ROUTE_SPEC))
    check_data("create-route (http, retry policy, timeout)", out.get("route", {}), rt_names, rt_arn, 1,
               spec=ROUTE_SPEC)
    out = cli("describe-route", "--mesh-name", m, "--virtual-router-name", "router1", "--route-name", "route1")
    check_data("describe-route", out.get("route", {}), rt_names, rt_arn, 1, spec=ROUTE_SPEC)
    out = cli("update-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1",
              "--spec", json.dumps(ROUTER_SPEC_2))
    check_data("update-virtual-router -> version 2", out.get("virtualRouter", {}),
               {"meshName": m, "virtualRouterName": "router1"}, vr_arn, 2, spec=ROUTER_SPEC_2)
    out = cli("update-route", "--mesh-name", m, "--virtual-router-name", "router1", "--route-name", "route1",
              "--spec", json.dumps(ROUTE_SPEC_2))
    check_data("update-route (http2, weighted targets) -> version 2", out.get("route", {}), rt_names, rt_arn, 2,
               spec=ROUTE_SPEC_2)
    out = cli("list-routes", "--mesh-name", m, "--virtual-router-name", "router1")
    refs = out.get("routes", [])
    check("list-routes", len(refs) == 1, json.dumps(out)[:300])
    if refs:
        check_ref("list-routes ref", refs[0], rt_names, rt_arn, 2)

    # virtual services (router provider, node provider)
    vs_a = "servicea.simpleapp.local"
    vs_b = "serviceb.simpleapp.local"
    vsa_arn = f"{marn}/virtualService/{vs_a}"
    spec_a = {"provider": {"virtualRouter": {"virtualRouterName": "router1"}}}
    out = cli("create-virtual-service", "--mesh-name", m, "--virtual-service-name", vs_a, "--spec", json.dumps(spec_a))
    check_data("create-virtual-service (router provider)", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs_a}, vsa_arn, 1, spec=spec_a)
    spec_b = {"provider": {"virtualNode": {"virtualNodeName": "serviceB"}}}
    out = cli("create-virtual-service", "--mesh-name", m, "--virtual-service-name", vs_b, "--spec", json.dumps(spec_b))
    check_data("create-virtual-service (node provider)", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs_b}, f"{marn}/virtualService/{vs_b}", 1, spec=spec_b)
    out = cli("describe-virtual-service", "--mesh-name", m, "--virtual-service-name", vs_a)
    check_data("describe-virtual-service", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs_a}, vsa_arn, 1, spec=spec_a)
    out = cli("update-virtual-service", "--mesh-name", m, "--virtual-service-name", vs_a, "--spec", "{}")
    check_data("update-virtual-service (no provider) -> version 2", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs_a}, vsa_arn, 2, spec={})
    out = cli("update-virtual-service", "--mesh-name", m, "--virtual-service-name", vs_a, "--spec", json.dumps(spec_a))
    check_data("update-virtual-service -> version 3", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs_a}, vsa_arn, 3, spec=spec_a)
    out = cli("list-virtual-services", "--mesh-name", m)
    check("list-virtual-services", sorted(r.get("virtualServiceName") for r in out.get("virtualServices", [])) == [vs_a, vs_b],
          json.dumps(out)[:300])

    # virtual gateways and gateway routes
    gw_arn = f"{marn}/virtualGateway/gw1"
    out = cli("create-virtual-gateway", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--spec", json.dumps(GW_SPEC))
    check_data("create-virtual-gateway", out.get("virtualGateway", {}),
               {"meshName": m, "virtualGatewayName": "gw1"}, gw_arn, 1, spec=GW_SPEC)
    out = cli("describe-virtual-gateway", "--mesh-name", m, "--virtual-gateway-name", "gw1")
    check_data("describe-virtual-gateway", out.get("virtualGateway", {}),
               {"meshName": m, "virtualGatewayName": "gw1"}, gw_arn, 1)
    out = cli("update-virtual-gateway", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--spec", json.dumps(GW_SPEC_2))
    check_data("update-virtual-gateway -> version 2", out.get("virtualGateway", {}),
               {"meshName": m, "virtualGatewayName": "gw1"}, gw_arn, 2, spec=GW_SPEC_2)
    out = cli("list-virtual-gateways", "--mesh-name", m)
    check("list-virtual-gateways", [r.get("virtualGatewayName") for r in out.get("virtualGateways", [])] == ["gw1"],
          json.dumps(out)[:300])
    gr_arn = f"{gw_arn}/gatewayRoute/gr1"
    gr_names = {"meshName": m, "virtualGatewayName": "gw1", "gatewayRouteName": "gr1"}
    out = cli("create-gateway-route", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--gateway-route-name", "gr1",
              "--spec", json.dumps(GR_SPEC))
    check_data("create-gateway-route", out.get("gatewayRoute", {}), gr_names, gr_arn, 1, spec=GR_SPEC)
    out = cli("describe-gateway-route", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--gateway-route-name", "gr1")
    check_data("describe-gateway-route", out.get("gatewayRoute", {}), gr_names, gr_arn, 1, spec=GR_SPEC)
    out = cli("update-gateway-route", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--gateway-route-name", "gr1",
              "--spec", json.dumps(GR_SPEC_2))
    check_data("update-gateway-route -> version 2", out.get("gatewayRoute", {}), gr_names, gr_arn, 2, spec=GR_SPEC_2)
    out = cli("list-gateway-routes", "--mesh-name", m, "--virtual-gateway-name", "gw1")
    refs = out.get("gatewayRoutes", [])
    check("list-gateway-routes", len(refs) == 1, json.dumps(out)[:300])
    if refs:
        check_ref("list-gateway-routes ref", refs[0], gr_names, gr_arn, 2)

    # tags through the CLI
    out = cli("list-tags-for-resource", "--resource-arn", marn)
    check("list-tags-for-resource (create tags, empty value kept)",
          sorted((t["key"], t["value"]) for t in out.get("tags", [])) == [("empty", ""), ("team", "core")], out)
    cli("tag-resource", "--resource-arn", marn, "--tags", "key=team,value=platform", "key=env,value=dev")
    out = cli("list-tags-for-resource", "--resource-arn", marn)
    check("tag-resource merges (overwrites team, adds env, keeps empty)",
          sorted((t["key"], t["value"]) for t in out.get("tags", []))
          == [("empty", ""), ("env", "dev"), ("team", "platform")], out)
    out = cli("describe-mesh", "--mesh-name", m)
    check("tagging does not bump version", out["mesh"]["metadata"]["version"] == 2, out["mesh"]["metadata"])
    cli("untag-resource", "--resource-arn", marn, "--tag-keys", "empty", "absent-key")
    out = cli("list-tags-for-resource", "--resource-arn", marn, "--page-size", "1")
    check("untag-resource + list-tags-for-resource --page-size 1 (paginated)",
          sorted((t["key"], t["value"]) for t in out.get("tags", [])) == [("env", "dev"), ("team", "platform")], out)
    out = cli("list-tags-for-resource", "--resource-arn", vn_arn)
    check("tags of a virtual node", out.get("tags") == [{"key": "app", "value": "b"}], out)
    cli("tag-resource", "--resource-arn", gr_arn, "--tags", "key=k,value=v")
    out = cli("list-tags-for-resource", "--resource-arn", gr_arn)
    check("tags of a gateway route (ARN with gatewayRoute)", out.get("tags") == [{"key": "k", "value": "v"}], out)

    return {"mesh": m, "marn": marn, "vn_arn": vn_arn, "vs_a": vs_a, "vs_b": vs_b, "gr_arn": gr_arn}


def cli_in_use_and_deletes(cli, ctx):
    section("CLI ResourceInUseException and deletes")
    m = ctx["mesh"]
    marn = ctx["marn"]
    cli.expect_error("delete-mesh with resources", "ResourceInUseException", "delete-mesh", "--mesh-name", m)
    cli.expect_error("delete-virtual-router with routes", "ResourceInUseException",
                     "delete-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1")
    cli.expect_error("delete-virtual-node named by a route target", "ResourceInUseException",
                     "delete-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceC")
    cli.expect_error("delete-virtual-gateway with gateway routes", "ResourceInUseException",
                     "delete-virtual-gateway", "--mesh-name", m, "--virtual-gateway-name", "gw1")

    out = cli("delete-gateway-route", "--mesh-name", m, "--virtual-gateway-name", "gw1", "--gateway-route-name", "gr1")
    check_data("delete-gateway-route -> DELETED", out.get("gatewayRoute", {}),
               {"meshName": m, "virtualGatewayName": "gw1", "gatewayRouteName": "gr1"}, ctx["gr_arn"], 2, "DELETED")
    cli.expect_error("describe deleted gateway route", "NotFoundException", "describe-gateway-route",
                     "--mesh-name", m, "--virtual-gateway-name", "gw1", "--gateway-route-name", "gr1")
    cli.expect_error("tags die with the resource", "NotFoundException",
                     "list-tags-for-resource", "--resource-arn", ctx["gr_arn"])
    out = cli("delete-virtual-gateway", "--mesh-name", m, "--virtual-gateway-name", "gw1")
    check_data("delete-virtual-gateway -> DELETED", out.get("virtualGateway", {}),
               {"meshName": m, "virtualGatewayName": "gw1"}, f"{marn}/virtualGateway/gw1", 2, "DELETED")
    cli.expect_error("delete-virtual-router named by a virtual service provider", "ResourceInUseException",
                     "delete-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1",
                     contains=(ctx["vs_a"],))
    vs = ctx["vs_a"]
    out = cli("delete-virtual-service", "--mesh-name", m, "--virtual-service-name", vs)
    check_data(f"delete-virtual-service {vs} -> DELETED", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs}, f"{marn}/virtualService/{vs}", 3, "DELETED")
    out = cli("delete-route", "--mesh-name", m, "--virtual-router-name", "router1", "--route-name", "route1")
    check_data("delete-route -> DELETED", out.get("route", {}),
               {"meshName": m, "virtualRouterName": "router1", "routeName": "route1"},
               f"{marn}/virtualRouter/router1/route/route1", 2, "DELETED")
    # With the route gone, serviceB is only named by virtual service vs_b's provider.
    cli.expect_error("delete-virtual-node named by a virtual service provider", "ResourceInUseException",
                     "delete-virtual-node", "--mesh-name", m, "--virtual-node-name", "serviceB",
                     contains=(ctx["vs_b"],))
    vs = ctx["vs_b"]
    out = cli("delete-virtual-service", "--mesh-name", m, "--virtual-service-name", vs)
    check_data(f"delete-virtual-service {vs} -> DELETED", out.get("virtualService", {}),
               {"meshName": m, "virtualServiceName": vs}, f"{marn}/virtualService/{vs}", 1, "DELETED")
    out = cli("delete-virtual-router", "--mesh-name", m, "--virtual-router-name", "router1")
    check_data("delete-virtual-router -> DELETED", out.get("virtualRouter", {}),
               {"meshName": m, "virtualRouterName": "router1"}, f"{marn}/virtualRouter/router1", 2, "DELETED")
    for n, v in (("serviceB", 2), ("serviceC", 1)):
        out = cli("delete-virtual-node", "--mesh-name", m, "--virtual-node-name", n)
        check_data(f"delete-virtual-node {n} -> DELETED", out.get("virtualNode", {}),
                   {"meshName": m, "virtualNodeName": n}, f"{marn}/virtualNode/{n}", v, "DELETED")
    out = cli("list-virtual-nodes", "--mesh-name", m)
    check("list-virtual-nodes empty after deletes", out.get("virtualNodes") == [], out)
    out = cli("delete-mesh", "--mesh-name", m)
    check_data("delete-mesh -> DELETED", out.get("mesh", {}), {"meshName": m}, marn, 2, "DELETED")
    cli.expect_error("describe deleted mesh", "NotFoundException", "describe-mesh", "--mesh-name", m)
    out = cli("list-meshes")
    check("deleted mesh not listed", all(r.get("meshName") != m for r in out.get("meshes", [])), out)


def cli_errors(cli):
    section("CLI errors")
    m = "cli-errors"
    cli("create-mesh", "--mesh-name", m)
    cli.expect_error("describe missing mesh", "NotFoundException", "describe-mesh", "--mesh-name", "no-such-mesh",
                     contains=("no-such-mesh",))
    cli.expect_error("create-virtual-node in missing mesh", "NotFoundException", "create-virtual-node",
                     "--mesh-name", "no-such-mesh", "--virtual-node-name", "n", "--spec", "{}")
    cli.expect_error("create-route under missing router (parent)", "NotFoundException", "create-route",
                     "--mesh-name", m, "--virtual-router-name", "no-router", "--route-name", "r",
                     "--spec", json.dumps(ROUTE_SPEC), contains=("no-router",))
    cli.expect_error("describe missing virtual node", "NotFoundException", "describe-virtual-node",
                     "--mesh-name", m, "--virtual-node-name", "ghost", contains=("ghost",))
    cli.expect_error("update missing virtual gateway", "NotFoundException", "update-virtual-gateway",
                     "--mesh-name", m, "--virtual-gateway-name", "ghost", "--spec", json.dumps(GW_SPEC))
    cli.expect_error("delete missing gateway route (gateway missing)", "NotFoundException", "delete-gateway-route",
                     "--mesh-name", m, "--virtual-gateway-name", "ghost", "--gateway-route-name", "x")
    cli.expect_error("list routes of missing router", "NotFoundException", "list-routes",
                     "--mesh-name", m, "--virtual-router-name", "ghost")
    cli.expect_error("virtual service naming a missing provider node", "NotFoundException", "create-virtual-service",
                     "--mesh-name", m, "--virtual-service-name", "x.local",
                     "--spec", '{"provider":{"virtualNode":{"virtualNodeName":"ghost"}}}')
    cli.expect_error("tag-resource on a missing resource", "NotFoundException", "tag-resource",
                     "--resource-arn", f"{ARN_PREFIX}mesh/{m}/virtualNode/ghost", "--tags", "key=a,value=b")
    cli.expect_error("describe with a foreign meshOwner", "NotFoundException", "describe-mesh",
                     "--mesh-name", m, "--mesh-owner", "111122223333")

    # Violations the CLI does not catch (max, enum, cross-field) are all reported at once.
    bad = {
        "listeners": [{
            "portMapping": {"port": 70000, "protocol": "foo"},
            "healthCheck": {"protocol": "http", "healthyThreshold": 2, "unhealthyThreshold": 20,
                            "timeoutMillis": 2000, "intervalMillis": 5000},
        }],
        "serviceDiscovery": {"dns": {"hostname": "a.local", "responseType": "SOMETIMES"}},
    }
    cli.expect_error("create-virtual-node with several violations", "BadRequestException", "create-virtual-node",
                     "--mesh-name", m, "--virtual-node-name", "bad", "--spec", json.dumps(bad),
                     contains=("spec.listeners[0].portMapping.port", "spec.listeners[0].portMapping.protocol",
                               "spec.listeners[0].healthCheck.unhealthyThreshold",
                               "spec.serviceDiscovery.dns.responseType"))
    cli.expect_error("route with two route kinds", "BadRequestException", "create-route",
                     "--mesh-name", m, "--virtual-router-name", "r", "--route-name", "r",
                     "--spec", json.dumps({"httpRoute": ROUTE_SPEC["httpRoute"],
                                           "tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}))
    cli.expect_error("name longer than 255", "BadRequestException", "create-virtual-router",
                     "--mesh-name", m, "--virtual-router-name", "r" * 256, "--spec", "{}")
    cli.expect_error("list limit above 100", "BadRequestException", "list-meshes", "--no-paginate", "--limit", "101")

    cli.expect_error("duplicate mesh name", "ConflictException", "create-mesh", "--mesh-name", m)
    cli("create-virtual-router", "--mesh-name", m, "--virtual-router-name", "dup", "--spec", "{}")
    cli.expect_error("duplicate virtual router name", "ConflictException", "create-virtual-router",
                     "--mesh-name", m, "--virtual-router-name", "dup", "--spec", "{}")

    # clientToken idempotency through the CLI
    token = str(uuid.uuid4())
    spec = json.dumps(simple_node("idem.local"))
    a = cli("create-virtual-node", "--mesh-name", m, "--virtual-node-name", "idem", "--spec", spec,
            "--client-token", token)
    b = cli("create-virtual-node", "--mesh-name", m, "--virtual-node-name", "idem", "--spec", spec,
            "--client-token", token)
    check("create replay with the same clientToken returns the same response", a == b,
          f"{json.dumps(a)[:200]} vs {json.dumps(b)[:200]}")
    cli.expect_error("clientToken reused with a different body", "ConflictException", "create-virtual-node",
                     "--mesh-name", m, "--virtual-node-name", "idem",
                     "--spec", json.dumps(simple_node("other.local")), "--client-token", token)
    token = str(uuid.uuid4())
    spec2 = json.dumps(simple_node("idem2.local"))
    a = cli("update-virtual-node", "--mesh-name", m, "--virtual-node-name", "idem", "--spec", spec2,
            "--client-token", token)
    b = cli("update-virtual-node", "--mesh-name", m, "--virtual-node-name", "idem", "--spec", spec2,
            "--client-token", token)
    d = cli("describe-virtual-node", "--mesh-name", m, "--virtual-node-name", "idem")
    check("update replay: same response, version bumped once",
          a == b and d["virtualNode"]["metadata"]["version"] == 2
          and a["virtualNode"]["metadata"]["uid"] == d["virtualNode"]["metadata"]["uid"],
          f"{a['virtualNode']['metadata']} / {d['virtualNode']['metadata']}")

    # TooManyTagsException: 50 tags fit, a 51st does not, and nothing is applied.
    arn = f"{ARN_PREFIX}mesh/{m}"
    tags = [f"key=k{i:02},value=v" for i in range(50)]
    cli("tag-resource", "--resource-arn", arn, "--tags", *tags)
    cli.expect_error("tag-resource over 50 tags", "TooManyTagsException", "tag-resource",
                     "--resource-arn", arn, "--tags", "key=one-more,value=x")
    out = cli("list-tags-for-resource", "--resource-arn", arn)
    check("50 tags listed across pages, the 51st not applied", len(out.get("tags", [])) == 50
          and all(t["key"] != "one-more" for t in out.get("tags", [])), len(out.get("tags", [])))

    # Pagination: 5 virtual nodes, pages of 2 (3 requests), merged by the CLI.
    pm = "cli-pages"
    cli("create-mesh", "--mesh-name", pm)
    for i in range(5):
        cli("create-virtual-node", "--mesh-name", pm, "--virtual-node-name", f"node-{i}",
            "--spec", json.dumps(simple_node(f"node-{i}.local")))
    out = cli("list-virtual-nodes", "--mesh-name", pm, "--page-size", "2")
    names = [r.get("virtualNodeName") for r in out.get("virtualNodes", [])]
    check("list-virtual-nodes --page-size 2 over 5 nodes", sorted(names) == [f"node-{i}" for i in range(5)]
          and len(set(names)) == 5, names)
    out = cli("list-virtual-nodes", "--mesh-name", pm, "--no-paginate", "--limit", "2")
    check("list-virtual-nodes --no-paginate --limit 2: one page + nextToken",
          len(out.get("virtualNodes", [])) == 2 and isinstance(out.get("nextToken"), str), out)
    out2 = cli("list-virtual-nodes", "--mesh-name", pm, "--no-paginate", "--limit", "2",
               "--next-token", out.get("nextToken", ""))
    check("second page via --next-token continues", len(out2.get("virtualNodes", [])) == 2
          and not {r["virtualNodeName"] for r in out2["virtualNodes"]} & {r["virtualNodeName"] for r in out["virtualNodes"]},
          out2)
    out = cli("list-virtual-nodes", "--mesh-name", pm, "--max-items", "3")
    check("list-virtual-nodes --max-items 3 (client-side truncation)", len(out.get("virtualNodes", [])) == 3, out)



def cli_special_names(cli):
    section("CLI names that need percent-encoding")
    m = "enc mesh:1"
    out = cli("create-mesh", "--mesh-name", m)
    check_data("create-mesh 'enc mesh:1'", out.get("mesh", {}), {"meshName": m}, f"{ARN_PREFIX}mesh/{m}", 1)
    for name in ("a b", "x:y", "slash/name", "ünïcødé-名前", "pct%2Fname", "plus+sign"):
        arn = f"{ARN_PREFIX}mesh/{m}/virtualRouter/{name}"
        ids = {"meshName": m, "virtualRouterName": name}
        out = cli("create-virtual-router", "--mesh-name", m, "--virtual-router-name", name, "--spec", "{}")
        check_data(f"create-virtual-router {name!r}", out.get("virtualRouter", {}), ids, arn, 1)
        out = cli("describe-virtual-router", "--mesh-name", m, "--virtual-router-name", name)
        check_data(f"describe-virtual-router {name!r}", out.get("virtualRouter", {}), ids, arn, 1)
        out = cli("update-virtual-router", "--mesh-name", m, "--virtual-router-name", name,
                  "--spec", json.dumps(ROUTER_SPEC))
        check_data(f"update-virtual-router {name!r}", out.get("virtualRouter", {}), ids, arn, 2)
        out = cli("delete-virtual-router", "--mesh-name", m, "--virtual-router-name", name)
        check_data(f"delete-virtual-router {name!r}", out.get("virtualRouter", {}), ids, arn, 2, "DELETED")
    # A name containing `/` is not confused with a deeper path, and tags find it by ARN.
    # (Virtual services keep `/`; virtual node, gateway and mesh names refuse it, since
    # they become the Envoy node id mesh/<mesh>/virtualNode/<name>.)
    cli("create-virtual-service", "--mesh-name", m, "--virtual-service-name", "slash/name",
        "--spec", "{}", "--tags", "key=k,value=v")
    out = cli("list-tags-for-resource", "--resource-arn", f"{ARN_PREFIX}mesh/{m}/virtualService/slash/name")
    check("list-tags-for-resource by an ARN whose name contains '/'", out.get("tags") == [{"key": "k", "value": "v"}], out)
    out = cli("list-virtual-services", "--mesh-name", m)
    check("list under an encoded mesh name", [r.get("virtualServiceName") for r in out.get("virtualServices", [])] == ["slash/name"], out)
    cli("delete-virtual-service", "--mesh-name", m, "--virtual-service-name", "slash/name")
    cli.expect_error("virtual node name containing '/'", "BadRequestException", "create-virtual-node",
                     "--mesh-name", m, "--virtual-node-name", "slash/name",
                     "--spec", json.dumps(simple_node("s.local")), contains=("virtualNodeName", "must not contain"))
    cli.expect_error("mesh name containing '/'", "BadRequestException", "create-mesh",
                     "--mesh-name", "a/b", contains=("meshName",))
    out = cli("list-virtual-nodes", "--mesh-name", m)
    check("the refused virtual node was not created", out.get("virtualNodes") == [], out)
    out = cli("delete-mesh", "--mesh-name", m)
    check("delete-mesh 'enc mesh:1'", out.get("mesh", {}).get("status", {}).get("status") == "DELETED", out)


def quota(quota_endpoint, aws):
    section("LimitExceededException (server with --quota-virtual-nodes 2)")
    cli = Cli(aws, quota_endpoint)
    cli("create-mesh", "--mesh-name", "q")
    for i in range(2):
        cli("create-virtual-node", "--mesh-name", "q", "--virtual-node-name", f"n{i}",
            "--spec", json.dumps(simple_node(f"n{i}.local")))
    cli.expect_error("third virtual node over quota 2", "LimitExceededException", "create-virtual-node",
                     "--mesh-name", "q", "--virtual-node-name", "n2", "--spec", json.dumps(simple_node("n2.local")))
    out = cli("list-virtual-nodes", "--mesh-name", "q")
    check("the refused node was not created", len(out.get("virtualNodes", [])) == 2, out)
    # Updating an existing node is not a new node.
    out = cli("update-virtual-node", "--mesh-name", "q", "--virtual-node-name", "n0",
              "--spec", json.dumps(simple_node("n0b.local")))
    check("update at quota still allowed", out["virtualNode"]["metadata"]["version"] == 2, out)
    b = client(quota_endpoint)
    try:
        b.create_virtual_node(meshName="q", virtualNodeName="n3", spec=simple_node("n3.local"))
        check("boto3 LimitExceededException", False, "created")
    except b.exceptions.LimitExceededException as e:
        check("boto3 LimitExceededException", e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response)


# ---------------------------------------------------------------------------------------
# boto3

def client(endpoint):
    return boto3.client(
        "appmesh", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=creds(endpoint)[0], aws_secret_access_key=creds(endpoint)[1],
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"},
                                      connect_timeout=5, read_timeout=20),
    )


def expect(name, exc_name, fn, status=None, contains=()):
    try:
        out = fn()
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        st = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = e.response.get("Error", {}).get("Message", "")
        ok = code == exc_name and (status is None or st == status) and all(c in msg for c in contains)
        # The modeled exception class must be the one raised.
        ok = ok and type(e).__name__ == exc_name
        return check(f"boto3 {name} -> {exc_name}", ok, f"{type(e).__name__} code={code} status={st} msg={msg!r}")
    return check(f"boto3 {name} -> {exc_name}", False, f"succeeded: {str(out)[:200]}")


def boto3_suite(endpoint):
    section("boto3")
    c = client(endpoint)
    m = "boto-mesh"
    r = c.create_mesh(meshName=m, tags=[{"key": "a", "value": "1"}])
    md = r["mesh"]["metadata"]
    check("boto3 create_mesh: datetime timestamps, version 1",
          isinstance(md["createdAt"], datetime.datetime) and md["createdAt"].tzinfo is not None
          and md["version"] == 1 and r["mesh"]["spec"] == {} and r["mesh"]["status"]["status"] == "ACTIVE", md)
    check("boto3 x-amzn-RequestId -> RequestId", bool(r["ResponseMetadata"].get("RequestId")), r["ResponseMetadata"])
    r = c.update_mesh(meshName=m)
    check("boto3 update_mesh without spec (body is just clientToken) -> version 2",
          r["mesh"]["metadata"]["version"] == 2 and r["mesh"]["spec"] == {}, r["mesh"])

    for i in range(5):
        c.create_virtual_node(meshName=m, virtualNodeName=f"vn-{i}", spec=simple_node(f"vn-{i}.local"))
    pages = list(c.get_paginator("list_virtual_nodes").paginate(meshName=m, PaginationConfig={"PageSize": 2}))
    names = [v["virtualNodeName"] for p in pages for v in p["virtualNodes"]]
    check("boto3 list_virtual_nodes paginator, PageSize 2: 3 pages, 5 distinct nodes",
          len(pages) == 3 and sorted(names) == [f"vn-{i}" for i in range(5)]
          and "nextToken" not in pages[-1], [len(p["virtualNodes"]) for p in pages])
    pages = list(c.get_paginator("list_meshes").paginate(PaginationConfig={"PageSize": 1}))
    check("boto3 list_meshes paginator", any(mm["meshName"] == m for p in pages for mm in p["meshes"]), len(pages))
    arn = c.describe_mesh(meshName=m)["mesh"]["metadata"]["arn"]
    c.tag_resource(resourceArn=arn, tags=[{"key": f"t{i}", "value": str(i)} for i in range(6)])
    pages = list(c.get_paginator("list_tags_for_resource").paginate(resourceArn=arn, PaginationConfig={"PageSize": 3}))
    keys = sorted(t["key"] for p in pages for t in p["tags"])
    check("boto3 list_tags_for_resource paginator (limit 3, 7 tags)",
          len(pages) == 3 and keys == sorted(["a"] + [f"t{i}" for i in range(6)]), keys)
    c.untag_resource(resourceArn=arn, tagKeys=["a", "t0"])
    tags = c.list_tags_for_resource(resourceArn=arn)["tags"]
    check("boto3 untag_resource", sorted(t["key"] for t in tags) == [f"t{i}" for i in range(1, 6)], tags)
    c.create_virtual_router(meshName=m, virtualRouterName="vr", spec=ROUTER_SPEC)
    c.create_route(meshName=m, virtualRouterName="vr", routeName="r0",
                   spec={"httpRoute": {"match": {"prefix": "/"},
                                       "action": {"weightedTargets": [{"virtualNode": "vn-0", "weight": 1}]}}})
    pages = list(c.get_paginator("list_routes").paginate(meshName=m, virtualRouterName="vr"))
    check("boto3 list_routes paginator", [r["routeName"] for p in pages for r in p["routes"]] == ["r0"], pages)

    # typed exceptions
    expect("describe_mesh missing", "NotFoundException", lambda: c.describe_mesh(meshName="nope"), 404)
    expect("describe_route, router missing", "NotFoundException",
           lambda: c.describe_route(meshName=m, virtualRouterName="nope", routeName="r0"), 404, ("nope",))
    expect("create_virtual_node, mesh missing", "NotFoundException",
           lambda: c.create_virtual_node(meshName="nope", virtualNodeName="x", spec={}), 404)
    expect("create_mesh duplicate", "ConflictException", lambda: c.create_mesh(meshName=m), 409)
    expect("delete_mesh with resources", "ResourceInUseException", lambda: c.delete_mesh(meshName=m), 409)
    expect("delete_virtual_router with routes", "ResourceInUseException",
           lambda: c.delete_virtual_router(meshName=m, virtualRouterName="vr"), 409)
    expect("delete_virtual_node used by a route", "ResourceInUseException",
           lambda: c.delete_virtual_node(meshName=m, virtualNodeName="vn-0"), 409)
    expect("create_virtual_node bad enum/max", "BadRequestException",
           lambda: c.create_virtual_node(meshName=m, virtualNodeName="bad", spec={
               "listeners": [{"portMapping": {"port": 8080, "protocol": "udp"},
                              "connectionPool": {"http": {"maxConnections": 1}},
                              "outlierDetection": {"maxServerErrors": 1, "maxEjectionPercent": 101,
                                                   "interval": {"value": 1, "unit": "s"},
                                                   "baseEjectionDuration": {"value": 1, "unit": "s"}}}],
               "serviceDiscovery": {"dns": {"hostname": "bad.local"}}}), 400,
           ("spec.listeners[0].portMapping.protocol", "spec.listeners[0].outlierDetection.maxEjectionPercent"))
    expect("list_tags_for_resource limit 51", "BadRequestException",
           lambda: c.list_tags_for_resource(resourceArn=arn, limit=51), 400)
    expect("tag_resource to 51 tags", "TooManyTagsException",
           lambda: c.tag_resource(resourceArn=arn, tags=[{"key": f"x{i}", "value": ""} for i in range(46)]), 400)
    expect("list_tags_for_resource malformed ARN", "BadRequestException",
           lambda: c.list_tags_for_resource(resourceArn="not-an-arn"), 400)
    expect("list_virtual_nodes garbage nextToken", "BadRequestException",
           lambda: c.list_virtual_nodes(meshName=m, nextToken="garbage!"), 400)

    # clientToken idempotency through boto3
    token = "tok-" + uuid.uuid4().hex[:20]
    a = c.create_virtual_gateway(meshName=m, virtualGatewayName="gw", spec=GW_SPEC, clientToken=token)
    b = c.create_virtual_gateway(meshName=m, virtualGatewayName="gw", spec=GW_SPEC, clientToken=token)
    check("boto3 create replay: same uid, version 1",
          a["virtualGateway"]["metadata"]["uid"] == b["virtualGateway"]["metadata"]["uid"]
          and b["virtualGateway"]["metadata"]["version"] == 1, (a["virtualGateway"]["metadata"], b["virtualGateway"]["metadata"]))
    expect("create replay with a different body", "ConflictException",
           lambda: c.create_virtual_gateway(meshName=m, virtualGatewayName="gw", spec=GW_SPEC_2, clientToken=token), 409)
    c.create_virtual_service(meshName=m, virtualServiceName="svc.local",
                             spec={"provider": {"virtualRouter": {"virtualRouterName": "vr"}}})
    c.create_gateway_route(meshName=m, virtualGatewayName="gw", gatewayRouteName="gr", spec={
        "grpcRoute": {"match": {"serviceName": "pkg.Svc"},
                      "action": {"target": {"virtualService": {"virtualServiceName": "svc.local"}}}}})
    expect("delete_virtual_gateway with gateway routes", "ResourceInUseException",
           lambda: c.delete_virtual_gateway(meshName=m, virtualGatewayName="gw"), 409)
    expect("delete_virtual_router used as a provider", "ResourceInUseException",
           lambda: c.delete_virtual_router(meshName=m, virtualRouterName="vr"), 409)
    expect("delete_virtual_service targeted by a gateway route", "ResourceInUseException",
           lambda: c.delete_virtual_service(meshName=m, virtualServiceName="svc.local"), 409)


# ---------------------------------------------------------------------------------------
# Raw HTTP for requests the SDKs refuse to build

def raw(endpoint, method, path, body=None, headers=None):
    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    # Signed as the SDKs sign (the server verifies SigV4 on every call): what these checks
    # exercise is the wire shape past authentication.
    # botocore signs the query as given (it expects it already encoded). SigV4's canonical
    # query form-decodes a raw '+' (as aws-sigv4 and the server's verifier do), so it is
    # signed as %20, though the App Mesh handler then reads it as a literal plus.
    signed_path = path
    if "?" in path:
        base, query = path.split("?", 1)
        pairs = [p.partition("=") for p in query.split("&")]
        signed_path = base + "?" + "&".join(
            urllib.parse.quote(urllib.parse.unquote_plus(k), safe="-_.~") + "=" +
            urllib.parse.quote(urllib.parse.unquote_plus(v), safe="-_.~") for k, _, v in pairs)
    req = botocore.awsrequest.AWSRequest(method=method, url=endpoint.rstrip("/") + signed_path,
                                         data=body, headers=h)
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(*creds(endpoint)), "appmesh",
                            REGION).add_auth(req)
    h = dict(req.headers.items())
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def expect_raw(name, endpoint, method, path, body, exc, status, contains=()):
    try:
        st, hdrs, data = raw(endpoint, method, path, body)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        return check(f"raw {name} -> {exc}", False, repr(e))
    try:
        msg = json.loads(data).get("message", "")
    except ValueError:
        msg = None
    ok = (st == status and hdrs.get("x-amzn-errortype") == exc and isinstance(msg, str)
          and all(c in msg for c in contains) and hdrs.get("content-type", "").startswith("application/json"))
    return check(f"raw {name} -> {exc}", ok, f"status={st} type={hdrs.get('x-amzn-errortype')} body={data[:300]!r}")


def raw_suite(endpoint):
    section("raw HTTP (malformed bodies)")
    c = client(endpoint)
    c.create_mesh(meshName="raw")
    vn = "/v20190125/meshes/raw/virtualNodes"
    expect_raw("malformed JSON", endpoint, "PUT", vn, b'{"virtualNodeName": "a", "spec": {', "BadRequestException", 400)
    expect_raw("body is a JSON array", endpoint, "PUT", vn, b"[]", "BadRequestException", 400)
    expect_raw("name of the wrong type", endpoint, "PUT", vn, b'{"virtualNodeName": 7, "spec": {}}',
               "BadRequestException", 400, ("virtualNodeName",))
    expect_raw("port of the wrong type", endpoint, "PUT", vn,
               json.dumps({"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": "80", "protocol": "http"}}]}}).encode(),
               "BadRequestException", 400, ("spec.listeners[0].portMapping.port",))
    expect_raw("spec missing", endpoint, "PUT", vn, b'{"virtualNodeName": "a"}', "BadRequestException", 400, ("spec",))
    expect_raw("empty union (serviceDiscovery: {})", endpoint, "PUT", vn,
               json.dumps({"virtualNodeName": "a", "spec": {"serviceDiscovery": {}}}).encode(),
               "BadRequestException", 400, ("serviceDiscovery",))
    expect_raw("clientToken of the wrong type", endpoint, "PUT", vn,
               b'{"virtualNodeName": "a", "spec": {}, "clientToken": 5}', "BadRequestException", 400, ("clientToken",))
    big = json.dumps({"virtualNodeName": "big", "spec": {}, "tags": [{"key": "k", "value": "x" * (1 << 20)}]}).encode()
    expect_raw("body over 1 MiB", endpoint, "PUT", vn, big, "BadRequestException", 400)
    expect_raw("tag body malformed", endpoint, "PUT",
               "/v20190125/tag?resourceArn=" + urllib.parse.quote(f"{ARN_PREFIX}mesh/raw", safe=""),
               b'{"tags": [{"key": 1, "value": "x"}]}', "BadRequestException", 400)
    expect_raw("unknown path", endpoint, "GET", "/v20190125/nothing-here", None, "NotFoundException", 404)
    st, hdrs, data = raw(endpoint, "GET", "/v20190125/meshes/raw")
    check("raw describe: 200, application/json, x-amzn-requestid",
          st == 200 and hdrs.get("content-type", "").startswith("application/json") and "x-amzn-requestid" in hdrs,
          (st, hdrs))
    # `+` in a query value is a literal plus, not a space (botocore encodes spaces as %20).
    c.create_mesh(meshName="a+b", tags=[{"key": "plus", "value": "yes"}])
    st, _, data = raw(endpoint, "GET", f"/v20190125/tags?resourceArn={ARN_PREFIX}mesh/a+b")
    check("raw query with a literal '+' finds mesh 'a+b'",
          st == 200 and json.loads(data).get("tags") == [{"key": "plus", "value": "yes"}], (st, data[:200]))
    ok = c.list_virtual_nodes(meshName="raw")["virtualNodes"] == []
    check("nothing was created by the refused raw requests", ok)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--quota-endpoint", required=True)
    ap.add_argument("--credentials", required=True, help="ACCESS_KEY_ID:SECRET of --endpoint")
    ap.add_argument("--quota-credentials", required=True,
                    help="ACCESS_KEY_ID:SECRET of --quota-endpoint")
    ap.add_argument("--cli-mode", choices=("mixed", "subprocess"), default="mixed",
                    help="mixed: a smoke test through the aws executable, the rest through awscli's "
                         "driver in-process; subprocess: every CLI call through the executable")
    args = ap.parse_args()
    CREDS[args.endpoint] = tuple(args.credentials.split(":", 1))
    CREDS[args.quota_endpoint] = tuple(args.quota_credentials.split(":", 1))
    MAIN.append(args.endpoint)
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(aws):
        print(f"FAIL {aws} missing: run cargo xtask setup")
        print("0 passed, 1 failed")
        return 1
    # Everything below runs with no local AWS configuration, in-process or not.
    env = isolated_env()
    os.environ.clear()
    os.environ.update(env)
    # awscli's driver runs in-process for the bulk of the checks (same code as the `aws`
    # executable, ~10x faster); the executable itself is exercised as a subprocess by the
    # smoke step, and by everything with --cli-mode subprocess.
    cli = Cli(aws, args.endpoint, subprocess_mode=args.cli_mode == "subprocess")
    steps = [
        ("aws executable smoke", lambda: cli_executable_smoke(aws, args.endpoint)),
        ("cli lifecycle + deletes", lambda: cli_in_use_and_deletes(cli, cli_lifecycle(cli))),
        ("cli errors", lambda: cli_errors(cli)),
        ("cli special names", lambda: cli_special_names(cli)),
        ("quota", lambda: quota(args.quota_endpoint, aws)),
        ("boto3", lambda: boto3_suite(args.endpoint)),
        ("raw", lambda: raw_suite(args.endpoint)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - an unexpected error fails the step, the rest still run
            check(f"{name} ran to completion", False, f"{e!r}\n{traceback.format_exc()}")
    missing = [c for c in ALL_COMMANDS if c not in COVERED]
    check(f"all 38 App Mesh CLI commands succeeded at least once ({len(COVERED & set(ALL_COMMANDS))}/38)",
          not missing, f"never succeeded: {missing}")
    if args.cli_mode == "subprocess":
        missing = [c for c in ALL_COMMANDS if c not in COVERED_SUBPROCESS]
        check("all 38 commands succeeded through the `aws` executable (subprocess)",
              not missing, f"never succeeded as a subprocess: {missing}")
    print(f"elapsed {time.time() - STARTED:.1f}s")
    print(f"{PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
