// SPDX-License-Identifier: Apache-2.0
// One-shot and timing faults for the snapshot lifecycle tests: a CreateSnapshot_Task
// that makes the snapshot but whose answer is lost, and slow /folder reads.
package main

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

var injected struct {
	mu sync.Mutex
	// The next CreateSnapshot_Task over SOAP makes the snapshot, then answers
	// with a fault ("fault") or resets the connection ("drop").
	createSnapshot string
	folderDelay    time.Duration // before every /folder answer
}

// inject serves POST /inject?create-snapshot=fault|drop|none&folder-delay=DURATION
// &linked-clone=VM.
func (d *double) inject(q url.Values) (interface{}, int, error) {
	if name := q.Get("linked-clone"); name != "" {
		if err := d.linkClone(name); err != nil {
			return nil, http.StatusNotFound, err
		}
	}
	injected.mu.Lock()
	defer injected.mu.Unlock()
	if s := q.Get("create-snapshot"); s != "" {
		switch s {
		case "fault", "drop":
			injected.createSnapshot = s
		case "none":
			injected.createSnapshot = ""
		default:
			return nil, 0, fmt.Errorf("create-snapshot=%s: want fault, drop or none", s)
		}
	}
	if s := q.Get("folder-delay"); s != "" {
		dl, err := time.ParseDuration(s)
		if err != nil {
			return nil, 0, fmt.Errorf("folder-delay: %v", err)
		}
		injected.folderDelay = dl
	}
	return map[string]string{"create-snapshot": injected.createSnapshot,
		"folder-delay": injected.folderDelay.String()}, 0, nil
}

// loseCreateAnswer answers a CreateSnapshot_Task whose snapshot was made as
// asked by /inject; true when it did (the caller must not answer).
func loseCreateAnswer(w http.ResponseWriter, internal bool) bool {
	injected.mu.Lock()
	mode := injected.createSnapshot
	if !internal {
		injected.createSnapshot = ""
	}
	injected.mu.Unlock()
	switch {
	case internal || mode == "":
		return false
	case mode == "fault":
		writeFault(w, "A general system error occurred: injected by the double after the snapshot was made",
			&types.SystemError{Reason: "injected"})
	default:
		resetConn(w)
	}
	return true
}

func folderDelay() {
	injected.mu.Lock()
	dl := injected.folderDelay
	injected.mu.Unlock()
	time.Sleep(dl)
}

// linkClone makes the disks of VM name look like a linked clone's: their backing
// has a parent (a base disk of another VM), as a delta disk's has.
func (d *double) linkClone(name string) error {
	d.model.mu.Lock()
	v := d.model.vms[name]
	d.model.mu.Unlock()
	if v == nil {
		return fmt.Errorf("no VM %q", name)
	}
	vm := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			if vd, ok := dev.(*types.VirtualDisk); ok {
				b := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
				b.Parent = &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[%s] template/template.vmdk", d.dsName)},
					DiskMode: "persistent",
				}
			}
		}
	})
	return nil
}
