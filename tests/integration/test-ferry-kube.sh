#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ferry kube: four VMs on two ESXi hosts and three datastores of the vSphere double, the
# plan split --shard-by=host, datastore and vm.  Every document validates strictly against
# the published schemas (../shared/schemas: Kubernetes 1.36, KubeVirt); check-manifests.py
# --kube checks what a schema cannot see (each Job mounts exactly its shard's PVCs where
# its shard's plan puts the targets, every target PVC in one Job, DNS-1123 unique names,
# Kubernetes' restricted Pod Security Standard, every VM disk a volume and a claim); here:
# the shards hold the right VMs, PVC sizes follow CDI's rule with the storageMap's
# overhead, class and access mode, the stream is deterministic.  Then the host shard runs
# to completion as its pod would: in a mount namespace with its PVCs at the pod's paths,
# and with `podman kube play` of the Job's pod template as a Pod + PVCs when the image
# localhost/ferry:latest exists (else that part is skipped, saying why).
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$(dirname "$0")/functions.sh"
set -euo pipefail
requires jq unshare
requires_schemas
requires_ferry
PASSWORD=kube-s3cret-$$
export PASSWORD
start_double -password "$PASSWORD"

# a, b on host DC0_H0; c, d on DC0_C0_H0.  a on the default datastore, b and c on ds2, d on
# ds3 (block targets).
create_vm a "disks=64M,8M&cbt=1&power=on" >/dev/null
create_vm b "disks=16M&cbt=1&power=off&datastore=ds2" >/dev/null
create_vm c "disks=24M&cbt=1&power=on&host=DC0_C0_H0&datastore=ds2" >/dev/null
create_vm d "disks=8M&cbt=1&power=off&host=DC0_C0_H0&datastore=ds3" >/dev/null
make_sparse_disk "$tmpdir/a0" 64M 0:4 500:3
make_sparse_disk "$tmpdir/b0" 16M 1:2 200:1
place_disk a 2000 "$tmpdir/a0"
place_disk b 2000 "$tmpdir/b0"
write_plan "$tmpdir/plan.json" '.name = "Wave_1" | .maxInFlightPerHost = 2 |
  .vms = [{name: "a"}, {name: "b"}, {name: "c"}, {name: "d"}]'
# c's target has the base name of a's first: its claim gets a suffix.
jq --arg pvc "$tmpdir/pvc" '.vms[2].targets = {"2000": ($pvc + "/elsewhere/a-disk0")} | .storageMap += [
    { source: { name: "ds2" }, destination: { kind: "filesystem", path: ($pvc + "/{vm}-disk{index}"),
      storageClass: "fast", accessMode: "ReadWriteMany", filesystemOverhead: 0.1 } },
    { source: { name: "ds3" }, destination: { volumeMode: "Block", path: "/dev/mapper/{vm}-{index}",
      storageClass: "blk" } } ]' "$tmpdir/plan.json" >"$tmpdir/plan.tmp"
mv "$tmpdir/plan.tmp" "$tmpdir/plan.json"

check_stream ()
{
  /usr/bin/python3 "$top/tests/integration/check-manifests.py" --kube "$schemas" "$1" >"$2" ||
    fail "$1 does not pass check-manifests.py --kube"
}

declare -A want=(
  [host]='[["a","b"],["c","d"]]'
  [datastore]='[["a"],["b","c"],["d"]]'
  [vm]='[["a"],["b"],["c"],["d"]]'
)
for by in host datastore vm; do
  "$ferry" kube "$tmpdir/plan.json" --shard-by=$by --namespace=migration \
    --output="$tmpdir/$by.yaml" 2>"$tmpdir/$by.err" || fail "ferry kube --shard-by=$by: $(cat "$tmpdir/$by.err")"
  check_stream "$tmpdir/$by.yaml" "$tmpdir/$by.json"
  jq -e --argjson want "${want[$by]}" --arg by "$by" '
    [.[] | select(.kind == "Job")] | map(.metadata.annotations) |
    (map(."ferry.io/vms" | fromjson) == $want) and all(."ferry.io/shard-by" == $by)' \
    "$tmpdir/$by.json" >/dev/null ||
    fail "--shard-by=$by: Jobs $(jq -c '[.[] | select(.kind == "Job") | .metadata.annotations]' "$tmpdir/$by.json")"
  jq -e 'all(.[]; .metadata.namespace == "migration" and .metadata.labels."ferry.io/plan" == "wave-1")' \
    "$tmpdir/$by.json" >/dev/null || fail "--shard-by=$by: an object without the namespace or plan label"
  # The same plan and source give the same stream.
  "$ferry" kube "$tmpdir/plan.json" --shard-by=$by --namespace=migration 2>/dev/null >"$tmpdir/again.yaml"
  cmp "$tmpdir/$by.yaml" "$tmpdir/again.yaml" || fail "--shard-by=$by: the stream is not deterministic"
