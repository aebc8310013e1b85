#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Cross-check the vSphere double with an independent client (pyvmomi).
#
# usage: double_pyvmomi.py  (environment: SERVER CACERT CONTROL VMNAME
#                            and the expected values EXPECT_*; see
#                            test-double-pyvmomi.sh)
import json
import os
import ssl
import sys
import time
import urllib.request

from pyVim.connect import SmartConnect, Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

KB64 = 65536


def fail(msg):
    print("double_pyvmomi.py: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def control(method, path, data=None):
    req = urllib.request.Request(os.environ["CONTROL"] + path, data=data, method=method)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def disks_of(config):
    return [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def qcda_all(vm, snap, key, change_id, capacity):
    """Loop over the windows like a correct client; return (areas, calls)."""
    out, calls, start = [], 0, 0
    while start < capacity:
        r = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=start, changeId=change_id)
        calls += 1
        check(r.startOffset == start, "window starts at %d, asked %d" % (r.startOffset, start))
        check(r.length > 0, "empty window at %d" % start)
        for a in r.changedArea or []:
            check(start <= a.start and a.start + a.length <= start + r.length, "area outside its window")
            if out and out[-1][0] + out[-1][1] == a.start:
                out[-1] = (out[-1][0], out[-1][1] + a.length)
            else:
                out.append((a.start, a.length))
        start = r.startOffset + r.length
    return out, calls


def main():
    host, port = os.environ["SERVER"].rsplit(":", 1)
    name = os.environ["VMNAME"]
    ctx = ssl.create_default_context(cafile=os.environ["CACERT"])
    check(ctx.verify_mode == ssl.CERT_REQUIRED, "TLS must be verified")

    try:
        SmartConnect(host=host, port=int(port), user="user", pwd="wrong", sslContext=ctx)
        fail("login with a wrong password succeeded")
    except vim.fault.InvalidLogin as e:
        check("incorrect user name or password" in e.msg, "InvalidLogin message: %r" % e.msg)

    si = SmartConnect(host=host, port=int(port), user="user", pwd="pass", sslContext=ctx)
    content = si.RetrieveContent()
    info = control("GET", "/vms/" + urllib.request.quote(name))

    # Find the VM by name and by BIOS uuid.
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    by_name = [v for v in view.view if v.name == name]
    check(len(by_name) == 1, "VM %r not found by name" % name)
    vm = by_name[0]
    check(vm._moId == info["moref"], "moref %s != %s" % (vm._moId, info["moref"]))
    found = content.searchIndex.FindByUuid(None, info["uuid"], True, False)
    check(found is not None and found._moId == vm._moId, "FindByUuid(bios) gave %r" % found)
    found = content.searchIndex.FindByUuid(None, info["instanceUuid"], True, True)
    check(found is not None and found._moId == vm._moId, "FindByUuid(instance) gave %r" % found)
    check(vm.config.uuid != vm.config.instanceUuid, "uuid == instanceUuid")
    check(vm.config.changeTrackingEnabled is True, "CBT not enabled")
    check(vm.config.firmware == "efi", "firmware %r" % vm.config.firmware)
    check(vm.runtime.powerState == "poweredOn", "power state %r" % vm.runtime.powerState)
    nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualVmxnet3)]
    check(len(nics) == 1 and nics[0].macAddress, "no vmxnet3 NIC with a MAC")

    disks = disks_of(vm.config)
    check([d.key for d in disks] == [2000, 2001], "disk keys %r" % [d.key for d in disks])
    d0 = disks[0]
    exp = info["disks"][0]
    check(d0.deviceInfo.label == "Hard disk 1", "label %r" % d0.deviceInfo.label)
    check(d0.backing.fileName == "[ferry ds 1] %s/%s.vmdk" % (name, name), "fileName %r" % d0.backing.fileName)
    check(d0.capacityInBytes == exp["capacity"] == 64 << 20, "capacity %r" % d0.capacityInBytes)
    check(d0.capacityInKB == exp["capacity"] // 1024, "capacityInKB %r" % d0.capacityInKB)
    check(d0.backing.uuid == exp["uuid"] and d0.backing.uuid.startswith("6000C29"), "uuid %r" % d0.backing.uuid)
    check(d0.backing.changeId == exp["changeId"], "changeId %r != %r" % (d0.backing.changeId, exp["changeId"]))
    check(d0.diskObjectId, "no diskObjectId")
    cap = d0.capacityInBytes

    # Snapshot 1: the baseline.  The shell script wrote blocks 0, 5 and 640.
    t = vm.CreateSnapshot_Task(name="precopy-1", memory=False, quiesce=False)
    WaitForTask(t)
    snap1 = t.info.result
    check(isinstance(snap1, vim.vm.Snapshot), "snapshot result %r" % snap1)
    sd = disks_of(snap1.config)[0]
    cid1 = sd.backing.changeId
    check(cid1 and cid1 != d0.backing.changeId, "snapshot changeId %r did not advance" % cid1)
    check(sd.backing.fileName == "[ferry ds 1] %s/%s.vmdk" % (name, name), "snap fileName %r" % sd.backing.fileName)
    live = disks_of(vm.config)[0]
    check(live.backing.fileName == "[ferry ds 1] %s/%s-000001.vmdk" % (name, name),
          "live fileName %r" % live.backing.fileName)

    r = vm.QueryChangedDiskAreas(snapshot=snap1, deviceKey=2000, startOffset=0, changeId="*")
    got = [(a.start, a.length) for a in r.changedArea]
    check(r.startOffset == 0 and r.length == 16 << 20, "window [%d, +%d)" % (r.startOffset, r.length))
    check(got == [(0, KB64), (5 * KB64, KB64)], "'*' areas %r" % got)
    got, calls = qcda_all(vm, snap1, 2000, "*", cap)
    check(got == [(0, KB64), (5 * KB64, KB64), (40 << 20, KB64)], "'*' areas (all windows) %r" % got)

    # A write straddling blocks 9/10 and one in block 20, then snapshot 2.
    control("PUT", "/vms/%s/disks/2000/data?offset=%d" % (urllib.request.quote(name), 10 * KB64 - 10), b"x" * 20)
    control("PUT", "/vms/%s/disks/2000/data?offset=%d" % (urllib.request.quote(name), 20 * KB64 + 7), b"y")
    t = vm.CreateSnapshot_Task(name="precopy-2", memory=False, quiesce=False)
    WaitForTask(t)
    snap2 = t.info.result
    cid2 = disks_of(snap2.config)[0].backing.changeId
    check(disks_of(snap1.config)[0].backing.changeId == cid1, "old snapshot's changeId changed")
    check(cid2 != cid1 and cid2.split("/")[0] == cid1.split("/")[0], "changeId 2 %r" % cid2)

    r = vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2000, startOffset=0, changeId=cid1)
    got = [(a.start, a.length) for a in r.changedArea]
    check(got == [(9 * KB64, 2 * KB64), (20 * KB64, KB64)], "changed areas %r" % got)
    check(r.length == 16 << 20, "answer covers %d" % r.length)
    r = vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2000, startOffset=10 * KB64, changeId=cid1)
    got = [(a.start, a.length) for a in r.changedArea]
    check(got == [(10 * KB64, KB64), (20 * KB64, KB64)], "clipped areas %r" % got)

    # The window loop (the double runs with -qcda-window 16M): several
    # answers, some empty, all areas found.
    got, calls = qcda_all(vm, snap2, 2000, "*", cap)
    check(calls == 4, "%d QCDA windows, want 4" % calls)
    check(got == [(0, KB64), (5 * KB64, KB64), (9 * KB64, 2 * KB64), (20 * KB64, KB64), (40 << 20, KB64)],
          "'*' over windows %r" % got)

    # Faults.
    for bad, prop in ((cid1.split("/")[0] + "/999", "changeId"), ("bogus", "changeId")):
        try:
            vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2000, startOffset=0, changeId=bad)
            fail("changeId %r accepted" % bad)
        except vmodl.fault.InvalidArgument as e:
            check(e.invalidProperty == prop, "invalidProperty %r" % e.invalidProperty)
    try:
        vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2999, startOffset=0, changeId="*")
        fail("deviceKey 2999 accepted")
    except vmodl.fault.InvalidArgument:
        pass
    try:
        vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2000, startOffset=cap, changeId="*")
        fail("startOffset == capacity accepted")
    except vmodl.fault.InvalidArgument:
        pass

    # Remove both snapshots (consolidate); the task info must parse.
    for s in (snap2, snap1):
        t = s.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
        WaitForTask(t)
        check(t.info.state == "success", "remove state %r" % t.info.state)
        check(t.info.entity._moId == vm._moId, "remove task entity %r" % t.info.entity)
    check(vm.snapshot is None, "snapshots left: %r" % vm.snapshot)
    live = disks_of(vm.config)[0]
    check(live.backing.fileName == "[ferry ds 1] %s/%s.vmdk" % (name, name), "fileName after remove %r" %
          live.backing.fileName)

    # A running task is visible while -task-delay runs.
    control("POST", "/tasks?delay=1s")
    t = vm.CreateSnapshot_Task(name="slow", memory=False, quiesce=False)
    check(t.info.state == "running", "delayed task state %r" % t.info.state)
    start = time.time()
    WaitForTask(t)
    check(time.time() - start > 0.5, "task finished too early")
    control("POST", "/tasks?delay=0s")
    WaitForTask(t.info.result.RemoveSnapshot_Task(removeChildren=False))

    # Session expiry: the next call must fail with NotAuthenticated.
    control("POST", "/sessions/expire")
    try:
        vm.QueryChangedDiskAreas(snapshot=None, deviceKey=2000, startOffset=0, changeId="*")
        fail("call after session expiry succeeded")
    except vim.fault.NotAuthenticated:
        pass

    si = SmartConnect(host=host, port=int(port), user="user", pwd="pass", sslContext=ctx)
    Disconnect(si)
    st = control("GET", "/stats")
    check(st["qcda_calls"] >= 8, "qcda_calls %r" % st["qcda_calls"])
    check(st["logins"] == 3, "logins %r" % st["logins"])
    print("double_pyvmomi.py: ok")


if __name__ == "__main__":
    main()
