#!/usr/bin/env python3
"""Cloud Map (servicediscovery 2017-03-14) compatibility checks against a running meshplane.

Run by crates/compat/tests/cloudmap.rs with the project venv's python:

    python cloudmap_compat.py --endpoint http://127.0.0.1:PORT

Every one of the 17 registry operations runs through the `aws servicediscovery` CLI (with
`AWS_DISABLE_HOST_PREFIX_INJECTION=true`, without which DiscoverInstances would go to
`data-127.0.0.1`) and through boto3 (`Config(inject_host_prefix=False)`), including typed
errors and paginators. Prints one line per check and a final `N passed, N failed`; exits 1
on any failure.
"""

import argparse
import http.client
import json
import os
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

PASSED = 0
FAILED = 0
COVERED_CLI = set()
COVERED_BOTO = set()

ALL_OPS = [
    "CreateHttpNamespace", "GetOperation", "GetNamespace", "ListNamespaces", "DeleteNamespace",
    "CreateService", "GetService", "ListServices", "DeleteService", "RegisterInstance",
    "DeregisterInstance", "GetInstance", "ListInstances", "DiscoverInstances",
    "DiscoverInstancesRevision", "GetInstancesHealthStatus", "UpdateInstanceCustomHealthStatus",
]


def kebab(op):
    out = ""
    for i, c in enumerate(op):
        if c.isupper() and i:
            out += "-"
        out += c.lower()
    return out


def check(name, cond, detail=""):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")


# The server's issued administrator key (`--credentials ACCESS_KEY_ID:SECRET`).
CREDS = ["", ""]


def cli_env():
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": CREDS[0], "AWS_SECRET_ACCESS_KEY": CREDS[1], "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1",
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
    })
    return env


