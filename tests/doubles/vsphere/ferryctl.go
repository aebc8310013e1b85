// SPDX-License-Identifier: Apache-2.0
// Control channel additions for the ferry orchestrator's tests: a log of
// /folder GETs with their start and end times (to prove that transfers were
// or were not concurrent), deleting a VM as vSphere's Destroy_Task does (a
// VM gone in the middle of a migration), and marking a VM's VMware Tools as
// running (so that a client's ShutdownGuest path runs).
//
// THREAD MODEL: the request log has its own mutex (reqMu), taken only
// around appends and copies; it is never held while anything else is.
package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// folderRequest is one /folder GET: times are Unix seconds with nanoseconds.
type folderRequest struct {
	Path  string  `json:"path"`
	Range string  `json:"range,omitempty"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

// maxRequests bounds the log; older entries are kept, later ones counted.
const maxRequests = 200000

var (
	reqMu      sync.Mutex
	reqLog     []folderRequest
	reqDropped int64
)

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// logFolder starts the log entry of a /folder GET and returns the function
// that ends the entry (serveFolder defers it).
func (d *double) logFolder(r *http.Request) func() {
	if r.Method != http.MethodGet {
		return func() {}
	}
	start := time.Now()
	p, rg := r.URL.Path, r.Header.Get("Range")
	return func() {
		e := folderRequest{Path: p, Range: rg, Start: unixSeconds(start), End: unixSeconds(time.Now())}
		reqMu.Lock()
		if len(reqLog) < maxRequests {
			reqLog = append(reqLog, e)
		} else {
			reqDropped++
		}
		reqMu.Unlock()
	}
}

// controlFerry answers the endpoints of this file; ok is false for any
// other request, which control() then handles.
func (d *double) controlFerry(ctx context.Context, r *http.Request, seg []string, q url.Values) (res interface{}, code int, err error, ok bool) {
	switch {
	case r.Method == http.MethodGet && len(seg) == 1 && seg[0] == "requests":
		reqMu.Lock()
		defer reqMu.Unlock()
		list := append([]folderRequest{}, reqLog...)
		return map[string]interface{}{"requests": list, "dropped": reqDropped}, 0, nil, true
	case r.Method == http.MethodPost && len(seg) == 2 && seg[0] == "requests" && seg[1] == "reset":
		reqMu.Lock()
		reqLog, reqDropped = nil, 0
		reqMu.Unlock()
		return nil, 0, nil, true
	case len(seg) == 2 && seg[0] == "vms" && r.Method == http.MethodDelete:
		res, code, err = d.deleteVM(ctx, seg[1])
		return res, code, err, true
	case len(seg) == 3 && seg[0] == "vms" && seg[2] == "tools" && r.Method == http.MethodPost:
		d.model.mu.Lock()
		v := d.model.vms[seg[1]]
		d.model.mu.Unlock()
		if v == nil {
			return nil, http.StatusNotFound, fmt.Errorf("no VM %q", seg[1]), true
		}
		s := q.Get("running")
		if s != "0" && s != "1" {
			return nil, 0, fmt.Errorf("running=0|1"), true
		}
		d.setTools(v, s == "1")
		return d.vmJSON(v, true), 0, nil, true
	}
	return nil, 0, nil, false
}

// setTools sets guest.toolsRunningStatus (and guest.toolsStatus) of v's VM.
func (d *double) setTools(v *vmState, running bool) {
	status := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	ts := types.VirtualMachineToolsStatusToolsNotRunning
	if running {
		status = types.VirtualMachineToolsRunningStatusGuestToolsRunning
		ts = types.VirtualMachineToolsStatusToolsOk
	}
	vm, ok := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		vm.Guest.ToolsRunningStatus = string(status)
		vm.Guest.ToolsStatus = ts
	})
	simulator.Map.Update(vm, []types.PropertyChange{
		{Name: "guest.toolsRunningStatus", Val: string(status)},
		{Name: "guest.toolsStatus", Val: ts},
	})
}

// deleteVM does what Destroy_Task does to a VM (powering it off first, as
// vSphere's UI does): the VM, its snapshots and its files are gone, so later
// SOAP calls on them get ManagedObjectNotFound and /folder reads 404.
func (d *double) deleteVM(ctx context.Context, name string) (interface{}, int, error) {
	d.model.mu.Lock()
	v := d.model.vms[name]
	if v != nil {
		delete(d.model.vms, name)
	}
	d.model.mu.Unlock()
	if v == nil {
		return nil, http.StatusNotFound, fmt.Errorf("no VM %q", name)
	}
	vmo := object.NewVirtualMachine(d.client, v.ref)
	if vm, ok := simulator.Map.Get(v.ref).(*simulator.VirtualMachine); ok &&
		vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if err := waitTask(ctx, vmo.PowerOff); err != nil {
			return nil, http.StatusInternalServerError, fmt.Errorf("%s: PowerOffVM_Task: %v", name, err)
		}
	}
	if err := waitTask(ctx, vmo.Destroy); err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("%s: Destroy_Task: %v", name, err)
	}
	d.model.mu.Lock()
	for _, s := range v.snaps {
		simulator.Map.Remove(s.ref)
	}
	for _, dk := range v.disks {
		_ = dk.base.Close()
		for _, l := range dk.layers {
			_ = l.f.Close()
		}
	}
	d.model.mu.Unlock()
	if err := os.RemoveAll(v.dir); err != nil {
		return nil, http.StatusInternalServerError, err
	}
	return map[string]string{"deleted": v.ref.Value, "name": name}, 0, nil
}