done
# Limits per host hold per pod: said when a host is read by several Jobs.
grep -q 'host .* is read by several Jobs' "$tmpdir/vm.err" || fail "no warning about shared hosts"
! grep -q 'several Jobs' "$tmpdir/host.err" || fail "a warning with --shard-by=host"

# The objects in detail (--shard-by=host).
s=$tmpdir/host.json
pvc_mib () { python3 -c "import math,sys; a=-(-int(sys.argv[1])//2**20)*2**20; print(-(-math.ceil(a/(1-float(sys.argv[2])))//2**20))" "$1" "$2"; }
pvc () { jq -c --arg n "$1" '.[] | select(.kind == "PersistentVolumeClaim" and .metadata.name == $n) | .spec' "$s"; }
expect_pvc ()
{
  local name=$1 filter=$2
  jq -e "$filter" <<<"$(pvc "$name")" >/dev/null || fail "PVC $name: $filter: $(pvc "$name")"
}
expect_pvc a-disk0 ".resources.requests.storage == \"$(pvc_mib $((64 << 20)) 0.055)Mi\" and .volumeMode == \"Filesystem\" and .accessModes == [\"ReadWriteOnce\"] and (has(\"storageClassName\") | not)"
expect_pvc b-disk0 ".resources.requests.storage == \"$(pvc_mib $((16 << 20)) 0.1)Mi\" and .storageClassName == \"fast\" and .accessModes == [\"ReadWriteMany\"]"
expect_pvc d-0 '.resources.requests.storage == "8Mi" and .volumeMode == "Block" and .storageClassName == "blk"'
[ "$(pvc_mib $((16 << 20)) 0.1)" = 18 ] # 16 MiB / 0.9 = 17.8 MiB
jq -e '[.[] | select(.kind == "ServiceAccount")] | length == 1 and .[0].automountServiceAccountToken == false' "$s" >/dev/null ||
  fail "ServiceAccount"
[ "$(jq '[.[] | select(.kind == "Role" or .kind == "RoleBinding" or .kind == "Secret")] | length' "$s")" = 0 ] ||
  fail "the stream grants API access or carries a Secret"
! grep -q "$(cat "$tmpdir/secret/password")" "$tmpdir/host.yaml" || fail "the password is in the stream"
job=$(jq -c '[.[] | select(.kind == "Job")][0]' "$s")
jq -e '.spec.backoffLimit > 0 and (.spec.podFailurePolicy.rules[0] | .action == "FailJob" and .onExitCodes.values == [1, 2]) and
  (.spec.template.spec | .restartPolicy == "Never" and .terminationGracePeriodSeconds >= 60 and
   (.volumes[] | select(.name == "secret") | .secret.secretName == "secret") and
   (.containers[0] | .image == "localhost/ferry:latest" and .terminationMessagePath == "/dev/termination-log" and
    .ports == [{"name": "metrics", "containerPort": 8443, "protocol": "TCP"}] and
    (.resources.requests | has("cpu") and has("memory"))))' <<<"$job" >/dev/null || fail "Job: $job"
"$ferry" kube "$tmpdir/plan.json" --image=registry.example.com/ferry:0.2 --secret=vcenter \
  >"$tmpdir/image.yaml" 2>/dev/null || fail "ferry kube --image --secret"
grep -q '"registry.example.com/ferry:0.2"' "$tmpdir/image.yaml" || fail "--image is not used"
grep -q 'secretName: "vcenter"' "$tmpdir/image.yaml" || fail "--secret is not used"
# Resources and state from the measurements (ferry.pod): a raw copy, and a plan that converts.
jq -e '[.[] | select(.kind == "Job") | .spec.template.spec.containers[0].resources] |
  all(.requests.memory == "256Mi" and .limits.memory == "1024Mi" and .requests.cpu == "1")' "$s" >/dev/null ||
  fail "raw copy resources"
jq '.skipGuestConversion = false' "$tmpdir/plan.json" >"$tmpdir/convert.json"
"$ferry" kube "$tmpdir/convert.json" --output="$tmpdir/convert.yaml" 2>/dev/null || fail "ferry kube (conversion)"
check_stream "$tmpdir/convert.yaml" "$tmpdir/convert.out"
jq -e '([.[] | select(.kind == "Job") | .spec.template.spec.containers[0].resources] |
    all(.requests.memory == "2304Mi" and .limits.memory == "4096Mi")) and
  ([.[] | select(.kind == "PersistentVolumeClaim" and .metadata.labels."app.kubernetes.io/component" == "state") |
    .spec.resources.requests.storage] == ["5120Mi", "5120Mi"]) and
  ([.[] | select(.kind == "VirtualMachine") | .spec.template.spec.domain.devices.disks[].disk.bus] | all(. == "virtio"))' \
  "$tmpdir/convert.out" >/dev/null || fail "a converting plan's Jobs, state PVCs or VMs"
