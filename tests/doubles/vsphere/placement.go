// SPDX-License-Identifier: Apache-2.0
// VMs on other hosts and datastores than the default ones, for the tests of ferry kube's
// sharding: POST /vms?...&host=DC0_C0_H0&datastore=NAME.  A datastore is made on first
// use, local to the host of the VM that first names it, in DIR/datastores/NAME; vcsim's
// inventory then reports the VM's runtime.host and its disks' backing datastore.
//
// THREAD MODEL: extraDS has its own mutex (placeMu), never held with another lock.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type dsPlace struct {
	ref types.ManagedObjectReference
	dir string
}

var (
	placeMu sync.Mutex
	extraDS = map[string]dsPlace{}
)

// placement resolves createVM's host= and datastore= (empty: the defaults), the
// datastore mounted on the host (vcsim looks a VM's files up among its host's).
func (d *double) placement(ctx context.Context, hostName, dsName string) (host, pool, ds types.ManagedObjectReference, name, dir string, err error) {
	host, pool, ds, name, dir, err = d.findPlacement(ctx, hostName, dsName)
	if err == nil {
		h := simulator.Map.Get(host).(*simulator.HostSystem)
		simulator.Map.WithLock(h, func() {
			for _, r := range h.Datastore {
				if r == ds {
					return
				}
			}
			h.Datastore = append(h.Datastore, ds)
		})
	}
	return
}

func (d *double) findPlacement(ctx context.Context, hostName, dsName string) (host, pool, ds types.ManagedObjectReference, name, dir string, err error) {
	host, pool, ds, name, dir = d.host, d.pool, d.dsRef, d.dsName, d.dsDir
	if hostName != "" {
		finder := find.NewFinder(d.client, false)
		finder.SetDatacenter(object.NewDatacenter(d.client, d.dcRef))
		h, e := finder.HostSystem(ctx, hostName)
		if e != nil {
			return host, pool, ds, name, dir, fmt.Errorf("host=%s: %v", hostName, e)
		}
		p, e := h.ResourcePool(ctx)
		if e != nil {
			return host, pool, ds, name, dir, fmt.Errorf("host=%s: %v", hostName, e)
		}
		host, pool = h.Reference(), p.Reference()
	}
	if dsName == "" || dsName == d.dsName {
		return host, pool, ds, name, dir, nil
	}
	if strings.ContainsAny(dsName, "/[]") {
		return host, pool, ds, name, dir, fmt.Errorf("datastore=%s: contains / [ ]", dsName)
	}
	placeMu.Lock()
	defer placeMu.Unlock()
	if p, ok := extraDS[dsName]; ok {
		return host, pool, p.ref, dsName, p.dir, nil
	}
	dir = filepath.Join(opt.dir, "datastores", dsName)
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	hds, err := object.NewHostSystem(d.client, host).ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return
	}
	created, err := hds.CreateLocalDatastore(ctx, dsName, dir)
	if err != nil {
		return host, pool, ds, name, dir, fmt.Errorf("datastore=%s: %v", dsName, err)
	}
	extraDS[dsName] = dsPlace{created.Reference(), dir}
	return host, pool, created.Reference(), dsName, dir, nil
}

// dsDirOf is the directory of the datastore NAME, "" when the double has none.
func (d *double) dsDirOf(name string) string {
	if name == d.dsName {
		return d.dsDir
	}
	placeMu.Lock()
	defer placeMu.Unlock()
	return extraDS[name].dir
}

// dsOf is the datastore holding V's files.
func (d *double) dsOf(v *vmState) string {
	if v.ds == "" {
		return d.dsName
	}
	return v.ds
}
