#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ferry's RHV / oVirt double: an engine REST API and an ovirt-imageio server in front of
real qemu-nbd processes serving qcow2 images with persistent dirty bitmaps.

Run with Debian's /usr/bin/python3 (python3-libnbd).  See README.md for what it
emulates and the control channel.

  rhv_double.py --dir DIR [--password PW]

prints ENGINE_URL=, CACERT=, CONTROL=, USER=, then READY.
"""

import argparse
import bisect
import json
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nbd

LOCK = threading.RLock()
STATE = {
    "users": {},
    "tokens": {},  # token -> expiry (monotonic)
    "vms": {},
    "disks": {},
    "transfers": {},
    "backups": {},
    "stats": {"imageio_bytes": 0, "imageio_requests": 0, "logins": 0, "faults": 0,
              "failed_logins": 0, "logouts": 0, "transfers": 0, "backups": 0},
    "faults": {"transfer_url": "unresolvable", "max_inactivity": None,
               "init_polls": 1, "token_ttl": 3600, "imageio_500": 0,
               "fault_rate": 0, "expire_ticket_after": None, "pause_disk": None},
}
SD = {"id": "5b8c5a1e-0000-4000-8000-00000000d001", "name": "data1"}
HOST = {"id": "7a6f3b2c-0000-4000-8000-00000000a001", "name": "host1"}
ARGS = None
IMAGEIO_PORT = 0
REFUSED_PORT = 0
POLL_SECONDS = 0.5


def strs(x):
    """The engine's JSON: every scalar is a string."""
    if isinstance(x, dict):
        return {k: strs(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [strs(v) for v in x]
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return str(x)
    return x


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- model ---------------------------------------------------------------------------

def vm_json(vm, follow=False):
    j = {"id": vm["id"], "name": vm["name"], "status": vm["status"],
         "href": "/ovirt-engine/api/vms/" + vm["id"]}
    if vm["status"] == "up":
        j["host"] = {"id": HOST["id"], "href": "/ovirt-engine/api/hosts/" + HOST["id"]}
    if follow:
        j["disk_attachments"] = {"disk_attachment": attachments(vm, True)}
    return j


def disk_json(d):
    return {"id": d["id"], "alias": d["alias"], "name": d["alias"],
            "provisioned_size": d["size"], "actual_size": os.path.getsize(d["path"]),
            "format": "cow" if d["format"] == "qcow2" or d["snapshots"] else "raw",
            "sparse": True, "backup": d["backup"], "image_id": d["volume"],
            "storage_type": "image", "status": d["status"], "content_type": "data",
            "qcow_version": "qcow2_v3",
            "storage_domains": {"storage_domain": [{"id": SD["id"]}]},
            "href": "/ovirt-engine/api/disks/" + d["id"]}


def attachments(vm, follow_disk):
    out = []
    for i, did in enumerate(vm["disks"]):
        d = STATE["disks"][did]
        a = {"id": did, "active": True, "bootable": i == 0, "interface": "virtio_scsi",
             "read_only": False, "pass_discard": False,
             "vm": {"id": vm["id"]}, "disk": {"id": did}}
        if follow_disk:
            a["disk"] = disk_json(d)
        out.append(a)
    return out


def transfer_json(t):
    j = {"id": t["id"], "phase": t["phase"], "direction": "download", "format": "raw",
         "active": t["active"] > 0, "transferred": t["transferred"],
         "inactivity_timeout": t["inactivity_timeout"], "timeout_policy": "cancel",
         "disk": {"id": t["disk"]}, "host": {"id": HOST["id"]},
         "href": "/ovirt-engine/api/imagetransfers/" + t["id"]}
    if t["backup"]:
        j["backup"] = {"id": t["backup"]}
    if t["phase"] == "transferring":
        # The host's daemon: a name unknown here (as from a pod), 127.0.0.1 (reachable,
        # told apart from the proxy's "localhost"), or a port nobody listens on.
        mode = STATE["faults"]["transfer_url"]
        host = {"unresolvable": "host1.unresolvable.invalid:%d" % IMAGEIO_PORT,
                "direct": "127.0.0.1:%d" % IMAGEIO_PORT,
                "refused": "127.0.0.1:%d" % REFUSED_PORT}[mode]
        j["transfer_url"] = "https://%s/images/%s" % (host, t["ticket"])
        j["proxy_url"] = "https://localhost:%d/images/%s" % (IMAGEIO_PORT, t["ticket"])
    return j


def backup_json(b):
    j = {"id": b["id"], "phase": b["phase"], "vm": {"id": b["vm"]},
         "disks": {"disk": [{"id": d} for d in b["disks"]]},
         "href": "/ovirt-engine/api/vms/%s/backups/%s" % (b["vm"], b["id"])}
    if b["from"]:
        j["from_checkpoint_id"] = b["from"]
    if b["phase"] in ("ready", "finalizing", "succeeded"):
        j["to_checkpoint_id"] = b["to"]
    return j


def start_nbd(t, disk, bitmap):
    """qemu-nbd over the transfer's volume and its backing chain (format raw)."""
    sock = os.path.join(ARGS.dir, "nbd-%s.sock" % t["id"])
    fmt = volume_format(disk, t["path"])
    cmd = ["qemu-nbd", "-r", "-t", "-f", fmt, "-A", "-e", "8", "-x", "", "-k", sock]
    if bitmap:
        cmd += ["-B", bitmap]
    cmd.append(t["path"])
    t["proc"] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t["sock"] = sock
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if t["proc"].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("qemu-nbd: " + t["proc"].stderr.read().decode(errors="replace"))
        time.sleep(0.01)


def volume_format(disk, path):
    """The base volume of a raw disk is raw; every snapshot layer is qcow2."""
    return disk["format"] if path == disk["base"] else "qcow2"


def disk_snapshot_json(disk, ds):
    return {"id": ds["id"], "disk": {"id": disk["id"]}, "snapshot": {"id": ds["snapshot"]},
            "parent": {"id": ds["parent"]} if ds["parent"] else None,
            "provisioned_size": disk["size"], "actual_size": os.path.getsize(ds["path"]),
            "format": "cow" if ds["path"] != disk["base"] or disk["format"] == "qcow2"
            else "raw", "status": "ok", "content_type": "data",
            "href": "/ovirt-engine/api/disks/%s/disksnapshots/%s" % (disk["id"], ds["id"])}


def snapshot_json(vm, sn):
    return {"id": sn["id"], "description": sn["description"], "snapshot_type": "regular",
            "snapshot_status": "ok", "persist_memorystate": False, "vm": {"id": vm["id"]},
            "href": "/ovirt-engine/api/vms/%s/snapshots/%s" % (vm["id"], sn["id"])}


def make_snapshot(vm, description):
    """A VM snapshot: each disk's active volume becomes a read-only disk snapshot and a new
    qcow2 volume on top of it takes the guest's writes.  Returns None, or a fault."""
    for did in vm["disks"]:
        if STATE["disks"][did]["status"] != "ok":
            return "[Cannot create Snapshot. Disk %s is locked.]" % STATE["disks"][did]["alias"]
    sid = str(uuid.uuid4())
    for did in vm["disks"]:
        disk = STATE["disks"][did]
        old, vol = disk["path"], str(uuid.uuid4())
        new = os.path.join(ARGS.dir, "%s-%s.qcow2" % (did, vol))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", old, "-F",
            volume_format(disk, old), new)
        parent = disk["snapshots"][-1]["id"] if disk["snapshots"] else None
        disk["snapshots"].append({"id": disk["volume"], "path": old, "snapshot": sid,
                                  "parent": parent})
        disk["path"], disk["volume"] = new, vol
        # Bitmaps stay in the old layer and miss the new one's writes: from now on
        # backups since an older checkpoint are full (conservative, never stale).
        disk["bitmaps"] = []
    vm["snapshots"].append({"id": sid, "description": description})
    return sid


def find_disk_snapshot(dsid):
    for disk in STATE["disks"].values():
        for ds in disk["snapshots"]:
            if ds["id"] == dsid:
                return disk, ds
    return None, None


def end_transfer(t, phase):
    """Remove the ticket (cutting streams), stop qemu-nbd, unlock the disk."""
    t["phase"] = phase
    t["ticket_valid"] = False
    if t.get("proc"):
        t["proc"].terminate()
        try:
            t["proc"].wait(10)
        except subprocess.TimeoutExpired:
            t["proc"].kill()
            t["proc"].wait()
        t["proc"] = None
    STATE["disks"][t["disk"]]["status"] = "ok"


def engine_poller():
    """What the engine does on its own, once per poll: phases, inactivity, auto-finalize."""
    while True:
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        with LOCK:
            for t in STATE["transfers"].values():
                if t["phase"] == "transferring":
                    idle = now - t["last_activity"]
                    if t["active"] == 0 and idle > t["inactivity_timeout"] > 0:
                        t["cancel_reason"] = "inactivity (%.1f s idle)" % idle
                        end_transfer(t, "cancelled_system")
                    elif t["active"] == 0 and t["transferred"] >= t["size"]:
                        t["idle_polls"] += 1
                        if t["idle_polls"] >= 2:
                            end_transfer(t, "finalizing_success")
                    else:
                        t["idle_polls"] = 0
                elif t["phase"] == "finalizing_success":
                    t["phase"] = "finished_success"
                elif t["phase"] in ("cancelled_system", "cancelled_user"):
                    t["phase"] = "finished_failure"
            for b in STATE["backups"].values():
                if b["phase"] == "finalizing":
                    b["phase"] = "succeeded"


# --- engine --------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rhv-double"

    def log_message(self, fmt, *args):
        if ARGS.verbose:
            sys.stderr.write("%s %s\n" % (self.server.name, fmt % args))

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, data=b"", ctype="application/json", headers=()):
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        elif isinstance(data, str):
            data = data.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def fault(self, code, reason, detail):
        self.send(code, {"reason": reason, "detail": detail})


