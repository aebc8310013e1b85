// SPDX-License-Identifier: Apache-2.0
// The control channel (plain HTTP, test only) and the inventory setup.
//
// Operations that vSphere itself would do (create VM, power, snapshot,
// CBT switch) go through an in-process govmomi client over /sdk, so the
// same middleware hooks apply as for a real client.  That client is
// recognised by its User-Agent and is exempt from session expiry, stats
// and task delays.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func (d *double) sessionManager() string {
	return simulator.Map.SessionManager().Self.Value
}

// setup logs the internal client in and adds our datastore.
func (d *double) setup(ctx context.Context, sdk, ca string) error {
	u, err := url.Parse(sdk)
	if err != nil {
		return err
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(ca); err != nil {
		return err
	}
	sc.UserAgent = internalUA
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return err
	}
	if err := session.NewManager(vc).Login(ctx, url.UserPassword(opt.username, opt.password)); err != nil {
		return err
	}
	d.client = vc
	finder := find.NewFinder(vc, false)
	dc, err := finder.DatacenterOrDefault(ctx, "")
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	d.dcRef = dc.Reference()
	var host *object.HostSystem
	if opt.esx {
		host, err = finder.DefaultHostSystem(ctx)
	} else {
		host, err = finder.HostSystem(ctx, "DC0_H0")
	}
	if err != nil {
		return err
	}
	d.host = host.Reference()
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		return err
	}
	d.pool = pool.Reference()
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	d.folder = folders.VmFolder.Reference()
	d.dsDir = filepath.Join(opt.dir, "datastores", d.dsName)
	if err := os.MkdirAll(d.dsDir, 0o755); err != nil {
		return err
	}
	hds, err := host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return err
	}
	ds, err := hds.CreateLocalDatastore(ctx, d.dsName, d.dsDir)
	if err != nil {
		return err
	}
	d.dsRef = ds.Reference()
	return nil
}

func (d *double) controlHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var seg []string
		for _, s := range strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/") {
			u, err := url.PathUnescape(s)
			if err != nil {
				http.Error(w, "bad path", http.StatusBadRequest)
				return
			}
			seg = append(seg, u)
		}
		res, code, err := d.control(w, r, seg)
		if err == errStreamed {
			return
		}
		if err != nil {
			if code == 0 {
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if res == nil {
			res = map[string]bool{"ok": true}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	})
}

func (d *double) control(w http.ResponseWriter, r *http.Request, seg []string) (interface{}, int, error) {
	q := r.URL.Query()
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	post := r.Method == http.MethodPost
	if res, code, err, ok := d.controlFerry(ctx, r, seg, q); ok {
		return res, code, err
	}
	switch {
	case post && len(seg) == 1 && seg[0] == "vms":
		return d.createVM(ctx, q)
	case len(seg) >= 2 && seg[0] == "vms":
		d.model.mu.Lock()
		v := d.model.vms[seg[1]]
		d.model.mu.Unlock()
		if v == nil {
			return nil, http.StatusNotFound, fmt.Errorf("no VM %q", seg[1])
		}
		return d.vmControl(ctx, w, r, v, seg[2:], q)
	case post && len(seg) == 2 && seg[0] == "sessions" && seg[1] == "expire":
		d.expireSessions()
		return nil, 0, nil
	case post && len(seg) == 1 && seg[0] == "faults":
		d.mu.Lock()
		defer d.mu.Unlock()
		for k, p := range map[string]*float64{"r503": &d.r503, "reset": &d.rReset, "truncate": &d.rTrunc} {
			if s := q.Get(k); s != "" {
				f, err := strconv.ParseFloat(s, 64)
				if err != nil || f < 0 || f > 1 {
					return nil, 0, fmt.Errorf("%s=%s: want a rate 0..1", k, s)
				}
				*p = f
			}
		}
		return map[string]float64{"r503": d.r503, "reset": d.rReset, "truncate": d.rTrunc}, 0, nil
	case post && len(seg) == 1 && seg[0] == "inject":
		return d.inject(q)
	case post && len(seg) == 1 && seg[0] == "tasks":
		dl, err := time.ParseDuration(q.Get("delay"))
		if err != nil {
			return nil, 0, fmt.Errorf("delay: %v", err)
		}
		d.mu.Lock()
		d.taskDelay = dl
		d.mu.Unlock()
		return map[string]string{"delay": dl.String()}, 0, nil
	case r.Method == http.MethodGet && len(seg) == 1 && seg[0] == "stats":
		d.mu.Lock()
		defer d.mu.Unlock()
		st := d.st
		st.SOAPCalls = map[string]int64{}
		for k, v := range d.st.SOAPCalls {
			st.SOAPCalls[k] = v
		}
		return st, 0, nil
	case post && len(seg) == 2 && seg[0] == "stats" && seg[1] == "reset":
		d.mu.Lock()
		d.st = stats{SOAPCalls: map[string]int64{}}
		d.mu.Unlock()
		return nil, 0, nil
	}
	return nil, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path)
}

