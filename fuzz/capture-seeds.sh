#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Capture the seed corpora of fuzz-soap, fuzz-vsphere and fuzz-cbt from the vSphere double:
# real answers to the calls the provider makes, written as the targets read them.
#
#   fuzz/capture-seeds.sh            (needs `make double`; rewrites fuzz/corpus/{soap,...})
#
# The answers carry fresh ports, uuids and changeIds each time: run it only to refresh
# the committed corpora, not from the tests.
# shellcheck source=../tests/integration/functions.sh
source "$(dirname "$0")/../tests/integration/functions.sh"
set -euo pipefail
requires curl jq

start_double
create_vm seed-vm "disks=8M,4M&cbt=1&power=on" >/dev/null
make_sparse_disk "$tmpdir/d0" 8M 0:2 40:3
place_disk seed-vm 2000 "$tmpdir/d0"

out=$top/fuzz/corpus
mkdir -p "$out"/{soap,vsphere,cbt}
cookies=$tmpdir/cookies
n=0

# soap METHOD THIS_TYPE THIS ARGS: POST one call and print the answer's body.
soap ()
{
  curl -sS --cacert "$CACERT" -b "$cookies" -c "$cookies" -X POST "$URL" \
    -H 'Content-Type: text/xml; charset="utf-8"' -H 'SOAPAction: "urn:vim25/8.0.1.0"' \
    --data-binary "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><$1 \
xmlns=\"urn:vim25\"><_this type=\"$2\">$3</_this>$4</$1></soapenv:Body></soapenv:Envelope>"
}

# keep NAME: save stdin as a fuzz-soap seed and echo it for the scripts below.
keep ()
{
  tee "$out/soap/$1.xml"
}

retrieve ()
{
  local type=$1 ref=$2 paths="" p
  shift 2
  for p in "$@"; do paths+="<pathSet>$p</pathSet>"; done
  soap RetrievePropertiesEx PropertyCollector propertyCollector \
    "<specSet><propSet><type>$type</type>$paths</propSet><objectSet><obj type=\"$type\">$ref</obj><skip>false</skip></objectSet></specSet><options></options>"
}

sc=$(soap RetrieveServiceContent ServiceInstance ServiceInstance "" | keep service-content)
badlogin=$(soap Login SessionManager SessionManager \
  "<userName>user</userName><password>wrong</password>" | keep fault-invalid-login)
vm=$(control GET /vms/seed-vm | jq -r .moref)
notauth=$(soap CreateContainerView ViewManager ViewManager \
  "<container type=\"Folder\">group-d1</container><type>VirtualMachine</type><recursive>true</recursive>" |
  keep fault-not-authenticated)
login=$(soap Login SessionManager SessionManager \
  "<userName>user</userName><password>pass</password>" | keep login)

vm_paths=(name parent config.uuid config.instanceUuid config.changeTrackingEnabled
  config.hardware.device config.hardware.numCPU config.hardware.memoryMB config.firmware
  runtime.host guest.toolsRunningStatus config.guestId runtime.powerState snapshot)
vmprops=$(retrieve VirtualMachine "$vm" "${vm_paths[@]}" | keep vm-properties)
missing=$(retrieve VirtualMachine vm-999999 name | keep fault-no-object)
parent_of ()
{
  sed -n 's:.*<name>parent</name><val[^>]*>\([^<]*\)<.*:\1:p'
}
parent=$(retrieve Folder "$(parent_of <<<"$vmprops")" name parent | keep folder)
dc=$(retrieve Datacenter "$(parent_of <<<"$parent")" name parent | keep datacenter)
root=$(retrieve Folder group-d1 name parent | keep root-folder)

view=$(soap CreateContainerView ViewManager ViewManager \
  "<container type=\"Folder\">group-d1</container><type>VirtualMachine</type><recursive>true</recursive>" |
  keep create-view)
view_ref=$(sed -n 's:.*<returnval[^>]*>\([^<]*\)</returnval>.*:\1:p' <<<"$view")
names=$(soap RetrievePropertiesEx PropertyCollector propertyCollector \
  "<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet></propSet><objectSet><obj type=\"ContainerView\">$view_ref</obj><skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet><options></options>" |
  keep vm-names)
destroy=$(soap DestroyView ContainerView "$view_ref" "" | keep destroy-view)
uuid=$(sed -n 's:.*<name>config.uuid</name><val[^>]*>\([^<]*\)<.*:\1:p' <<<"$vmprops")
byuuid=$(soap FindByUuid SearchIndex SearchIndex \
  "<uuid>$uuid</uuid><vmSearch>true</vmSearch><instanceUuid>false</instanceUuid>" |
  keep find-by-uuid)

task=$(soap CreateSnapshot_Task VirtualMachine "$vm" \
  "<name>ferry-seed</name><description>seed</description><memory>false</memory><quiesce>false</quiesce>" |
  keep create-snapshot)