class EngineHandler(Handler):
    def authorized(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with LOCK:
            exp = STATE["tokens"].get(auth[7:])
            return exp is not None and exp > time.monotonic()

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/ovirt-engine/sso/oauth/token":
            return self.token()
        if u.path == "/ovirt-engine/services/sso-logout":
            form = urllib.parse.parse_qs(self.body().decode())
            with LOCK:
                STATE["tokens"].pop(form.get("token", [""])[0], None)
                STATE["stats"]["logouts"] += 1
            return self.send(200, {})
        if not u.path.startswith("/ovirt-engine/api/"):
            return self.fault(404, "Not Found", "no such path")
        body = self.body()
        if not self.authorized():
            return self.send(401, "", "text/plain")
        if "xml" not in self.headers.get("Content-Type", ""):
            return self.fault(415, "Unsupported Media Type", "this double takes XML bodies")
        try:
            root = ET.fromstring(body) if body else ET.Element("action")
        except ET.ParseError as e:
            return self.fault(400, "Bad Request", "malformed XML: %s" % e)
        parts = u.path[len("/ovirt-engine/api/"):].split("/")
        with LOCK:
            return self.post_api(parts, root)

    def token(self):
        form = urllib.parse.parse_qs(self.body().decode())
        if "application/json" not in self.headers.get("Accept", ""):
            return self.send(400, {"error_code": "invalid_request",
                                   "error": "Accept header must be application/json"})
        if form.get("grant_type") != ["password"] or form.get("scope") != ["ovirt-app-api"]:
            return self.send(400, {"error_code": "invalid_request",
                                   "error": "grant_type=password and scope=ovirt-app-api "
                                            "are required"})
        user = form.get("username", [""])[0]
        with LOCK:
            if STATE["users"].get(user) != form.get("password", [None])[0]:
                STATE["stats"]["failed_logins"] += 1
                return self.send(400, {
                    "error_code": "access_denied",
                    "error": "Cannot authenticate user '%s': The username or password is "
                             "incorrect." % user})
            tok = secrets.token_urlsafe(32)
            STATE["tokens"][tok] = time.monotonic() + STATE["faults"]["token_ttl"]
            STATE["stats"]["logins"] += 1
        return self.send(200, {"access_token": tok, "token_type": "bearer",
                               "scope": "ovirt-app-api",
                               "exp": str(int(time.time() * 1000) + 3600000)})

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if not u.path.startswith("/ovirt-engine/api/"):
            return self.fault(404, "Not Found", "no such path")
        if not self.authorized():
            return self.send(401, "", "text/plain")
        parts = u.path[len("/ovirt-engine/api/"):].rstrip("/").split("/")
        follow = "disk_attachments" in q.get("follow", [""])[0]
        with LOCK:
            r = self.get_api(parts, q, follow)
        if r is None:
            return self.fault(404, "Not Found", "Entity not found: " + "/".join(parts))
        return self.send(200, strs(r))

    def get_api(self, p, q, follow):
        s = STATE
        if p == ["vms"]:
            vms = list(s["vms"].values())
            search = q.get("search", [""])[0]
            if search.startswith("name="):
                vms = [v for v in vms if v["name"] == search[5:]]
            return {"vm": [vm_json(v, follow) for v in vms]}
        if p[0] == "vms" and len(p) >= 2 and p[1] in s["vms"]:
            vm = s["vms"][p[1]]
            if len(p) == 2:
                return vm_json(vm, follow)
            if p[2:] == ["diskattachments"]:
                return {"disk_attachment": attachments(vm, False)}
            if p[2:] == ["snapshots"]:
                return {"snapshot": [snapshot_json(vm, sn) for sn in vm["snapshots"]]}
            if p[2:] == ["checkpoints"]:
                return {"checkpoint": [{"id": c["id"], "parent_id": c["parent"],
                                        "state": "created", "vm": {"id": vm["id"]}}
                                       for c in vm["checkpoints"]]}
            if p[2] == "backups" and len(p) >= 4 and p[3] in s["backups"]:
                b = s["backups"][p[3]]
                b["polls"] += 1
                if b["phase"] == "initializing" and b["polls"] >= 1:
                    b["phase"] = "starting"
                elif b["phase"] == "starting" and b["polls"] >= 2:
                    b["phase"] = "ready"
                if len(p) == 4:
                    return backup_json(b)
                if p[4:] == ["disks"]:
                    return {"disk": [dict(disk_json(s["disks"][d]),
                                          backup_mode=b["modes"][d]) for d in b["disks"]]}
            return None
        if p[0] == "disks" and len(p) == 2 and p[1] in s["disks"]:
            return disk_json(s["disks"][p[1]])
        if p[0] == "disks" and p[2:] == ["disksnapshots"] and p[1] in s["disks"]:
            d = s["disks"][p[1]]
            return {"disk_snapshot": [disk_snapshot_json(d, ds) for ds in d["snapshots"]]}
        if p == ["storagedomains", SD["id"]]:
            return {"id": SD["id"], "name": SD["name"], "type": "data"}
        if p[0] == "imagetransfers" and len(p) == 2 and p[1] in s["transfers"]:
            t = s["transfers"][p[1]]
            t["polls"] += 1
            if t["phase"] == "initializing" and t["polls"] >= s["faults"]["init_polls"] and \
                    s["faults"]["pause_disk"] == t["disk"]:
                t["phase"] = "paused_system"  # e.g. the host's daemon failed; stays open
                return transfer_json(t)
            if t["phase"] == "initializing" and t["polls"] >= s["faults"]["init_polls"]:
                try:
                    start_nbd(t, s["disks"][t["disk"]], t["bitmap"])
                except RuntimeError as e:
                    t["cancel_reason"] = str(e)
                    end_transfer(t, "finished_failure")
                    return transfer_json(t)
                t["phase"] = "transferring"
                t["ticket_valid"] = True
                t["last_activity"] = time.monotonic()
            return transfer_json(t)
        return None

    def post_api(self, p, root):
        s = STATE
        if p == ["imagetransfers"]:
            return self.new_transfer(root)
        if p[0] == "imagetransfers" and len(p) == 3 and p[1] in s["transfers"]:
            t = s["transfers"][p[1]]
            if p[2] == "finalize":
                if t["phase"] == "transferring":
                    end_transfer(t, "finalizing_success")
                elif t["phase"] not in ("finalizing_success", "finished_success"):
                    return self.fault(409, "Operation Failed",
                                      "[Cannot finalize transfer in phase %s]" % t["phase"])
                return self.send(200, strs({"status": "complete"}))
            if p[2] == "cancel":
                if t["phase"] in ("initializing", "transferring", "paused_system"):
                    end_transfer(t, "cancelled_user")
                return self.send(200, strs({"status": "complete"}))
            if p[2] == "extend":
                return self.send(200, strs({"status": "complete"}))
            return self.fault(404, "Not Found", "no action " + p[2])
        if p[0] == "vms" and len(p) >= 3 and p[1] in s["vms"]:
            vm = s["vms"][p[1]]
            if p[2] in ("shutdown", "stop") and len(p) == 3:
                vm["status"] = "down"
                return self.send(200, strs({"status": "complete"}))
            if p[2] == "start" and len(p) == 3:
                vm["status"] = "up"
                return self.send(200, strs({"status": "complete"}))
            if p[2] == "backups" and len(p) == 3:
                return self.new_backup(vm, root)
            if p[2] == "snapshots" and len(p) == 3:
                sid = make_snapshot(vm, root.findtext("description") or "")
                if sid.startswith("["):
                    return self.fault(409, "Operation Failed", sid)
                return self.send(201, strs(dict(snapshot_json(vm, vm["snapshots"][-1]),
                                                snapshot_status="locked")))
            if p[2] == "backups" and len(p) == 5 and p[3] in s["backups"] and \
                    p[4] == "finalize":
                b = s["backups"][p[3]]
                if any(t["ticket_valid"] for t in s["transfers"].values()
                       if t["backup"] == b["id"]):
                    return self.fault(409, "Operation Failed",
                                      "[Cannot finalize backup: image transfers are "
                                      "still running]")
                b["phase"] = "finalizing"
                return self.send(200, strs({"status": "complete"}))
        return self.fault(404, "Not Found", "no such action")

    def new_transfer(self, root):
        s = STATE
        disk_el, snap_el = root.find("disk"), root.find("snapshot")
        did = disk_el.get("id") if disk_el is not None else None
        dsnap = None
        if snap_el is not None:
            disk, dsnap = find_disk_snapshot(snap_el.get("id"))
            if dsnap is None:
                return self.fault(404, "Not Found", "[Cannot transfer Virtual Disk: disk "
                                  "snapshot %s does not exist]" % snap_el.get("id"))
            did = disk["id"]
        if did not in s["disks"]:
            return self.fault(404, "Not Found", "[Cannot transfer Virtual Disk: disk %s "
                              "does not exist]" % did)
        if (root.findtext("direction") or "upload") != "download":
            return self.fault(400, "Bad Request", "this double only downloads")
        if root.findtext("format") != "raw":
            return self.fault(400, "Bad Request", "[format must be raw: the double "
                              "emulates the NBD backend only]")
        disk = s["disks"][did]
        vm = s["vms"][disk["vm"]]
        b_el = root.find("backup")
        backup = s["backups"].get(b_el.get("id")) if b_el is not None else None
        if b_el is not None and (backup is None or backup["phase"] != "ready" or
                                 did not in backup["disks"]):
            return self.fault(409, "Operation Failed", "[Cannot transfer Virtual Disk: "
                              "the backup is not ready or does not include the disk]")
        if disk["status"] == "locked":
            return self.fault(409, "Operation Failed",
                              "[Cannot transfer Virtual Disk: Disk is locked. Please try "
                              "again later.]")
        if backup is None and dsnap is None and vm["status"] != "down":
            return self.fault(409, "Operation Failed",
                              "[Cannot transfer Virtual Disk: The disk %s is plugged to "
                              "a running VM %s; use a snapshot or a backup]"
                              % (disk["alias"], vm["name"]))
        inactivity = int(root.findtext("inactivity_timeout") or 60)
        cap = s["faults"]["max_inactivity"]
        if cap is not None and (inactivity == 0 or inactivity > cap):
            inactivity = cap
        tid = str(uuid.uuid4())
        bitmap = None
        if backup and backup["modes"][did] == "incremental":
            bitmap = backup["from"]
        s["transfers"][tid] = {
            "id": tid, "disk": did, "backup": backup["id"] if backup else None,
            "phase": "initializing", "ticket": str(uuid.uuid4()), "size": disk["size"],
            "transferred": 0, "ranges": [], "bytes": 0, "active": 0, "polls": 0,
            "idle_polls": 0, "inactivity_timeout": inactivity, "touches": 0, "ticket_valid": False,
            "last_activity": time.monotonic(), "dirty": bitmap is not None,
            "bitmap": bitmap, "proc": None, "sock": None, "cancel_reason": None,
            "path": dsnap["path"] if dsnap else disk["path"], "gets": [],
            "snapshot": dsnap["id"] if dsnap else None}
        disk["status"] = "locked"
        s["stats"]["transfers"] += 1
        return self.send(201, strs(transfer_json(s["transfers"][tid])))

    def new_backup(self, vm, root):
        s = STATE
        frm = root.findtext("from_checkpoint_id")
        dids = [d.get("id") for d in root.findall("disks/disk")]
        if not dids or any(d not in vm["disks"] for d in dids):
            return self.fault(400, "Bad Request", "[Cannot backup VM: give disks of the VM]")
        if frm and frm not in [c["id"] for c in vm["checkpoints"]]:
            return self.fault(400, "Operation Failed",
                              "[Cannot backup VM. Checkpoint %s does not exist]" % frm)
        if any(b["vm"] == vm["id"] and b["phase"] not in ("succeeded", "failed")
               for b in s["backups"].values()):
            return self.fault(409, "Operation Failed",
                              "[Cannot backup VM. The VM is during a backup operation.]")
        for d in dids:
            if s["disks"][d]["status"] != "ok":
                return self.fault(409, "Operation Failed",
                                  "[Cannot backup VM: Disk is locked.]")
        cp = str(uuid.uuid4())
        modes = {}
        for d in dids:
            disk = s["disks"][d]
            modes[d] = "incremental" if frm and frm in disk["bitmaps"] else "full"
            if disk["backup"] == "incremental":
                run("qemu-img", "bitmap", "--add", disk["path"], cp)
                disk["bitmaps"].append(cp)
        vm["checkpoints"].append({"id": cp, "parent": vm["checkpoints"][-1]["id"]
                                  if vm["checkpoints"] else None})
        bid = str(uuid.uuid4())
        s["backups"][bid] = {"id": bid, "vm": vm["id"], "from": frm, "to": cp,
                             "disks": dids, "modes": modes, "phase": "initializing",
                             "polls": 0}
        s["stats"]["backups"] += 1
        return self.send(201, strs(backup_json(s["backups"][bid])))


# --- imageio -------------------------------------------------------------------------

def merged_extents(sock, size, contexts, make):
    """block_status over the whole image; MAKE(flags-by-context) -> extent dict."""
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_unix(sock)
    got = {c: [] for c in contexts}
    try:
        off = 0
        while off < size:
            def cb(ctx, o, entries, err):
                pos = o
                for i in range(0, len(entries), 2):
                    got[ctx].append((pos, entries[i], entries[i + 1]))
                    pos += entries[i]
                return 0
            h.block_status(min(size - off, 1 << 30), off, cb)
            off = min(e[-1][0] + e[-1][1] if e else size
                      for e in (got[c] for c in contexts))
    finally:
        h.shutdown()
    starts = {c: [e[0] for e in got[c]] for c in contexts}
    bounds = sorted({0} | {e[0] for c in contexts for e in got[c] if e[0] < size})
    out = []
    for i, b in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else size
        flags = {}
        for c in contexts:
            k = bisect.bisect_right(starts[c], b) - 1
            flags[c] = got[c][k][2] if k >= 0 else 0
        ext = make(flags)
        if out and all(out[-1][k] == v for k, v in ext.items()):
            out[-1]["length"] += end - b
        else:
            out.append(dict(ext, start=b, length=end - b))
    return out


class ImageioHandler(Handler):
    def setup(self):
        super().setup()
        self.handles = {}

    def finish(self):
        for h in self.handles.values():
            try:
                h.shutdown()
            except nbd.Error:
                pass
        super().finish()

    def ticket(self):
        """The transfer of /images/TICKET[/...], or None after answering 403."""
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if len(parts) < 3 or parts[1] != "images":
            self.send(404, "no such resource\n", "text/plain")
            return None, parts
        with LOCK:
            for t in STATE["transfers"].values():
                if t["ticket"] == parts[2] and t["ticket_valid"]:
                    return t, parts
        self.close_connection = True
        self.send(403, "You are not allowed to access this resource: no ticket %s\n"
                  % parts[2], "text/plain", [("Connection", "close")])
        return None, parts

    def touch(self, t):
        with LOCK:
            t["last_activity"] = time.monotonic()
            t["touches"] += 1

    def do_HEAD(self):
        self.send(405, "", "text/plain")

    def do_OPTIONS(self):
        if self.path == "/images/*":
            return self.send(200, {"features": ["extents"]}, headers=[("Allow", "OPTIONS,GET")])
        t, _ = self.ticket()
        if t is None:
            return
        self.touch(t)
        self.send(200, {"features": ["checksum", "extents"], "max_readers": 8,
                        "max_writers": 8}, headers=[("Allow", "OPTIONS,GET")])

    def do_GET(self):
        t, parts = self.ticket()
        if t is None:
            return
        if len(parts) == 4 and parts[3] == "extents":
            return self.extents(t)
        if len(parts) != 3:
            return self.send(404, "no such resource\n", "text/plain")
        size = t["size"]
        rng = self.headers.get("Range")
        if rng is None:
            start, end, code = 0, size - 1, 200
        else:
            spec = rng[6:] if rng.startswith("bytes=") else ""
            a, _, b = spec.partition("-")
            if "," in spec or not a.isdigit() or (b and not b.isdigit()) or \
                    int(a) >= size or (b and int(b) < int(a)):
                return self.send(416, "Requested range not satisfiable\n", "text/plain",
                                 [("Content-Range", "bytes */%d" % size)])
            start, end, code = int(a), min(int(b) if b else size - 1, size - 1), 206
        with LOCK:
            f = STATE["faults"]
            fail = None
            if f["imageio_500"] > 0:
                f["imageio_500"] -= 1
                fail = "500"
            elif f["fault_rate"] and random.random() < f["fault_rate"]:
                # Each kind in turn, so that a few faults include every kind.
                fail = ["500", "reset", "short", "slow"][STATE["stats"]["faults"] % 4]
            if fail:
                STATE["stats"]["faults"] += 1
            expire_at = f["expire_ticket_after"]
            began = time.monotonic()
            t["active"] += 1
            STATE["stats"]["imageio_requests"] += 1
        try:
            if fail == "500":
                return self.send(500, "injected internal error\n", "text/plain")
            if fail == "reset":  # the connection drops before an answer
                self.close_connection = True
                self.request.shutdown(socket.SHUT_RDWR)
                return
            if fail == "slow":  # a slow first byte
                time.sleep(0.3)
            h = self.handles.get(t["id"])
            if h is None:
                h = nbd.NBD()
                h.connect_unix(t["sock"])
                self.handles[t["id"]] = h
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if code == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
            self.end_headers()
            pos = start
            stop = start + (end + 1 - start) // 2 if fail == "short" else end + 1
            while pos <= end:
                if expire_at is not None and t["bytes"] >= expire_at:
                    with LOCK:  # the ticket expires mid-read: the engine ends the transfer
                        STATE["faults"]["expire_ticket_after"] = expire_at = None
                        t["cancel_reason"] = "ticket expired"
                        end_transfer(t, "cancelled_system")
                if not t["ticket_valid"] or pos >= stop:
                    self.close_connection = True
                    return  # the ticket was removed, or a short body: cut the stream
                n = min(end + 1 - pos, stop - pos, 64 << 10)
                self.wfile.write(h.pread(n, pos))
                pos += n
                with LOCK:
                    STATE["stats"]["imageio_bytes"] += n
                    t["bytes"] += n
            with LOCK:
                add_range(t, start, end + 1)
                t["gets"].append([began, time.monotonic()])
        except (nbd.Error, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with LOCK:
                t["active"] -= 1
                t["last_activity"] = time.monotonic()

    def extents(self, t):
        ctx = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get(
            "context", ["zero"])[0]
        if ctx == "dirty" and not t["dirty"]:
            return self.send(404, "Ticket does not support dirty extents\n", "text/plain")
        if ctx not in ("zero", "dirty"):
            return self.send(400, "Invalid context: %s\n" % ctx, "text/plain")
        if ctx == "zero":
            out = merged_extents(
                t["sock"], t["size"], ["base:allocation", "qemu:allocation-depth"],
                lambda f: {"zero": bool(f["base:allocation"] & 2),
                           "hole": f["qemu:allocation-depth"] == 0})
        else:
            bm = "qemu:dirty-bitmap:" + t["bitmap"]
            out = merged_extents(
                t["sock"], t["size"], ["base:allocation", bm],
                lambda f: {"dirty": bool(f[bm] & 1),
                           "zero": bool(f["base:allocation"] & 2)})
        self.send(200, out)


def add_range(t, a, b):
    """transferred = unique bytes read."""
    r = t["ranges"]
    r.append((a, b))
    r.sort()
    merged = []
    for x, y in r:
        if merged and x <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], y))
        else:
            merged.append((x, y))
    t["ranges"] = merged
    t["transferred"] = sum(y - x for x, y in merged)


