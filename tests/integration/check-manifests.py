#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""check-manifests.py [--kube] SCHEMA_DIR FILE: validate ferry's vm.yaml (or with --kube
the stream of ferry kube) offline.

Every document of the stream is checked against the published schema of its kind
(../shared/schemas/README.md): a VirtualMachine against the openAPIV3Schema of KubeVirt's
CRD, the Kubernetes kinds (PersistentVolumeClaim, and with --kube ServiceAccount,
ConfigMap, Job, Pod) against Kubernetes' OpenAPI definitions; strictly, so that a
misspelt field fails (additionalProperties: false wherever a schema lists properties).
Then what a schema cannot see: every disk has a volume of the same name, every volume
names a claim of the stream, every interface a network; names are DNS-1123 labels, unique
per kind.  With --kube also (check_kube): each Job mounts exactly its shard's PVCs at the
paths its shard's plan names, every target PVC is mounted by one Job, and the pods pass
Kubernetes' restricted Pod Security Standard.  Prints the documents as JSON on stdout
for the calling test; exit 1 with the reasons on stderr.
"""
import copy
import json
import re
import sys

import jsonschema
import yaml


def strict(node):
    """CRD schema -> JSON Schema: nullable, int-or-string, closed objects."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "string"}, {"type": "integer"}]
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def swagger_strict(doc):
    doc = copy.deepcopy(doc)
    for name, d in doc["definitions"].items():
        if name.endswith("api.resource.Quantity"):
            d.pop("type", None)
            d["anyOf"] = [{"type": "string"}, {"type": "number"}]
    doc = strict(doc)

    def int_or_string(node):
        if isinstance(node, dict):
            if node.get("format") == "int-or-string":
                node.pop("type", None)
                node.pop("format")
                node["anyOf"] = [{"type": "string"}, {"type": "integer"}]
            for v in node.values():
                int_or_string(v)
        elif isinstance(node, list):
            for v in node:
                int_or_string(v)
    int_or_string(doc)
    return doc


KUBE_KINDS = {("v1", "PersistentVolumeClaim"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"),
              ("batch/v1", "Job"), ("v1", "Pod")}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def swagger_schema(swagger, api, kind):
    group, _, version = api.rpartition("/")
    gvk = {"group": group, "version": version, "kind": kind}
    name = next(n for n, d in swagger["definitions"].items()
                if gvk in d.get("x-kubernetes-group-version-kind", []))
    return {"$ref": f"#/definitions/{name}", "definitions": swagger["definitions"]}


def check_restricted(where, pod, problems):
    """Kubernetes' restricted Pod Security Standard (the checks that apply here)."""
    psc = pod.get("securityContext", {})
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(k):
            problems.append(f"{where}: {k}")
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
               "persistentVolumeClaim", "projected", "secret"}
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= allowed:
            problems.append(f"{where}: volume {v['name']}: {sorted(kinds - allowed)} not allowed")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.get("securityContext", {})
        w = f"{where} container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{w}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{w}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{w}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{w}: adds capabilities {caps['add']}")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            problems.append(f"{w}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            problems.append(f"{w}: runs as root (runAsUser unset or 0)")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{w}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{w}: hostPort")
    if psc.get("runAsUser") != 107 or psc.get("runAsGroup") != 107 or psc.get("fsGroup") != 107:
        problems.append(f"{where}: not uid/gid/fsGroup 107: {psc}")