var errStreamed = errors.New("streamed")

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	case strings.HasSuffix(s, "T"):
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func diskUUID() string {
	u := uuid.New().String()
	return "6000C29" + u[7:]
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func (d *double) createVM(ctx context.Context, q url.Values) (interface{}, int, error) {
	name := q.Get("name")
	if name == "" || strings.ContainsAny(name, "/[]") || name == "." || name == ".." {
		return nil, 0, fmt.Errorf("name: missing or contains / [ ]")
	}
	sizes := []int64{1 << 30}
	if s := q.Get("disks"); s != "" {
		sizes = nil
		for _, p := range strings.Split(s, ",") {
			n, err := parseSize(p)
			if err != nil {
				return nil, 0, err
			}
			sizes = append(sizes, n)
		}
	}
	intParam := func(k string, def int) (int, error) {
		if s := q.Get(k); s != "" {
			return strconv.Atoi(s)
		}
		return def, nil
	}
	cpus, err1 := intParam("cpus", 2)
	mem, err2 := intParam("memory", 2048)
	nsnap, err3 := intParam("snapshots", 0)
	for _, e := range []error{err1, err2, err3} {
		if e != nil {
			return nil, 0, e
		}
	}
	fw := q.Get("firmware")
	if fw == "" {
		fw = "bios"
	}
	if fw != "bios" && fw != "efi" {
		return nil, 0, fmt.Errorf("firmware=%s: want bios or efi", fw)
	}
	cbt := q.Get("cbt") == "1" || q.Get("cbt") == "true"
	power := q.Get("power")

	d.model.mu.Lock()
	if d.model.vms[name] != nil {
		d.model.mu.Unlock()
		return nil, http.StatusConflict, fmt.Errorf("VM %q exists", name)
	}
	hostRef, poolRef, dsRef, dsName, dsDir, err := d.placement(ctx, q.Get("host"), q.Get("datastore"))
	if err != nil {
		return nil, http.StatusNotFound, err
	}
	v := &vmState{name: name, dir: filepath.Join(dsDir, name), ds: dsName}
	d.model.vms[name] = v // reserve the name
	d.model.mu.Unlock()
	fail := func(err error) (interface{}, int, error) {
		d.model.mu.Lock()
		delete(d.model.vms, name)
		d.model.mu.Unlock()
		return nil, http.StatusInternalServerError, err
	}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return fail(err)
	}

	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1000}, BusNumber: 0},
		SharedBus:         types.VirtualSCSISharingNoSharing}}
	changes := []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl}}
	for i, size := range sizes {
		stem := name
		if i > 0 {
			stem = fmt.Sprintf("%s_%d", name, i)
		}
		dk := &disk{key: int32(2000 + i), label: fmt.Sprintf("Hard disk %d", i+1), stem: stem, dir: v.dir,
			capacity: size, uuid: diskUUID(), cur: blockSet{}, epochs: map[int]blockSet{}}
		f, err := os.OpenFile(dk.flatPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fail(err)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return fail(err)
		}
		dk.base = f
		desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n"+
			"RW %d VMFS \"%s-flat.vmdk\"\n\nddb.adapterType = \"lsilogic\"\nddb.uuid = \"%s\"\nddb.virtualHWVersion = \"13\"\n",
			randHex(4), size/512, stem, dk.uuid)
		if err := os.WriteFile(filepath.Join(v.dir, stem+".vmdk"), []byte(desc), 0o644); err != nil {
			return fail(err)
		}
		v.disks = append(v.disks, dk)
		unit := int32(i)
		if unit >= 7 {
			unit++ // unit 7 is the controller's own
		}
		ds := dsRef
		changes = append(changes, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device: &types.VirtualDisk{
				VirtualDevice: types.VirtualDevice{
					Key:           dk.key,
					ControllerKey: 1000,
					UnitNumber:    &unit,
					DeviceInfo:    &types.Description{Label: dk.label, Summary: fmt.Sprintf("%d KB", size/1024)},
					Backing: &types.VirtualDiskFlatVer2BackingInfo{
						VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
							FileName:  fmt.Sprintf("[%s] %s/%s.vmdk", dsName, name, stem),
							Datastore: &ds,
						},
						DiskMode:        string(types.VirtualDiskModePersistent),
						ThinProvisioned: types.NewBool(true),
						Uuid:            dk.uuid,
					},
				},
				CapacityInKB:    size / 1024,
				CapacityInBytes: size,
			},
		})
	}
	nics, err := d.makeNICs(ctx, q.Get("nics"))
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	for _, nic := range nics {
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: nic})
	}

	spec := types.VirtualMachineConfigSpec{
		Name:                  name,
		GuestId:               "otherGuest64",
		NumCPUs:               int32(cpus),
		MemoryMB:              int64(mem),
		Firmware:              fw,
		Uuid:                  uuid.New().String(),
		InstanceUuid:          "50" + uuid.New().String()[2:],
		Version:               "vmx-13",
		ChangeTrackingEnabled: types.NewBool(cbt),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", dsName, name, name)},
		DeviceChange:          changes,
	}
	folder := object.NewFolder(d.client, d.folder)
	pool := object.NewResourcePool(d.client, poolRef)
	host := object.NewHostSystem(d.client, hostRef)
	task, err := folder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		return fail(err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return fail(fmt.Errorf("CreateVM: %v", err))
	}
	ref := info.Result.(types.ManagedObjectReference)

	d.model.mu.Lock()
	v.ref = ref
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			if vd, ok := dev.(*types.VirtualDisk); ok {
				if dk := v.disk(vd.Key); dk != nil {
					vd.DeviceInfo = &types.Description{Label: dk.label, Summary: fmt.Sprintf("%d KB", dk.capacity/1024)}
					vd.DiskObjectId = fmt.Sprintf("%s-%d", strings.TrimPrefix(ref.Value, "vm-"), vd.Key)
					vd.CapacityInBytes = dk.capacity
					vd.CapacityInKB = dk.capacity / 1024
				}
			}
		}
	})
	if cbt {
		d.setCBT(v, true)
	} else {
		d.syncDevices(v)
	}
	d.model.mu.Unlock()

	vmo := object.NewVirtualMachine(d.client, ref)
	if power == "on" {
		if err := waitTask(ctx, vmo.PowerOn); err != nil {
			return nil, http.StatusInternalServerError, err
		}
	}
	d.setTools(v, q.Get("tools") == "1")
	for k := 1; k <= nsnap; k++ {
		t, err := vmo.CreateSnapshot(ctx, fmt.Sprintf("user-snap-%d", k), "", false, false)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
	}
	return d.vmJSON(v, false), 0, nil
}