# --- control channel -----------------------------------------------------------------

class ControlHandler(Handler):
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        p = u.path.strip("/").split("/")
        with LOCK:
            if p == ["stats"]:
                return self.send(200, STATE["stats"])
            if p == ["transfers"]:
                return self.send(200, [
                    {"id": t["id"], "disk": t["disk"], "backup": t["backup"],
                     "phase": t["phase"], "bytes": t["bytes"],
                     "transferred": t["transferred"], "touches": t["touches"],
                     "open": t["phase"] in ("initializing", "transferring",
                                            "paused_system"),
                     "reason": t["cancel_reason"], "gets": t["gets"]}
                    for t in STATE["transfers"].values()])
            if p == ["backups"]:
                return self.send(200, [backup_json(b) for b in STATE["backups"].values()])
            if p[0] == "vms" and len(p) == 2 and p[1] in STATE["vms"]:
                return self.send(200, self.vm_view(STATE["vms"][p[1]]))
        self.send(404, {"error": "no such control path"})

    def vm_view(self, vm):
        return {"id": vm["id"], "name": vm["name"], "status": vm["status"],
                "checkpoints": [c["id"] for c in vm["checkpoints"]],
                "snapshots": [sn["id"] for sn in vm["snapshots"]],
                "disks": [{"id": d, "alias": STATE["disks"][d]["alias"],
                           "path": STATE["disks"][d]["path"],
                           "format": volume_format(STATE["disks"][d],
                                                   STATE["disks"][d]["path"]),
                           "size": STATE["disks"][d]["size"],
                           "status": STATE["disks"][d]["status"],
                           "snapshots": [{"id": ds["id"], "path": ds["path"],
                                          "format": volume_format(STATE["disks"][d],
                                                                  ds["path"]),
                                          "snapshot": ds["snapshot"]}
                                         for ds in STATE["disks"][d]["snapshots"]]}
                          for d in vm["disks"]]}

    def do_POST(self):
        p = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        try:
            req = json.loads(self.body() or b"{}")
        except ValueError as e:
            return self.send(400, {"error": str(e)})
        with LOCK:
            if p == ["vms"]:
                return self.create_vm(req)
            if p == ["faults"]:
                for k, v in req.items():
                    if k == "expire_tokens":
                        STATE["tokens"].clear()
                    elif k in STATE["faults"]:
                        STATE["faults"][k] = v
                        if k == "fault_rate":
                            random.seed(9)  # the same faults in every run
                    else:
                        return self.send(400, {"error": "unknown fault " + k})
                return self.send(200, STATE["faults"])
            if p[0] == "vms" and len(p) == 3 and p[2] == "snapshots" and p[1] in STATE["vms"]:
                sid = make_snapshot(STATE["vms"][p[1]], req.get("description", ""))
                if sid.startswith("["):
                    return self.send(409, {"error": sid})
                return self.send(201, {"id": sid})
            if p[0] == "vms" and len(p) == 3 and p[2] == "status" and p[1] in STATE["vms"]:
                STATE["vms"][p[1]]["status"] = req["status"]
                return self.send(200, self.vm_view(STATE["vms"][p[1]]))
        self.send(404, {"error": "no such control path"})

    def create_vm(self, req):
        vid = req.get("id") or str(uuid.uuid4())
        vm = {"id": vid, "name": req["name"], "status": req.get("status", "down"),
              "disks": [], "checkpoints": [], "snapshots": []}
        for i, d in enumerate(req.get("disks", [])):
            did = d.get("id") or str(uuid.uuid4())
            fmt = d.get("format", "qcow2")
            path = os.path.join(ARGS.dir, "%s.%s" % (did, fmt))
            run("qemu-img", "create", "-q", "-f", fmt, path, str(d["size"]))
            STATE["disks"][did] = {"id": did, "alias": d.get("alias", "%s_Disk%d" % (
                req["name"], i + 1)), "size": int(d["size"]), "path": path,
                "backup": d.get("backup", "incremental" if fmt == "qcow2" else "none"),
                "status": "ok", "vm": vid, "bitmaps": [], "format": fmt, "base": path,
                "volume": str(uuid.uuid4()), "snapshots": []}
            vm["disks"].append(did)
        STATE["vms"][vid] = vm
        return self.send(201, self.vm_view(vm))

    def do_PUT(self):
        """PUT /vms/ID/disks/DISK/data?offset=N (body) or ?zero=LEN: a guest write."""
        u = urllib.parse.urlsplit(self.path)
        p = u.path.strip("/").split("/")
        q = urllib.parse.parse_qs(u.query)
        data = self.body()
        with LOCK:
            if not (len(p) == 5 and p[0] == "vms" and p[2] == "disks" and p[4] == "data" and
                    p[1] in STATE["vms"] and p[3] in STATE["vms"][p[1]]["disks"]):
                return self.send(404, {"error": "no such disk"})
            disk = STATE["disks"][p[3]]
            if disk["status"] != "ok" or any(
                    b["vm"] == p[1] and b["phase"] not in ("succeeded", "failed")
                    for b in STATE["backups"].values()):
                return self.send(409, {"error": "the disk is being read (transfer or "
                                                "backup open)"})
            off = int(q.get("offset", ["0"])[0])
            if "zero" in q:
                cmd = "write -z %d %s" % (off, q["zero"][0])
            else:
                src = os.path.join(ARGS.dir, "write.bin")
                with open(src, "wb") as f:
                    f.write(data)
                cmd = "write -s %s %d %d" % (src, off, len(data))
            try:
                run("qemu-io", "-f", volume_format(disk, disk["path"]), "-c", cmd,
                    disk["path"])
            except subprocess.CalledProcessError as e:
                return self.send(500, {"error": e.stderr.decode(errors="replace")})
        self.send(200, {"written": len(data)})