def check_kube(docs, problems):
    """Each Job mounts exactly its shard's PVCs where its shard's plan says."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    pvcs, cms = by_kind.get("PersistentVolumeClaim", {}), by_kind.get("ConfigMap", {})
    targets = {n for n, p in pvcs.items()
               if p["metadata"]["labels"].get("app.kubernetes.io/component") == "target"}
    mounted = {}
    for name, job in by_kind.get("Job", {}).items():
        shard = job["metadata"]["labels"].get("ferry.io/shard")
        pod = job["spec"]["template"]["spec"]
        check_restricted(f"Job {name}", pod, problems)
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"Job {name}: the service account token is mounted")
        if pod.get("serviceAccountName") not in by_kind.get("ServiceAccount", {}):
            problems.append(f"Job {name}: no ServiceAccount {pod.get('serviceAccountName')}")
        (c,) = pod["containers"]
        if c.get("args") or c.get("command"):
            problems.append(f"Job {name}: not the image's entrypoint without arguments")
        paths = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        paths.update({m["name"]: m["devicePath"] for m in c.get("volumeDevices", [])})
        claims, plan = {}, None
        for v in pod["volumes"]:
            if v["name"] not in paths:
                problems.append(f"Job {name}: volume {v['name']} is not mounted")
                continue
            if "configMap" in v:
                cm = cms.get(v["configMap"]["name"])
                if cm is None or paths[v["name"]] != "/etc/ferry/plan":
                    problems.append(f"Job {name}: plan ConfigMap missing or not at /etc/ferry/plan")
                else:
                    plan = json.loads(cm["data"]["plan.json"])
                    if cm["metadata"]["labels"].get("ferry.io/shard") != shard:
                        problems.append(f"Job {name}: mounts another shard's plan {cm['metadata']['name']}")
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                claims[claim] = paths[v["name"]]
                mounted.setdefault(claim, []).append(name)
                p = pvcs.get(claim)
                if p is None:
                    problems.append(f"Job {name}: claim {claim} is not in the stream")
                    continue
                if p["metadata"]["labels"].get("ferry.io/shard") != shard:
                    problems.append(f"Job {name} (shard {shard}): mounts {claim} of shard "
                                    f"{p['metadata']['labels'].get('ferry.io/shard')}")
                block = p["spec"]["volumeMode"] == "Block"
                devices = {m["name"] for m in c.get("volumeDevices", [])}
                if block != (v["name"] in devices):
                    problems.append(f"Job {name}: {claim} ({p['spec']['volumeMode']}) mounted as "
                                    f"{'a device' if v['name'] in devices else 'a directory'}")
        if plan is None:
            continue
        want = {n for n in targets if pvcs[n]["metadata"]["labels"].get("ferry.io/shard") == shard}
        state = [n for n in claims if pvcs.get(n, {}).get("metadata", {}).get("labels", {})
                 .get("app.kubernetes.io/component") == "state"]
        if set(claims) - set(state) != want:
            problems.append(f"Job {name}: mounts {sorted(set(claims) - set(state))}, "
                            f"its shard's PVCs are {sorted(want)}")
        if len(state) != 1 or claims[state[0]] != plan["stateDir"]:
            problems.append(f"Job {name}: stateDir {plan['stateDir']} is not its state PVC's mount")
        planned = sorted(t for vm in plan["vms"] for t in vm.get("targets", {}).values())
        if planned != sorted(claims[n] for n in want if n in claims):
            problems.append(f"Job {name}: its plan's targets {planned} are not its mounts")
        if plan["source"]["secret"] not in paths.values():
            problems.append(f"Job {name}: the Secret is not at {plan['source']['secret']}")
        if "storageMap" in plan:
            problems.append(f"Job {name}: the shard's plan keeps a storageMap")
        vms = json.loads(job["metadata"]["annotations"]["ferry.io/vms"])
        if [vm.get("targetName", vm.get("name", vm.get("id"))) for vm in plan["vms"]] != vms:
            problems.append(f"Job {name}: plan VMs {plan['vms']} != annotation {vms}")
    for t in targets if by_kind.get("Job") else []:
        if len(mounted.get(t, [])) != 1:
            problems.append(f"target PVC {t} is mounted by {mounted.get(t, [])}")


def main():
    args = sys.argv[1:]
    kube = args[0] == "--kube"
    if kube:
        args = args[1:]
    schema_dir, path = args
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    with open(f"{schema_dir}/kubevirt-virtualmachine.crd.json") as f:
        vm_schema = strict(json.load(f))
    with open(f"{schema_dir}/kubernetes-1.36.swagger.json") as f:
        swagger = swagger_strict(json.load(f))
    kinds = KUBE_KINDS if kube else {("v1", "PersistentVolumeClaim")}

    problems = []
    names = {}
    for i, d in enumerate(docs):
        kind = d.get("kind")
        if kind == "VirtualMachine" and d.get("apiVersion") == "kubevirt.io/v1":
            validator = jsonschema.Draft7Validator(vm_schema)
        elif (d.get("apiVersion"), kind) in kinds:
            validator = jsonschema.Draft4Validator(swagger_schema(swagger, d["apiVersion"], kind))
        else:
            problems.append(f"document {i}: unexpected {d.get('apiVersion')} {kind}")
            continue
        for e in validator.iter_errors(d):
            problems.append(f"document {i} ({kind}): {'/'.join(map(str, e.absolute_path))}: "
                            f"{e.message}")
        name = d.get("metadata", {}).get("name", "")
        if not DNS_LABEL.match(name):
            problems.append(f"document {i} ({kind}): name {name!r} is not a DNS-1123 label")
        if name in names.setdefault(kind, set()):
            problems.append(f"document {i}: two {kind}s named {name}")
        names[kind].add(name)

    vms = [d for d in docs if d.get("kind") == "VirtualMachine"]
    claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    if len(vms) != 1 and not kube:
        problems.append(f"{len(vms)} VirtualMachines in the stream")
    for vm in vms:
        spec = vm["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        networks = {n["name"] for n in spec.get("networks", [])}
        for disk in spec["domain"]["devices"].get("disks", []):
            if disk["name"] not in volumes:
                problems.append(f"disk {disk['name']} has no volume")
        for v in volumes.values():
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim not in claims:
                problems.append(f"volume {v['name']} names claim {claim}, not in the stream")
        for iface in spec["domain"]["devices"].get("interfaces", []):
            if iface["name"] not in networks:
                problems.append(f"interface {iface['name']} has no network")
    if kube:
        check_kube(docs, problems)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    json.dump(docs, sys.stdout)


main()
