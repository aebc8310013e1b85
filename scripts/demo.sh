#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's demo, the whole story on one machine: a real Debian 12 guest (built from
# Debian packages by tests/guest/build-guest.sh, cached) runs as a powered-on VM in the
# built-in vSphere double; ferry inspects it before copying (virt-v2v-inspector), copies it
# warm (two precopy rounds, the guest writing files between them), cuts over (shutdown,
# final round, verification), converts it with virt-v2v-in-place through a copy-on-write
# overlay, and the converted disk boots under qemu on virtio.  Then a summary.
#
# Everything runs on 127.0.0.1.  The processes are stopped at the end; the work directory
# (plan, state, results, manifests, the converted disk) is kept and named in the summary.
# Root is needed (the guest build, as for make check).  Under TCG (no usable KVM) the
# inspection and the conversion take minutes each.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/bin:/bin:/usr/sbin:/sbin:$PATH
ferry=$top/orchestrator/ferry
progress=${FERRY_PROGRESS:-auto}

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
pids=()
cleanup ()
{
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  rm -f "$work"/*.tmp "$work/next.img" "$work/current.img"
}
trap cleanup EXIT
step () { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run () { printf '$ %s\n' "$*"; "$@"; }
control () { curl -sS --fail-with-body -X "$1" "$CONTROL$2" "${@:3}"; }
fail () { echo "demo: $*" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=../tests/integration/guest-functions.sh
source "$top/tests/integration/guest-functions.sh"
took () { printf '(%d s)\n' $((SECONDS - $1)); }
demo_start=$SECONDS

step "The guest: a bootable Debian 12 disk built from Debian packages (cached after the first build)"
t=$SECONDS
rc=0
"$top/tests/guest/build-guest.sh" "$work/guest.img" >"$work/build.log" 2>&1 || rc=$?
if [ $rc != 0 ]; then
  tail -5 "$work/build.log" >&2
  echo "demo: the guest could not be built (root and debootstrap are needed)" >&2
  exit 1
fi
# The guest powers itself off after its boot marker, so that the boot check ends by itself.
guest_set_poweroff "$work/guest.img"
echo "$work/guest.img: $(qemu-img info --output=json "$work/guest.img" |
  jq -r '"\(."virtual-size" / 1048576) MiB virtual, \(."actual-size" / 1048576 | floor) MiB allocated"'),"
echo "  an initramfs without virtio (like a VMware guest's), open-vm-tools installed"
took $t

step "Start the vSphere double (vcsim + CBT, snapshots, /folder) with the guest as a running VM"
"$top/tests/doubles/vsphere/vsphere-double" -dir "$work/double" >"$work/double.out" 2>"$work/double.err" &
pids+=($!)
until grep -q '^READY' "$work/double.out" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/double.err"; exit 1; }
  sleep 0.05
done
# shellcheck source=/dev/null
source <(grep -E '^[A-Z_0-9]+=' "$work/double.out")
echo "vCenter double at https://$SERVER/sdk"
control POST "/vms?name=guestlab&disks=1G&power=on&cbt=1&cpus=2&memory=1024" |
  jq -c '{moref, name, powerState, disks: [.disks[] | {key, fileName, capacity}]}'
control PUT "/vms/guestlab/disks/2000/data?offset=0&path=$(jq -rn --arg p "$work/guest.img" '$p|@uri')" -o /dev/null
cp --sparse=always "$work/guest.img" "$work/current.img"

# guest_writes NAME TEXT: the running guest writes /root/NAME (guest_writes_file); a
# failure inside stops the demo.
guest_writes ()
{
  local n
  n=$(set -e; guest_writes_file "$work" guestlab "$1" "$2")
  echo "the guest wrote /root/$1: $n blocks of 64 KiB changed on its disk"
}

step "The PVC target, the provider Secret (Forklift's layout) and the plan"
mkdir -p "$work/pvc/guestlab-disk0" "$work/secret"
printf user >"$work/secret/user"
printf pass >"$work/secret/password"
cp "$CACERT" "$work/secret/cacert"
jq -n --arg url "https://$SERVER/sdk" --arg work "$work" --arg ds "$DATASTORE" '{
  name: "demo", source: { type: "vsphere", url: $url, secret: ($work + "/secret") },
  warm: true, precopyIntervalSeconds: 3600, stateDir: ($work + "/state"),
  storageMap: [ { source: { name: $ds },
                  destination: { kind: "filesystem", path: ($work + "/pvc/{vm}-disk{index}") } } ],
  vms: [ { name: "guestlab" } ] }' | tee "$work/plan.json"
run "$ferry" validate "$work/plan.json"

step "Precopy round 1, after the preflight: virt-v2v-inspector reads the guest at a snapshot (no copy)"
t=$SECONDS
run "$ferry" precopy "$work/plan.json" --progress="$progress"
took $t

step "The guest keeps working: it writes a file"
guest_writes round1 "written between round 1 and round 2"

step "Precopy round 2: only the blocks changed since round 1 are fetched"
t=$SECONDS
run "$ferry" precopy "$work/plan.json" --progress="$progress"
took $t
guest_writes round2 "written just before the cutover"

step "Cutover: shut the VM down, final round, verify, convert with virt-v2v-in-place (overlay, then commit)"
t=$SECONDS
run "$ferry" cutover "$work/plan.json" --progress="$progress"
took $t

step "Boot check: the converted disk under qemu (TCG) on virtio, to the guest's boot marker"
target=$work/pvc/guestlab-disk0/disk.img
t=$SECONDS
boot_rc=$(guest_boot "$work/boot.log" "$target")
boot_seconds=$((SECONDS - t))
marker=$(grep -a -m1 'GUESTLAB-BOOT-OK' "$work/boot.log" | tr -d '\r' || true)
echo "${marker:-no boot marker}"
echo "qemu exit $boot_rc after $boot_seconds s"

step "Summary"
results=$work/state/results.json
jq -r --arg boot "$boot_rc" --arg marker "$marker" --arg secs "$boot_seconds" '
  def mib: if . < 1048576 then (. / 1024 | round | tostring) + " KiB"
           else (. / 1048576 | . * 10 | round / 10 | tostring) + " MiB" end;
  def s: . * 10 | round / 10 | tostring + " s";
  .vms[] |
  "VM \(.name): \(.state) (it was \(.originalPowerState); runStrategy follows it)",
  (.inspection | "  preflight: \(.os.name) \(.os.distro) \(.os.major_version).\(.os.minor_version), \(.os.arch), firmware \(.firmware), root \(.os.root): " +
     (if .convertible then "virt-v2v can convert it" else "NOT convertible: \(.error)" end) +
     "; the inspector read \(.bytesRead | mib) of \(.diskBytes | mib) (\(.bytesFetched | mib) fetched, nothing copied) in \(.seconds | s)"),
  (.rounds[] | "  round \(.round): \(.bytesChanged | mib) changed, \(.bytesFetched | mib) fetched, \(.zeroBytes | mib) known zero, in \(.seconds | s)"),
  "  downtime: predicted \((.predictedFinalRoundSeconds + .shutdownSeconds) | s) (shutdown \(.shutdownSeconds | s) + final round \(.predictedFinalRoundSeconds | s)), actual \((.actualFinalRoundSeconds + .shutdownSeconds) | s) (final round \(.actualFinalRoundSeconds | s)); verification \(.verifySeconds | s) more",
  (.disks[] | "  disk \(.key) -> \(.target)",
     "    digest of what was fetched  \(.digest.source)",
     "    digest of the target        \(.digest.target)  (re-read from storage: " + (if .digest.source == .digest.target then "equal" else "DIFFERENT" end) + ")",
     "    after conversion            \(.digest.afterConversion)  (\(.conversion.changedBlocks) blocks of 64 KiB changed by virt-v2v)"),
  "  conversion: \(.conversion.seconds | s)" + (if .conversion.tcg then " under TCG" else "" end) + ", log \(.conversion.log)",
  "  manifests: \(.manifests) (kubectl apply -f)",
  "  boot check: " + (if $marker != "" and $boot == "0" then "the converted disk booted on virtio to the marker and powered off (qemu exit 0) in \($secs) s" else "FAILED (qemu exit \($boot)); see the serial log" end)
' "$results"
echo "  results: $results"
echo "  the unconverted disk would not boot on virtio: its initramfs has no virtio driver"
echo "  (tests/integration/test-ferry-convert.sh checks that too)"
echo
echo "Files kept in $work (plan, state, results, manifests, disks, boot.log; about 1 GiB"
echo "sparse). Remove them with: rm -rf $work"
echo "The whole demo took $((SECONDS - demo_start)) s.  Next: make check (the tests), make bench."
[ -n "$marker" ] && [ "$boot_rc" = 0 ]