task_ref=$(sed -n 's:.*<returnval[^>]*>\([^<]*\)</returnval>.*:\1:p' <<<"$task")
timeout=20 wait_for sh -c "curl -sS --cacert '$CACERT' -b '$cookies' -X POST '$URL' \
  -H 'SOAPAction: \"urn:vim25/8.0.1.0\"' --data-binary '<Envelope xmlns=\"http://schemas.xmlsoap.org/soap/envelope/\"><Body><RetrievePropertiesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">propertyCollector</_this><specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet><objectSet><obj type=\"Task\">$task_ref</obj></objectSet></specSet><options/></RetrievePropertiesEx></Body></Envelope>' | grep -q '<state>success</state>'"
taskinfo=$(retrieve Task "$task_ref" info | keep task-success)
snap=$(sed -n 's:.*<result[^>]*>\([^<]*\)</result>.*:\1:p' <<<"$taskinfo")
vmprops2=$(retrieve VirtualMachine "$vm" "${vm_paths[@]}" | keep vm-properties-snapshot)
snapdisks=$(retrieve VirtualMachineSnapshot "$snap" config.hardware.device | keep snapshot-disks)
change_id=$(sed -n 's:.*<changeId>\([^<]*\)</changeId>.*:\1:p' <<<"$snapdisks" | head -n1)

qcda ()
{
  soap QueryChangedDiskAreas VirtualMachine "$vm" \
    "<snapshot type=\"VirtualMachineSnapshot\">$snap</snapshot><deviceKey>2000</deviceKey><startOffset>$1</startOffset><changeId>$2</changeId>"
}
alloc=$(qcda 0 '*' | keep qcda-allocated)
badcid=$(qcda 0 '52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1' | keep fault-qcda-changeid)
power=$(retrieve VirtualMachine "$vm" runtime.powerState | keep power-state)
rmtask=$(soap RemoveSnapshot_Task VirtualMachineSnapshot "$snap" \
  "<removeChildren>false</removeChildren><consolidate>true</consolidate>" | keep remove-snapshot)
rmtask_ref=$(sed -n 's:.*<returnval[^>]*>\([^<]*\)</returnval>.*:\1:p' <<<"$rmtask")
timeout=20 wait_for sh -c "true"
rminfo=$(retrieve Task "$rmtask_ref" info | keep task-remove)
badtask=$(soap CreateSnapshot_Task VirtualMachine vm-999999 \
  "<name>x</name><memory>false</memory><quiesce>false</quiesce>" | keep fault-task)

# fuzz-vsphere: an operation letter, then the answers in the order the provider asks.
sep=$'\n====\n'
script ()
{
  local name=$1 body=$2 a
  shift 2
  body+=$'\n'
  for a in "$@"; do body+=$a$sep; done
  printf '%s' "${body%"$sep"}" >"$out/vsphere/$name"
  n=$((n + 1))
}
script open a "$sc" "$login" "$vmprops" "$snapdisks" "$alloc" "$destroy"
script open-badlogin a "$sc" "$badlogin"
script find-moref b "$vmprops2" "$parent" "$dc" "$root" "$snapdisks" "$alloc"
script find-name c "$missing" "$view" "$names" "$destroy" "$vmprops" "$snapdisks" "$alloc"
script find-uuid d "$byuuid" "$vmprops2" "$parent" "$dc" "$root" "$snapdisks" "$badcid"
script relogin c "$missing" "$notauth" "$login" "$view" "$names" "$destroy" "$vmprops" "$snapdisks"
script qcda e "$alloc"
script create-snapshot f "$task" "$taskinfo"
script remove-snapshot g "$rmtask" "$rminfo"
script enable-cbt h "$task" "$taskinfo"
script power-off i "$badtask"
script shutdown j "$destroy"
script power-state k "$power"

# fuzz-cbt: "CAPACITY CHANGEID", then the windows.
printf '%s\n%s' 8388608 "$alloc" >"$out/cbt/allocated"
printf '%s %s\n%s' 8388608 "$change_id" "$badcid" >"$out/cbt/fault"
echo "captured $(find "$out/soap" -type f | wc -l) answers, $n scripts"

# fuzz-meta and fuzz-vmjson: the plugin's cache metadata after a filled snapshot, and the
# vm.json it wrote, for the VM above (both disks, the first one with data).
mkdir -p "$out"/{meta,vmjson} "$tmpdir/cache"
start_ferry vm=seed-vm snapshot=create cache-dir="$tmpdir/cache" fill=true \
  vm-json="$tmpdir/vm.json"
stop_ferry "$NBDKIT_PID"
for m in $(cd "$tmpdir/cache" && find . -type f ! -name '*.img' ! -name '*.lock' | sort); do
  name=$(basename "$m")
  # Flags byte: 3 = repair both checksums (the seed is valid either way).
  { printf '\003'; cat "$tmpdir/cache/$m"; } >"$out/meta/$name"
done
jq -r '.disks[] | "\(.export)\t\(.label)"' "$tmpdir/vm.json" >"$out/vmjson/plugin-two-disks"
echo >>"$out/vmjson/plugin-two-disks"
cat "$tmpdir/vm.json" >>"$out/vmjson/plugin-two-disks"
cp "$tmpdir/vm.json" "$out/vmjson/plugin-default-export"
echo "captured $(find "$out/meta" -type f | wc -l) metadata files and vm.json"