# The VMs: as vm.yaml will be (raw copy: SATA), but Halted until started after cutover.
jq -e '[.[] | select(.kind == "VirtualMachine")] | map([.metadata.name, .spec.runStrategy,
    .metadata.annotations."ferry.io/run-strategy", [.spec.template.spec.volumes[].persistentVolumeClaim.claimName]]) ==
  [["a", "Halted", "Always", ["a-disk0", "a-disk1"]], ["b", "Halted", "Halted", ["b-disk0"]],
   ["c", "Halted", "Always", ["a-disk0-2"]], ["d", "Halted", "Halted", ["d-0"]]]' "$s" >/dev/null ||
  fail "VirtualMachines: $(jq -c '[.[] | select(.kind == "VirtualMachine") | [.metadata.name, .spec.runStrategy]]' "$s")"

# A misspelt field fails the strict schema check (the checker is not blind).
sed 's/terminationMessagePath:/terminationMessagePth:/' "$tmpdir/host.yaml" >"$tmpdir/typo.yaml"
! /usr/bin/python3 "$top/tests/integration/check-manifests.py" --kube "$schemas" "$tmpdir/typo.yaml" \
  >/dev/null 2>"$tmpdir/typo.err" || fail "a misspelt field passes"
grep -q terminationMessagePth "$tmpdir/typo.err" || fail "the typo is not named: $(cat "$tmpdir/typo.err")"

# The host shard of a and b (datastores "ferry ds 1" and ds2) runs as its pod would: its
# plan from its ConfigMap, its PVCs (directories here) at the pod's paths in a private
# mount namespace, nothing else of the plan visible.
jq -r '.[] | select(.kind == "ConfigMap" and (.data."plan.json" | fromjson | [.vms[].name] == ["a", "b"])) |
  .data."plan.json"' "$s" >"$tmpdir/shard.json"
[ -s "$tmpdir/shard.json" ] || fail "no ConfigMap with the plan of a and b"
mapfile -t mounts < <(jq -r '.[] | select(.kind == "Job" and (.metadata.annotations."ferry.io/vms" | fromjson) == ["a", "b"]) |
  .spec.template.spec as $p | $p.containers[0].volumeMounts[] | select(.name != "plan" and .name != "secret") |
  . as $m | ($p.volumes[] | select(.name == $m.name) | .persistentVolumeClaim.claimName) + " " + $m.mountPath' "$s")
[ "${#mounts[@]}" = 4 ] || fail "the Job of a and b mounts ${#mounts[@]} PVCs, not state + 3: ${mounts[*]}"
script="mount -t tmpfs ferry /var/lib"
for m in "${mounts[@]}"; do
  mkdir -p "$tmpdir/pods/${m% *}"
  script+=" && mkdir -p ${m#* } && mount --bind $tmpdir/pods/${m% *} ${m#* }"
done
script+=" && exec \"\$0\" migrate $tmpdir/shard.json --progress=none"
unshare --mount --propagation private sh -c "$script" "$ferry" 2>"$tmpdir/shard.err" ||
  fail "the shard's ferry migrate failed: $(tail -5 "$tmpdir/shard.err")"
for m in "${mounts[@]}"; do [ "${m#* }" != /var/lib/ferry/state ] || state=$tmpdir/pods/${m% *}; done
jq -e '[.vms[] | [.name, .state]] == [["a", "verified"], ["b", "verified"]]' "$state/results.json" >/dev/null ||
  fail "shard results: $(jq -c '[.vms[] | {name, state, error}]' "$state/results.json")"
disk_view a 2000 "$tmpdir/a0.now"
disk_view b 2000 "$tmpdir/b0.now"
cmp "$tmpdir/a0.now" "$tmpdir/pods/a-disk0/disk.img" || fail "a disk 2000 differs from its PVC"
cmp "$tmpdir/b0.now" "$tmpdir/pods/b-disk0/disk.img" || fail "b disk 2000 (ds2) differs from its PVC"
[ "$(vm_json a | jq '.snapshots | length')" = 0 ] || fail "a snapshot was left"
[ "$(find "$tmpdir/pvc" -name disk.img 2>/dev/null | wc -l)" = 0 ] || fail "the shard wrote outside its PVCs"

# Bad storageMap PVC fields: every one named, nothing written.
jq '.storageMap[1].destination += {volumeMode: "Block", accessMode: "ReadWriteSometimes",
    filesystemOverhead: 1.5, storageClas: "x"}' "$tmpdir/plan.json" >"$tmpdir/bad.json"