func waitTask(ctx context.Context, f func(context.Context) (*object.Task, error)) error {
	t, err := f(ctx)
	if err != nil {
		return err
	}
	return t.Wait(ctx)
}

type diskJSON struct {
	Key      int32  `json:"key"`
	Label    string `json:"label"`
	FileName string `json:"fileName"`
	Flat     string `json:"flat"`
	Capacity int64  `json:"capacity"`
	UUID     string `json:"uuid"`
	ChangeID string `json:"changeId,omitempty"`
}

type snapJSON struct {
	Moref     string            `json:"moref"`
	Name      string            `json:"name"`
	ChangeIDs map[string]string `json:"changeIds,omitempty"`
}

func (d *double) vmJSON(v *vmState, full bool) map[string]interface{} {
	d.model.mu.Lock()
	defer d.model.mu.Unlock()
	vm := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
	res := map[string]interface{}{
		"moref": v.ref.Value, "name": v.name, "uuid": vm.Config.Uuid, "instanceUuid": vm.Config.InstanceUuid,
	}
	var disks []diskJSON
	changeIDs := map[string]string{}
	for _, dk := range v.disks {
		dj := diskJSON{Key: dk.key, Label: dk.label, Flat: dk.flatPath(), Capacity: dk.capacity, UUID: dk.uuid,
			FileName: fmt.Sprintf("[%s] %s/%s", d.dsOf(v), v.name, dk.headName(len(dk.layers)))}
		if v.cbt {
			dj.ChangeID = dk.changeID()
			changeIDs[strconv.Itoa(int(dk.key))] = dk.changeID()
		}
		disks = append(disks, dj)
	}
	res["disks"] = disks
	if full {
		res["powerState"] = vm.Runtime.PowerState
		res["cbt"] = v.cbt
		res["changeIds"] = changeIDs
		snaps := []snapJSON{}
		for _, s := range v.snaps {
			sj := snapJSON{Moref: s.ref.Value, Name: s.name, ChangeIDs: map[string]string{}}
			if s.cbt {
				for k, sd := range s.disks {
					sj.ChangeIDs[strconv.Itoa(int(k))] = sd.changeID
				}
			}
			snaps = append(snaps, sj)
		}
		res["snapshots"] = snaps
	}
	return res
}

