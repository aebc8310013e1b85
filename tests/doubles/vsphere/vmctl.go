// SPDX-License-Identifier: Apache-2.0
// Control channel operations on one VM: guest writes, disk views, power,
// snapshots and CBT switches.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

func (d *double) vmControl(ctx context.Context, w http.ResponseWriter, r *http.Request, v *vmState,
	rest []string, q url.Values) (interface{}, int, error) {
	post := r.Method == http.MethodPost
	vmo := object.NewVirtualMachine(d.client, v.ref)
	switch {
	case r.Method == http.MethodGet && len(rest) == 0:
		return d.vmJSON(v, true), 0, nil
	case len(rest) == 3 && rest[0] == "disks":
		key, err := strconv.Atoi(rest[1])
		if err != nil {
			return nil, 0, fmt.Errorf("disk key %q", rest[1])
		}
		d.model.mu.Lock()
		dk := v.disk(int32(key))
		d.model.mu.Unlock()
		if dk == nil {
			return nil, http.StatusNotFound, fmt.Errorf("%s: no disk %d", v.name, key)
		}
		switch {
		case r.Method == http.MethodPut && rest[2] == "data":
			return d.guestWrite(r, v, dk, q)
		case r.Method == http.MethodGet && rest[2] == "view":
			return d.view(w, v, dk, q)
		}
	case post && len(rest) == 1 && rest[0] == "power":
		var err error
		switch q.Get("state") {
		case "on":
			err = waitTask(ctx, vmo.PowerOn)
		case "off":
			err = waitTask(ctx, vmo.PowerOff)
		default:
			return nil, 0, fmt.Errorf("state=on|off")
		}
		if err != nil {
			return nil, http.StatusConflict, err
		}
		return d.vmJSON(v, true), 0, nil
	case post && len(rest) == 1 && rest[0] == "cbt-reset":
		d.model.mu.Lock()
		for _, dk := range v.disks {
			dk.cbtReset()
		}
		d.syncDevices(v)
		d.model.mu.Unlock()
		return d.vmJSON(v, true), 0, nil
	case post && len(rest) == 1 && rest[0] == "cbt":
		on := q.Get("enabled") == "1" || q.Get("enabled") == "true"
		t, err := vmo.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)})
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		return d.vmJSON(v, true), 0, nil
	case post && len(rest) == 1 && rest[0] == "snapshot":
		name := q.Get("name")
		if name == "" {
			name = "snapshot"
		}
		t, err := vmo.CreateSnapshot(ctx, name, "", false, false)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		info, err := t.WaitForResult(ctx)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		ref := info.Result.(types.ManagedObjectReference)
		return map[string]string{"moref": ref.Value, "name": name}, 0, nil
	}
	return nil, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path)
}

func (d *double) guestWrite(r *http.Request, v *vmState, dk *disk, q url.Values) (interface{}, int, error) {
	off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if q.Get("offset") == "" {
		off, err = 0, nil
	}
	if err != nil || off < 0 {
		return nil, 0, fmt.Errorf("offset=%q", q.Get("offset"))
	}
	if p := q.Get("path"); p != "" {
		d.model.mu.Lock()
		err := dk.copyFrom(p, off, v.cbt)
		d.model.mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		return map[string]interface{}{"ok": true}, 0, nil
	}
	buf := make([]byte, 8<<20)
	var total int64
	for {
		n, rerr := io.ReadFull(r.Body, buf)
		if n > 0 {
			d.model.mu.Lock()
			err := dk.write(buf[:n], off+total, v.cbt)
			d.model.mu.Unlock()
			if err != nil {
				return nil, 0, err
			}
			total += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, 0, rerr
		}
	}
	return map[string]interface{}{"ok": true, "written": total}, 0, nil
}

// view streams the disk as the guest sees it, or as of a snapshot.
func (d *double) view(w http.ResponseWriter, v *vmState, dk *disk, q url.Values) (interface{}, int, error) {
	d.model.mu.Lock()
	level := len(dk.layers)
	if s := q.Get("snapshot"); s != "" {
		level = -1
		for i, sn := range v.snaps {
			if sn.ref.Value == s {
				level = i
			}
		}
	}
	d.model.mu.Unlock()
	if level < 0 {
		return nil, http.StatusNotFound, fmt.Errorf("%s: no snapshot %s", v.name, q.Get("snapshot"))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(dk.capacity, 10))
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < dk.capacity; {
		n := dk.capacity - off
		if n > int64(len(buf)) {
			n = int64(len(buf))
		}
		d.model.mu.Lock()
		if level > len(dk.layers) {
			level = len(dk.layers)
		}
		err := dk.readLevel(level, buf[:n], off)
		d.model.mu.Unlock()
		if err != nil {
			return nil, 0, errStreamed
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return nil, 0, errStreamed
		}
		off += n
	}
	return nil, 0, errStreamed
}
