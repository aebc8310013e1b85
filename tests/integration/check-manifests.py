#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""check-manifests.py SCHEMA_DIR VM.YAML: validate ferry's vm.yaml offline.

Every document of the stream is checked against the published schema of its kind
(../shared/schemas/README.md): a VirtualMachine against the openAPIV3Schema of KubeVirt's
CRD, a PersistentVolumeClaim against Kubernetes' OpenAPI definitions; strictly, so that a
misspelt field fails (additionalProperties: false wherever a schema lists properties).
Then what a schema cannot see: every disk has a volume of the same name, every volume
names a claim of the stream, every interface a network.  Prints the documents as JSON on
stdout for the calling test; exit 1 with the reasons on stderr.
"""
import copy
import json
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


def main():
    schema_dir, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    with open(f"{schema_dir}/kubevirt-virtualmachine.crd.json") as f:
        vm_schema = strict(json.load(f))
    with open(f"{schema_dir}/kubernetes-1.36.swagger.json") as f:
        swagger = swagger_strict(json.load(f))
    pvc_name = next(n for n, d in swagger["definitions"].items()
                    if {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"}
                    in d.get("x-kubernetes-group-version-kind", []))
    pvc_schema = {"$ref": f"#/definitions/{pvc_name}", "definitions": swagger["definitions"]}

    problems = []
    for i, d in enumerate(docs):
        kind = d.get("kind")
        if kind == "VirtualMachine" and d.get("apiVersion") == "kubevirt.io/v1":
            validator = jsonschema.Draft7Validator(vm_schema)
        elif kind == "PersistentVolumeClaim" and d.get("apiVersion") == "v1":
            validator = jsonschema.Draft4Validator(pvc_schema)
        else:
            problems.append(f"document {i}: unexpected {d.get('apiVersion')} {kind}")
            continue
        for e in validator.iter_errors(d):
            problems.append(f"document {i} ({kind}): {'/'.join(map(str, e.absolute_path))}: "
                            f"{e.message}")

    vms = [d for d in docs if d.get("kind") == "VirtualMachine"]
    claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    if len(vms) != 1:
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
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    json.dump(docs, sys.stdout)


main()