def aws(endpoint, op, *args):
    """Runs `aws servicediscovery <op> ...`; returns (exit code, parsed stdout or None, stderr)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "aws"), "servicediscovery", kebab(op),
           "--endpoint-url", endpoint, "--output", "json",
           "--cli-read-timeout", "20", "--cli-connect-timeout", "5", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=60)
    out = None
    if p.stdout.strip():
        try:
            out = json.loads(p.stdout)
        except ValueError:
            out = p.stdout
    if p.returncode == 0:
        COVERED_CLI.add(op)
    return p.returncode, out, p.stderr


def expect_cli_error(endpoint, name, error, op, *args):
    code, _, err = aws(endpoint, op, *args)
    check(name, code != 0 and f"({error})" in err, f"exit {code}, stderr {err.strip()[-300:]}")


def boto(endpoint):
    cfg = botocore.config.Config(inject_host_prefix=False, retries={"max_attempts": 1})
    return boto3.client("servicediscovery", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=CREDS[0], aws_secret_access_key=CREDS[1], config=cfg)


class Tracked:
    """Wraps a boto3 client to record which operations succeeded."""

    def __init__(self, client):
        self.c = client
        self.exceptions = client.exceptions

    def __getattr__(self, name):
        f = getattr(self.c, name)
        if name in ("get_paginator", "exceptions"):
            return f
        op = "".join(p.capitalize() for p in name.split("_"))

        def call(**kw):
            r = f(**kw)
            COVERED_BOTO.add(op)
            return r
        return call


def expect_boto_error(name, exc, fn, **kw):
    try:
        fn(**kw)
        check(name, False, "no error raised")
    except exc:
        check(name, True)
    except Exception as e:  # noqa: BLE001
        check(name, False, f"raised {type(e).__name__}: {e}")


def raw(endpoint, target, body, content_type="application/x-amz-json-1.1"):
    u = urllib.parse.urlparse(endpoint)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Content-Type": content_type}
    if target:
        headers["X-Amz-Target"] = target
    # Signed like any SDK request (the server verifies SigV4): what is tested here is the
    # wire shape past authentication.
    req = botocore.awsrequest.AWSRequest(method="POST", url=endpoint.rstrip("/") + "/",
                                         data=body, headers=headers)
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(*CREDS), "servicediscovery",
                            "us-east-1").add_auth(req)
    c.request("POST", "/", body=body, headers=dict(req.headers.items()))
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data


def cli_suite(ep):
    print("# aws CLI")
    code, out, err = aws(ep, "CreateHttpNamespace", "--name", "cli.local", "--description", "cli ns")
    check("cli create-http-namespace", code == 0 and "OperationId" in (out or {}), err)
    op_id = (out or {}).get("OperationId", "")
    code, out, err = aws(ep, "GetOperation", "--operation-id", op_id)
    op = (out or {}).get("Operation", {})
    check("cli get-operation SUCCESS", code == 0 and op.get("Status") == "SUCCESS"
          and op.get("Type") == "CREATE_NAMESPACE", out)
    ns_id = op.get("Targets", {}).get("NAMESPACE", "")
    code, out, err = aws(ep, "GetNamespace", "--id", ns_id)
    ns = (out or {}).get("Namespace", {})
    check("cli get-namespace", code == 0 and ns.get("Name") == "cli.local" and ns.get("Type") == "HTTP"
          and ns.get("Arn", "").endswith(f":namespace/{ns_id}")
          and ns.get("Properties", {}).get("HttpProperties", {}).get("HttpName") == "cli.local", out)
    code, out, err = aws(ep, "GetNamespace", "--id", ns.get("Arn", "x"))
    check("cli get-namespace by ARN", code == 0 and out["Namespace"]["Id"] == ns_id, err)
    expect_cli_error(ep, "cli create-http-namespace duplicate", "NamespaceAlreadyExists",
                     "CreateHttpNamespace", "--name", "cli.local")
    expect_cli_error(ep, "cli get-namespace missing", "NamespaceNotFound", "GetNamespace", "--id", "ns-missing")
    expect_cli_error(ep, "cli get-operation missing", "OperationNotFound", "GetOperation",
                     "--operation-id", "nope")
    code, out, err = aws(ep, "ListNamespaces")
    check("cli list-namespaces", code == 0 and any(n["Id"] == ns_id for n in out.get("Namespaces", [])), out)
    code, out, err = aws(ep, "CreateService", "--name", "backend", "--namespace-id", ns_id,
                         "--health-check-custom-config", "FailureThreshold=1")
    svc = (out or {}).get("Service", {})
    svc_id = svc.get("Id", "")
    check("cli create-service", code == 0 and svc_id.startswith("srv-") and svc.get("NamespaceId") == ns_id
          and "HealthCheckCustomConfig" in svc, out)
    expect_cli_error(ep, "cli create-service duplicate", "ServiceAlreadyExists", "CreateService",
                     "--name", "backend", "--namespace-id", ns_id)
    expect_cli_error(ep, "cli create-service bad name", "InvalidInput", "CreateService",
                     "--name", "bad name!", "--namespace-id", ns_id)
    expect_cli_error(ep, "cli create-service missing namespace", "NamespaceNotFound", "CreateService",
                     "--name", "x", "--namespace-id", "ns-missing")
    code, out, err = aws(ep, "GetService", "--id", svc_id)
    check("cli get-service", code == 0 and out["Service"]["Name"] == "backend", err)
    code, out, err = aws(ep, "ListServices", "--filters", f"Name=NAMESPACE_ID,Values={ns_id},Condition=EQ")
    check("cli list-services filtered", code == 0 and [s["Id"] for s in out["Services"]] == [svc_id], out)
    for i in range(3):
        code, out, err = aws(ep, "RegisterInstance", "--service-id", svc_id, "--instance-id", f"i-{i}",
                             "--attributes", f"AWS_INSTANCE_IPV4=10.0.0.{i + 1},AWS_INSTANCE_PORT=8080,version=v{i % 2 + 1}")
        check(f"cli register-instance i-{i}", code == 0 and "OperationId" in (out or {}), err)
    expect_cli_error(ep, "cli register-instance bad ip", "InvalidInput", "RegisterInstance",
                     "--service-id", svc_id, "--instance-id", "bad", "--attributes", "AWS_INSTANCE_IPV4=999.1.1.1")
    expect_cli_error(ep, "cli register-instance missing service", "ServiceNotFound", "RegisterInstance",
                     "--service-id", "srv-missing", "--instance-id", "x", "--attributes", "a=b")
    code, out, err = aws(ep, "GetInstance", "--service-id", svc_id, "--instance-id", "i-0")
    check("cli get-instance", code == 0 and out["Instance"]["Attributes"]["AWS_INSTANCE_IPV4"] == "10.0.0.1", err)
    expect_cli_error(ep, "cli get-instance missing", "InstanceNotFound", "GetInstance",
                     "--service-id", svc_id, "--instance-id", "nope")
    # The CLI paginates ListInstances itself when given --page-size.
    code, out, err = aws(ep, "ListInstances", "--service-id", svc_id, "--page-size", "1")
    check("cli list-instances paginated", code == 0 and sorted(i["Id"] for i in out["Instances"]) == ["i-0", "i-1", "i-2"], out)
    code, out, err = aws(ep, "ListInstances", "--service-id", svc_id, "--max-items", "2")
    check("cli list-instances max-items", code == 0 and len(out["Instances"]) == 2 and "NextToken" in out, out)
    code, out, err = aws(ep, "DiscoverInstances", "--namespace-name", "cli.local", "--service-name", "backend",
                         "--query-parameters", "version=v1")
    check("cli discover-instances (no data- prefix)", code == 0
          and sorted(i["InstanceId"] for i in out["Instances"]) == ["i-0", "i-2"]
          and all(i["HealthStatus"] == "HEALTHY" for i in out["Instances"]), f"{out} {err[-300:]}")
    rev0 = (out or {}).get("InstancesRevision", 0)
    code, out, err = aws(ep, "DiscoverInstancesRevision", "--namespace-name", "cli.local", "--service-name", "backend")
    check("cli discover-instances-revision", code == 0 and out["InstancesRevision"] == rev0 and rev0 > 0, out)
    expect_cli_error(ep, "cli discover-instances unknown namespace", "NamespaceNotFound", "DiscoverInstances",
                     "--namespace-name", "nope.local", "--service-name", "backend")
    expect_cli_error(ep, "cli discover-instances unknown service", "ServiceNotFound", "DiscoverInstances",
                     "--namespace-name", "cli.local", "--service-name", "nope")
    code, out, err = aws(ep, "UpdateInstanceCustomHealthStatus", "--service-id", svc_id, "--instance-id", "i-1",
                         "--status", "UNHEALTHY")
    check("cli update-instance-custom-health-status", code == 0, err)
    code, out, err = aws(ep, "GetInstancesHealthStatus", "--service-id", svc_id)
    check("cli get-instances-health-status", code == 0 and out["Status"] == {"i-0": "HEALTHY", "i-1": "UNHEALTHY", "i-2": "HEALTHY"}, out)
    code, out, err = aws(ep, "DiscoverInstancesRevision", "--namespace-name", "cli.local", "--service-name", "backend")
    check("cli health change keeps InstancesRevision", code == 0 and out["InstancesRevision"] == rev0, out)
    code, out, err = aws(ep, "DiscoverInstances", "--namespace-name", "cli.local", "--service-name", "backend",
                         "--health-status", "ALL")
    check("cli discover-instances ALL", code == 0 and len(out["Instances"]) == 3, out)
    expect_cli_error(ep, "cli delete-service in use", "ResourceInUse", "DeleteService", "--id", svc_id)
    expect_cli_error(ep, "cli delete-namespace in use", "ResourceInUse", "DeleteNamespace", "--id", ns_id)
    for i in range(3):
        code, out, err = aws(ep, "DeregisterInstance", "--service-id", svc_id, "--instance-id", f"i-{i}")
        check(f"cli deregister-instance i-{i}", code == 0 and "OperationId" in (out or {}), err)
    expect_cli_error(ep, "cli deregister-instance missing", "InstanceNotFound", "DeregisterInstance",
                     "--service-id", svc_id, "--instance-id", "i-0")
    code, out, err = aws(ep, "DiscoverInstancesRevision", "--namespace-name", "cli.local", "--service-name", "backend")
    check("cli deregister moves InstancesRevision", code == 0 and out["InstancesRevision"] > rev0, out)
    code, out, err = aws(ep, "DeleteService", "--id", svc_id)
    check("cli delete-service", code == 0, err)
    expect_cli_error(ep, "cli get-service deleted", "ServiceNotFound", "GetService", "--id", svc_id)
    code, out, err = aws(ep, "DeleteNamespace", "--id", ns_id)
    check("cli delete-namespace", code == 0 and "OperationId" in (out or {}), err)
    expect_cli_error(ep, "cli delete-namespace again", "NamespaceNotFound", "DeleteNamespace", "--id", ns_id)


def boto_suite(ep):
    print("# boto3")
    c = Tracked(boto(ep))
    E = c.exceptions
    ns_ids = []
    for i in range(5):
        r = c.create_http_namespace(Name=f"page{i}.local", CreatorRequestId=f"req-{i}")
        op = c.get_operation(OperationId=r["OperationId"])["Operation"]
        ns_ids.append(op["Targets"]["NAMESPACE"])
    check("boto create 5 namespaces", len(set(ns_ids)) == 5)
    again = c.create_http_namespace(Name="page0.local", CreatorRequestId="req-0")
    first = c.get_operation(OperationId=again["OperationId"])["Operation"]["Targets"]["NAMESPACE"]
    check("boto CreatorRequestId replay is idempotent", first == ns_ids[0])
    try:
        c.create_http_namespace(Name="other.local", CreatorRequestId="req-0")
        check("boto DuplicateRequest", False, "no error")
    except E.DuplicateRequest as e:
        check("boto DuplicateRequest", "DuplicateOperationId" in e.response)
    try:
        c.create_http_namespace(Name="page1.local")
        check("boto NamespaceAlreadyExists", False, "no error")
    except E.NamespaceAlreadyExists as e:
        check("boto NamespaceAlreadyExists", e.response.get("NamespaceId") == ns_ids[1], e.response)
    expect_boto_error("boto InvalidInput arn: name", E.InvalidInput, c.create_http_namespace, Name="arn:x")
    pages = list(c.get_paginator("list_namespaces").paginate(PaginationConfig={"PageSize": 2}))
    names = [n["Name"] for p in pages for n in p["Namespaces"]]
    check("boto list_namespaces paginator", len(pages) >= 3 and sorted(n for n in names if n.startswith("page")) ==
          [f"page{i}.local" for i in range(5)], [len(p["Namespaces"]) for p in pages])
    r = c.list_namespaces(Filters=[{"Name": "NAME", "Values": ["page3"], "Condition": "BEGINS_WITH"}])
    check("boto list_namespaces NAME BEGINS_WITH", [n["Name"] for n in r["Namespaces"]] == ["page3.local"], r["Namespaces"])
    r = c.list_namespaces(Filters=[{"Name": "TYPE", "Values": ["DNS_PUBLIC"], "Condition": "EQ"}])
    check("boto list_namespaces TYPE filter", r["Namespaces"] == [])
    expect_boto_error("boto list_namespaces bad filter", E.InvalidInput, c.list_namespaces,
                      Filters=[{"Name": "NAMESPACE_ID", "Values": ["x"]}])
    ns = ns_ids[0]
    got = c.get_namespace(Id=ns)["Namespace"]
    check("boto get_namespace CreateDate is a datetime", hasattr(got["CreateDate"], "year") and got["ServiceCount"] == 0)
    svc_ids = []
    for i in range(4):
        s = c.create_service(Name=f"svc{i}", NamespaceId=ns, Description=f"service {i}",
                             HealthCheckCustomConfig={}, Tags=[{"Key": "team", "Value": "core"}])["Service"]
        svc_ids.append(s["Id"])
    check("boto create_service", all(s.startswith("srv-") for s in svc_ids))
    check("boto get_namespace ServiceCount", c.get_namespace(Id=ns)["Namespace"]["ServiceCount"] == 4)
    expect_boto_error("boto ServiceAlreadyExists", E.ServiceAlreadyExists, c.create_service, Name="svc0", NamespaceId=ns)
    expect_boto_error("boto create_service HealthCheckConfig rejected", E.InvalidInput, c.create_service,
                      Name="hc", NamespaceId=ns, HealthCheckConfig={"Type": "HTTP", "ResourcePath": "/"})
    expect_boto_error("boto create_service both health configs", E.InvalidInput, c.create_service,
                      Name="hc", NamespaceId=ns, HealthCheckCustomConfig={}, HealthCheckConfig={"Type": "TCP"})
    expect_boto_error("boto create_service DnsConfig rejected", E.InvalidInput, c.create_service,
                      Name="dns", NamespaceId=ns, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}]})
    pages = list(c.get_paginator("list_services").paginate(
        Filters=[{"Name": "NAMESPACE_ID", "Values": [ns], "Condition": "EQ"}], PaginationConfig={"PageSize": 3}))
    check("boto list_services paginator", len(pages) == 2 and sorted(s["Id"] for p in pages for s in p["Services"]) == sorted(svc_ids))
    r = c.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_ids[1], ns_ids[2]], "Condition": "IN"}])
    check("boto list_services IN filter", r["Services"] == [])
    svc = svc_ids[0]
    got = c.get_service(Id=svc)["Service"]
    check("boto get_service", got["Name"] == "svc0" and got["Description"] == "service 0"
          and got["NamespaceId"] == ns and got["Type"] == "HTTP")
    for i in range(5):
        attrs = {"AWS_INSTANCE_IPV4": f"10.1.0.{i + 1}", "AWS_INSTANCE_PORT": "9000", "version": "v2" if i < 2 else "v1"}
        if i == 4:
            attrs["AWS_INIT_HEALTH_STATUS"] = "UNHEALTHY"
        c.register_instance(ServiceId=svc, InstanceId=f"inst-{i}", Attributes=attrs)
    check("boto get_service InstanceCount", c.get_service(Id=svc)["Service"]["InstanceCount"] == 5)
    pages = list(c.get_paginator("list_instances").paginate(ServiceId=svc, PaginationConfig={"PageSize": 2}))
    check("boto list_instances paginator", len(pages) == 3 and [i["Id"] for p in pages for i in p["Instances"]] ==
          [f"inst-{i}" for i in range(5)])
    r1 = c.list_instances(ServiceId=svc, MaxResults=3)
    r2 = c.list_instances(ServiceId=svc, MaxResults=3, NextToken=r1["NextToken"])
    check("boto list_instances NextToken", [i["Id"] for i in r1["Instances"] + r2["Instances"]] ==
          [f"inst-{i}" for i in range(5)] and "NextToken" not in r2)
    r = c.get_instance(ServiceId=svc, InstanceId="inst-0")
    check("boto get_instance", r["Instance"]["Attributes"]["version"] == "v2" and r["ResourceOwner"] == "000000000000")
    expect_boto_error("boto get_instance missing", E.InstanceNotFound, c.get_instance, ServiceId=svc, InstanceId="nope")
    expect_boto_error("boto get_instance missing service", E.ServiceNotFound, c.get_instance, ServiceId="srv-nope", InstanceId="x")
    expect_boto_error("boto register bad instance id", E.InvalidInput, c.register_instance, ServiceId=svc,
                      InstanceId="bad id!", Attributes={})
    expect_boto_error("boto register bad port", E.InvalidInput, c.register_instance, ServiceId=svc,
                      InstanceId="p", Attributes={"AWS_INSTANCE_PORT": "70000"})
    expect_boto_error("boto register bad init health", E.InvalidInput, c.register_instance, ServiceId=svc,
                      InstanceId="p", Attributes={"AWS_INIT_HEALTH_STATUS": "MAYBE"})
    expect_boto_error("boto register too many attributes", E.InvalidInput, c.register_instance, ServiceId=svc,
                      InstanceId="p", Attributes={f"k{i}": "v" for i in range(31)})
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0")
    check("boto discover_instances default HEALTHY", sorted(i["InstanceId"] for i in r["Instances"]) ==
          [f"inst-{i}" for i in range(4)], r["Instances"])
    rev = r["InstancesRevision"]
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0", QueryParameters={"version": "v2"})
    check("boto discover_instances QueryParameters", sorted(i["InstanceId"] for i in r["Instances"]) == ["inst-0", "inst-1"])
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0", OptionalParameters={"version": "v9"},
                             HealthStatus="ALL", MaxResults=10)
    check("boto discover_instances OptionalParameters ignored when unmatched", len(r["Instances"]) == 5)
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0", HealthStatus="UNHEALTHY")
    check("boto discover_instances UNHEALTHY", [i["InstanceId"] for i in r["Instances"]] == ["inst-4"]
          and r["Instances"][0]["HealthStatus"] == "UNHEALTHY")
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0", MaxResults=2)
    check("boto discover_instances MaxResults", len(r["Instances"]) == 2)
    expect_boto_error("boto discover_instances NamespaceNotFound", E.NamespaceNotFound, c.discover_instances,
                      NamespaceName="missing.local", ServiceName="svc0")
    expect_boto_error("boto discover_instances_revision ServiceNotFound", E.ServiceNotFound,
                      c.discover_instances_revision, NamespaceName="page0.local", ServiceName="missing")
    check("boto discover_instances_revision", c.discover_instances_revision(
        NamespaceName="page0.local", ServiceName="svc0")["InstancesRevision"] == rev)
    for i in range(4):
        c.update_instance_custom_health_status(ServiceId=svc, InstanceId=f"inst-{i}", Status="UNHEALTHY")
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="svc0", HealthStatus="HEALTHY_OR_ELSE_ALL")
    check("boto HEALTHY_OR_ELSE_ALL fails open", len(r["Instances"]) == 5)
    check("boto health changes keep InstancesRevision", r["InstancesRevision"] == rev)
    c.update_instance_custom_health_status(ServiceId=svc, InstanceId="inst-0", Status="HEALTHY")
    r = c.get_instances_health_status(ServiceId=svc, Instances=["inst-0", "inst-1"])
    check("boto get_instances_health_status", r["Status"] == {"inst-0": "HEALTHY", "inst-1": "UNHEALTHY"}, r["Status"])
    r1 = c.get_instances_health_status(ServiceId=svc, MaxResults=3)
    r2 = c.get_instances_health_status(ServiceId=svc, MaxResults=3, NextToken=r1["NextToken"])
    check("boto get_instances_health_status pagination", len(r1["Status"]) == 3 and len(r2["Status"]) == 2
          and "NextToken" not in r2)
    expect_boto_error("boto get_instances_health_status unknown id", E.InstanceNotFound,
                      c.get_instances_health_status, ServiceId=svc, Instances=["nope"])
    expect_boto_error("boto update health bad status", E.InvalidInput,
                      c.update_instance_custom_health_status, ServiceId=svc, InstanceId="inst-0", Status="MAYBE")
    plain = c.create_service(Name="plain", NamespaceId=ns)["Service"]["Id"]
    c.register_instance(ServiceId=plain, InstanceId="p-0", Attributes={"AWS_INSTANCE_IPV4": "10.2.0.1"})
    expect_boto_error("boto CustomHealthNotFound", E.CustomHealthNotFound, c.update_instance_custom_health_status,
                      ServiceId=plain, InstanceId="p-0", Status="HEALTHY")
    check("boto health without custom config is UNKNOWN",
          c.get_instances_health_status(ServiceId=plain)["Status"] == {"p-0": "UNKNOWN"})
    r = c.discover_instances(NamespaceName="page0.local", ServiceName="plain", HealthStatus="UNHEALTHY")
    check("boto HealthStatus ignored without health checks", [i["HealthStatus"] for i in r["Instances"]] == ["UNKNOWN"])
    expect_boto_error("boto register AWS_INIT_HEALTH_STATUS without custom config", E.InvalidInput,
                      c.register_instance, ServiceId=plain, InstanceId="p-1",
                      Attributes={"AWS_INIT_HEALTH_STATUS": "HEALTHY"})
    expect_boto_error("boto delete_service ResourceInUse", E.ResourceInUse, c.delete_service, Id=plain)
    expect_boto_error("boto delete_namespace ResourceInUse", E.ResourceInUse, c.delete_namespace, Id=ns)
    r = c.deregister_instance(ServiceId=plain, InstanceId="p-0")
    op = c.get_operation(OperationId=r["OperationId"])["Operation"]
    check("boto deregister operation", op["Type"] == "DEREGISTER_INSTANCE" and op["Status"] == "SUCCESS"
          and op["Targets"]["INSTANCE"] == "p-0")
    c.delete_service(Id=plain)
    expect_boto_error("boto deregister missing service", E.ServiceNotFound, c.deregister_instance,
                      ServiceId=plain, InstanceId="p-0")
    for i in range(5):
        c.deregister_instance(ServiceId=svc, InstanceId=f"inst-{i}")
    for s in svc_ids:
        c.delete_service(Id=s)
    for n in ns_ids:
        c.delete_namespace(Id=n)
    expect_boto_error("boto get_operation missing", E.OperationNotFound, c.get_operation, OperationId="missing")
    check("boto cleanup", not [n for n in c.list_namespaces()["Namespaces"] if n["Name"].startswith("page")])


def raw_suite(ep):
    print("# raw JSON 1.1")
    status, body = raw(ep, "Route53AutoNaming_v20170314.GetNamespace", b"{not json")
    check("raw malformed JSON", status == 400 and body.get("__type") == "SerializationException", body)
    status, body = raw(ep, "Route53AutoNaming_v20170314.Frobnicate", b"{}")
    check("raw unknown operation", status == 400 and body.get("__type") == "UnknownOperationException", body)
    status, body = raw(ep, "Route53AutoNaming_v20170314.GetNamespace", b"{}")
    check("raw missing required member", status == 400 and body.get("__type") == "InvalidInput"
          and "Message" in body, body)
    status, body = raw(ep, "Route53AutoNaming_v20170314.GetNamespace", b'{"Id": 5}')
    check("raw wrong type", status == 400 and body.get("__type") == "InvalidInput", body)
    status, body = raw(ep, "Route53AutoNaming_v20170314.ListNamespaces", b"")
    check("raw empty body", status == 200 and "Namespaces" in body, body)
    status, body = raw(ep, "Route53AutoNaming_v20170314.ListNamespaces", b'{"NextToken": "!!!"}')
    check("raw bad NextToken", status == 400 and body.get("__type") == "InvalidInput", body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--credentials", required=True, help="ACCESS_KEY_ID:SECRET")
    a = ap.parse_args()
    CREDS[:] = a.credentials.split(":", 1)
    for suite in (cli_suite, boto_suite, raw_suite):
        try:
            suite(a.endpoint)
        except Exception:  # noqa: BLE001
            check(f"{suite.__name__} crashed", False, traceback.format_exc())
    for op in ALL_OPS:
        check(f"coverage cli {op}", op in COVERED_CLI)
        check(f"coverage boto3 {op}", op in COVERED_BOTO)
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