# --- main ----------------------------------------------------------------------------

def make_tls(d):
    ca_key, ca, key, csr, crt = (os.path.join(d, n) for n in
                                 ("ca.key", "ca.pem", "server.key", "server.csr",
                                  "server.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=rhv-double test CA")
    run("openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ca, ctx


def serve(handler, name, tls_ctx):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.name = name
    if tls_ctx:
        srv.socket = tls_ctx.wrap_socket(srv.socket, server_side=True,
                                         do_handshake_on_connect=False)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class TLSHandshakeMixin:
    """Handshake in the connection's thread, not in accept()."""

    def setup(self):
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise
        super().setup()


class TLSEngine(TLSHandshakeMixin, EngineHandler):
    pass


class TLSImageio(TLSHandshakeMixin, ImageioHandler):
    timeout = 60  # imageio closes idle connections


def main():
    global ARGS, IMAGEIO_PORT, REFUSED_PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--user", default="admin@internal")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--verbose", action="store_true")
    ARGS = ap.parse_args()
    os.makedirs(ARGS.dir, exist_ok=True)
    STATE["users"][ARGS.user] = ARGS.password
    ca, ctx = make_tls(ARGS.dir)
    engine = serve(TLSEngine, "engine", ctx)
    imageio = serve(TLSImageio, "imageio", ctx)
    control = serve(ControlHandler, "control", None)
    IMAGEIO_PORT = imageio.server_address[1]
    with socket.socket() as s:  # a port that refuses connections
        s.bind(("127.0.0.1", 0))
        REFUSED_PORT = s.getsockname()[1]
    threading.Thread(target=engine_poller, daemon=True).start()

    def stop(*_):
        with LOCK:
            for t in STATE["transfers"].values():
                if t.get("proc"):
                    t["proc"].kill()
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ENGINE_URL=https://localhost:%d/ovirt-engine/api" % engine.server_address[1])
    print("CACERT=%s" % ca)
    print("CONTROL=http://127.0.0.1:%d" % control.server_address[1])
    print("RHV_USER=%s" % ARGS.user)
    print("READY", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