// makeNICs: "MODEL:NETWORK,..." (MODEL vmxnet3, e1000, e1000e; default one vmxnet3 on
// "VM Network") as Ethernet cards on standard port groups, each port group made on the
// host's vSwitch0 when it does not exist yet.
func (d *double) makeNICs(ctx context.Context, spec string) ([]types.BaseVirtualDevice, error) {
	if spec == "" {
		spec = "vmxnet3:VM Network"
	}
	var out []types.BaseVirtualDevice
	for i, item := range strings.Split(spec, ",") {
		parts := strings.SplitN(item, ":", 2)
		if len(parts) != 2 || parts[1] == "" {
			return nil, fmt.Errorf("nics: %q: want MODEL:NETWORK", item)
		}
		if err := d.ensurePortGroup(ctx, parts[1]); err != nil {
			return nil, err
		}
		card := types.VirtualEthernetCard{
			VirtualDevice: types.VirtualDevice{
				Key: int32(4000 + i),
				Backing: &types.VirtualEthernetCardNetworkBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: parts[1]}},
			},
			AddressType: string(types.VirtualEthernetCardMacTypeGenerated),
		}
		switch parts[0] {
		case "vmxnet3":
			out = append(out, &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: card}})
		case "e1000":
			out = append(out, &types.VirtualE1000{VirtualEthernetCard: card})
		case "e1000e":
			out = append(out, &types.VirtualE1000e{VirtualEthernetCard: card})
		default:
			return nil, fmt.Errorf("nics: model %q: want vmxnet3, e1000 or e1000e", parts[0])
		}
	}
	return out, nil
}

func (d *double) ensurePortGroup(ctx context.Context, name string) error {
	ns, err := object.NewHostSystem(d.client, d.host).ConfigManager().NetworkSystem(ctx)
	if err != nil {
		return err
	}
	err = ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: name, VswitchName: "vSwitch0",
		Policy: types.HostNetworkPolicy{}})
	if err != nil && !strings.Contains(err.Error(), "already exists") &&
		!strings.Contains(err.Error(), "DuplicateName") {
		return fmt.Errorf("port group %q: %v", name, err)
	}
	return nil
}