! "$ferry" kube "$tmpdir/bad.json" >"$tmpdir/bad.out" 2>"$tmpdir/bad.err" || fail "a bad storageMap passes"
for m in 'volumeMode "Block" contradicts kind "filesystem"' 'accessMode "ReadWriteSometimes"' \
  'filesystemOverhead must be a fraction' 'unknown key "storageClas"'; do
  grep -qF "$m" "$tmpdir/bad.err" || fail "no error '$m': $(cat "$tmpdir/bad.err")"
done
[ ! -s "$tmpdir/bad.out" ] || fail "ferry kube wrote a stream for a bad plan"

# The Job's pod template as a Pod for podman kube play, with its ConfigMap and PVCs (podman
# has no fsGroup and no Secret object here: uid/gid annotations, the Secret's directory).
# Checked by hand with podman 4.3.1 and the debootstrap base image in place of ferry's: the
# pod runs as 107:107, the PVCs are its to write, the plan and the Secret are readable.
/usr/bin/python3 - "$s" "$tmpdir" >"$tmpdir/pod.yaml" <<'PY'
import json, sys, yaml
docs, tmp = json.load(open(sys.argv[1])), sys.argv[2]
job = next(d for d in docs if d["kind"] == "Job" and json.loads(d["metadata"]["annotations"]["ferry.io/vms"]) == ["a", "b"])
spec = job["spec"]["template"]["spec"]
claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
cm = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
out = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm]
for d in docs:
    if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] in claims:
        d["metadata"].pop("namespace", None)
        # podman has no fsGroup: the volumes are made for uid/gid 107 instead.
        d["metadata"]["annotations"] = dict(d["metadata"].get("annotations", {}),
                                            **{"volume.podman.io/uid": "107", "volume.podman.io/gid": "107"})
        d["spec"].pop("storageClassName", None)
        out.append(d)
for v in spec["volumes"]:  # the Secret: the test's directory (podman has no Secret object here)
    if "secret" in v:
        v.pop("secret")
        v["hostPath"] = {"path": f"{tmp}/secret", "type": "Directory"}
# podman kube play maps a containerPort, which host networking refuses ("PortMappings can
# only be used with Bridge or slirp4netns networking"); on the host network 8443 is open.
for c in spec["containers"]:
    c.pop("ports", None)
out[0]["metadata"].pop("namespace", None)
out.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": job["metadata"]["name"], "labels": job["spec"]["template"]["metadata"]["labels"]}, "spec": spec})
yaml.safe_dump_all(out, sys.stdout)
PY
check_stream "$tmpdir/pod.yaml" "$tmpdir/pod.json"

# podman kube play of that Pod runs the shard to completion.
if ! why=$(bash -c 'source "$1/functions.sh" && source "$1/container-functions.sh" && requires_image' \
  requires_image "$top/tests/integration" 2>&1); then
  why=${why##*SKIP: }
  echo "$0: SKIP (podman kube play part): ${why%%$'\n'*}"
else
  export CONTAINERS_CONF=$top/container/containers.conf
  pod=$(jq -r '.[] | select(.kind == "Job" and (.metadata.annotations."ferry.io/vms" | fromjson) == ["a", "b"]) | .metadata.name' "$s")
  podman volume rm -f "${mounts[@]% *}" >/dev/null 2>&1 || true
  cleanup_fn "podman volume rm -f ${mounts[*]% *} >/dev/null 2>&1"
  cleanup_fn "podman kube down '$tmpdir/pod.yaml' >/dev/null 2>&1"
  podman kube play --network=host "$tmpdir/pod.yaml" >"$tmpdir/play.out" 2>&1 ||
    fail "podman kube play: $(cat "$tmpdir/play.out")"
  rc=$(timeout 300 podman wait "$pod-ferry") || fail "podman wait: the pod did not end"
  podman logs "$pod-ferry" >"$tmpdir/pod.log" 2>&1 || true
  [ "$rc" = 0 ] || fail "the pod's ferry exited $rc: $(tail -5 "$tmpdir/pod.log")"
  for v in a-disk0:a0 b-disk0:b0; do
    mp=$(podman volume inspect --format '{{.Mountpoint}}' "${v%:*}")
    cmp "$tmpdir/${v#*:}.now" "$mp/disk.img" || fail "podman: ${v%:*} differs from the source"
  done
  [ "$(vm_json a | jq '.snapshots | length')" = 0 ] || fail "podman: a snapshot was left"
fi
echo "$0: OK"
