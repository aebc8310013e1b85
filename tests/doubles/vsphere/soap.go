// SPDX-License-Identifier: Apache-2.0
// The /sdk middleware: sessions, login, stats, QueryChangedDiskAreas and
// the snapshot/reconfigure hooks that keep the disk model and vcsim's
// objects in step.
package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const internalUA = "ferry-vsphere-double-internal"

type stats struct {
	FolderBytes    int64            `json:"folder_bytes"`
	FolderRequests int64            `json:"folder_requests"`
	Partial206     int64            `json:"folder_206"`
	Folder401      int64            `json:"folder_401"`
	Faults503      int64            `json:"faults_503"`
	FaultsReset    int64            `json:"faults_reset"`
	FaultsTrunc    int64            `json:"faults_truncate"`
	FaultsInjected int64            `json:"faults_injected"`
	Logins         int64            `json:"logins"`
	LoginFailures  int64            `json:"login_failures"`
	QCDACalls      int64            `json:"qcda_calls"`
	SOAPCalls      map[string]int64 `json:"soap_calls"`
}

type double struct {
	sim   *simulator.Model
	inner http.Handler
	model *model

	client *vim25.Client
	dsName string
	dsDir  string
	dcName string // the datacenter's inventory path, as dcPath gives it
	dsRef  types.ManagedObjectReference
	dcRef  types.ManagedObjectReference
	folder types.ManagedObjectReference
	pool   types.ManagedObjectReference
	host   types.ManagedObjectReference

	mu        sync.Mutex // guards everything below
	sessions  map[string]time.Time
	st        stats
	taskDelay time.Duration
	r503      float64
	rReset    float64
	rTrunc    float64
	rng       *rand.Rand
}

func newDouble(sim *simulator.Model, inner http.Handler) *double {
	return &double{
		sim:       sim,
		inner:     inner,
		model:     newModel(),
		dsName:    opt.dsName,
		sessions:  map[string]time.Time{},
		st:        stats{SOAPCalls: map[string]int64{}},
		taskDelay: opt.taskDelay,
		r503:      opt.fault503,
		rReset:    opt.faultReset,
		rTrunc:    opt.faultTrunc,
		rng:       rand.New(rand.NewSource(opt.seed)),
	}
}

func (d *double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && (r.URL.Path == "/sdk" || r.URL.Path == "/sdk/vimService"):
		d.serveSDK(w, r)
	case strings.HasPrefix(r.URL.Path, "/folder"):
		d.serveFolder(w, r)
	default:
		d.inner.ServeHTTP(w, r)
	}
}

// sessionOK tells whether r carries a live session cookie, refreshing it.
func (d *double) sessionOK(r *http.Request) bool {
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	last, ok := d.sessions[c.Value]
	if !ok {
		return false
	}
	if time.Since(last) > opt.sessionIdle {
		delete(d.sessions, c.Value)
		return false
	}
	d.sessions[c.Value] = time.Now()
	return true
}

// stripSession removes the session cookie so vcsim sees no session.
func stripSession(r *http.Request) {
	cookies := r.Cookies()
	r.Header.Del("Cookie")
	for _, c := range cookies {
		if c.Name != soap.SessionCookieName {
			r.AddCookie(c)
		}
	}
}

func (d *double) addSession(h http.Header) string {
	resp := http.Response{Header: h}
	for _, c := range resp.Cookies() {
		if c.Name == soap.SessionCookieName {
			d.mu.Lock()
			d.sessions[c.Value] = time.Now()
			d.mu.Unlock()
			return c.Value
		}
	}
	return ""
}

func (d *double) expireSessions() {
	d.mu.Lock()
	d.sessions = map[string]time.Time{}
	d.mu.Unlock()
}

var taskRe = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)

func (d *double) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	internal := r.UserAgent() == internalUA
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		d.inner.ServeHTTP(w, r)
		return
	}
	authed := internal || d.sessionOK(r)
	if !internal {
		d.mu.Lock()
		d.st.SOAPCalls[method.Name]++
		d.mu.Unlock()
		if !authed {
			stripSession(r)
		}
	}

	switch method.Name {
	case "Login":
		req := method.Body.(*types.Login)
		if !internal {
			d.mu.Lock()
			d.st.Logins++
			d.mu.Unlock()
		}
		if req.UserName != opt.username || req.Password != opt.password {
			d.mu.Lock()
			d.st.LoginFailures++
			d.mu.Unlock()
			writeFault(w, "Cannot complete login due to an incorrect user name or password.", &types.InvalidLogin{})
			return
		}
		// A client may log in again on a dead session; vcsim refuses a
		// Login on a live one, so never show it the old cookie.
		stripSession(r)
		rec := d.forward(r)
		if !internal && rec.Code == http.StatusOK {
			d.addSession(rec.Header())
		}
		copyRecorder(w, rec)
	case "Logout":
		c, cerr := r.Cookie(soap.SessionCookieName)
		d.inner.ServeHTTP(w, r)
		if cerr == nil {
			d.mu.Lock()
			delete(d.sessions, c.Value)
			d.mu.Unlock()
		}
	case "QueryChangedDiskAreas":
		if !internal {
			d.mu.Lock()
			d.st.QCDACalls++
			d.mu.Unlock()
		}
		if !authed {
			writeFault(w, "", &types.NotAuthenticated{NoPermission: types.NoPermission{
				Object: method.This, PrivilegeId: "VirtualMachine.Provisioning.DiskRandomRead"}})
			return
		}
		d.qcda(w, r, method.Body.(*types.QueryChangedDiskAreas))
	case "CreateSnapshot_Task":
		if !authed {
			d.inner.ServeHTTP(w, r)
			return
		}
		d.createSnapshot(w, r, method.Body.(*types.CreateSnapshot_Task), internal)
	case "RemoveSnapshot_Task":
		if !authed {
			d.inner.ServeHTTP(w, r)
			return
		}
		d.removeSnapshot(w, r, method.Body.(*types.RemoveSnapshot_Task), internal)
	case "ReconfigVM_Task":
		if !authed {
			d.inner.ServeHTTP(w, r)
			return
		}
		d.reconfigure(w, r, method.Body.(*types.ReconfigVM_Task), internal)
	default:
		d.inner.ServeHTTP(w, r)
	}
}

func (d *double) forward(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	d.inner.ServeHTTP(rec, r)
	return rec
}

func copyRecorder(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func recTask(rec *httptest.ResponseRecorder) *simulator.Task {
	m := taskRe.FindSubmatch(rec.Body.Bytes())
	if m == nil {
		return nil
	}
	t, _ := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(m[1])}).(*simulator.Task)
	return t
}

const envHead = xml.Header + `<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/"` +
	` xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"` +
	` xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const envTail = `</soapenv:Body></soapenv:Envelope>`

// writeFault answers a SOAP fault shaped like vcsim's (and vCenter's).
func writeFault(w http.ResponseWriter, msg string, f types.BaseMethodFault) {
	kind := fmt.Sprintf("%T", f)
	kind = kind[strings.LastIndexByte(kind, '.')+1:]
	if msg == "" {
		msg = kind
	}
	var b bytes.Buffer
	b.WriteString(envHead + "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>")
	_ = xml.EscapeText(&b, []byte(msg))
	b.WriteString("</faultstring><detail>")
	e := xml.NewEncoder(&b)
	_ = e.EncodeElement(f, xml.StartElement{
		Name: xml.Name{Local: kind + "Fault"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
			{Name: xml.Name{Local: "xsi:type"}, Value: kind}},
	})
	_ = e.Flush()
	b.WriteString("</detail></soapenv:Fault>" + envTail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(b.Bytes())
}

func writeResponse(w http.ResponseWriter, name string, res interface{}) {
	var b bytes.Buffer
	b.WriteString(envHead)
	e := xml.NewEncoder(&b)
	_ = e.EncodeElement(res, xml.StartElement{Name: xml.Name{Space: "urn:vim25", Local: name}})
	_ = e.Flush()
	b.WriteString(envTail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

func invalidArg(prop string) *types.InvalidArgument {
	return &types.InvalidArgument{InvalidProperty: prop}
}

func (d *double) qcda(w http.ResponseWriter, r *http.Request, req *types.QueryChangedDiskAreas) {
	m := d.model
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.byRef(req.This)
	if v == nil {
		// Not one of ours: vcsim's own answer (MethodNotFound).
		d.inner.ServeHTTP(w, r)
		return
	}
	dk := v.disk(req.DeviceKey)
	if dk == nil {
		writeFault(w, "A specified parameter was not correct: deviceKey", invalidArg("deviceKey"))
		return
	}
	var level, upto int
	var cbt, live bool
	if req.Snapshot == nil {
		vm := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			writeFault(w, "A specified parameter was not correct: snapshot", invalidArg("snapshot"))
			return
		}
		level, upto, cbt, live = len(dk.layers), dk.seq, v.cbt, true
	} else {
		idx := -1
		for i, s := range v.snaps {
			if s.ref == *req.Snapshot {
				idx = i
			}
		}
		if idx < 0 {
			writeFault(w, "A specified parameter was not correct: snapshot", invalidArg("snapshot"))
			return
		}
		s := v.snaps[idx]
		level, upto, cbt = idx, s.disks[dk.key].seq, s.cbt
	}
	if !cbt {
		writeFault(w, fmt.Sprintf("Error caused by file [%s] %s/%s", d.dsOf(v), v.name, dk.headName(level)),
			&types.FileFault{File: fmt.Sprintf("[%s] %s/%s", d.dsOf(v), v.name, dk.headName(level))})
		return
	}
	if req.StartOffset < 0 || req.StartOffset >= dk.capacity {
		writeFault(w, "A specified parameter was not correct: startOffset", invalidArg("startOffset"))
		return
	}
	var bs blockSet
	if req.ChangeId == "*" {
		bs = dk.allocated(level)
	} else {
		var ok bool
		if bs, ok = dk.changedSince(req.ChangeId, upto, live); !ok {
			writeFault(w, "A specified parameter was not correct: changeId", invalidArg("changeId"))
			return
		}
	}
	end := dk.capacity
	if opt.qcdaWindow > 0 && req.StartOffset+opt.qcdaWindow < end {
		end = req.StartOffset + opt.qcdaWindow
	}
	list := areas(bs, dk.capacity, req.StartOffset, end)
	if opt.qcdaMax > 0 && len(list) > opt.qcdaMax {
		list = list[:opt.qcdaMax]
		last := list[len(list)-1]
		end = last.Start + last.Length
	}
	writeResponse(w, "QueryChangedDiskAreasResponse", &types.QueryChangedDiskAreasResponse{
		Returnval: types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset, ChangedArea: list},
	})
}

// vmodlNames are vSphere's TaskInfo name and descriptionId: the name is
// the WSDL method name.  vcsim writes "CreateSnapshot", which pyvmomi
// cannot resolve while the task is running.
var vmodlNames = map[string][2]string{
	"CreateSnapshot_Task": {"CreateSnapshot_Task", "VirtualMachine.createSnapshot"},
	"RemoveSnapshot_Task": {"RemoveSnapshot_Task", "vm.Snapshot.remove"},
	"ReconfigVM_Task":     {"ReconfigVM_Task", "VirtualMachine.reconfigure"},
}

// delayTask fixes t's name and makes it look running until the task delay
// has passed.
func (d *double) delayTask(t *simulator.Task, internal bool, method string) {
	if t == nil {
		return
	}
	if n, ok := vmodlNames[method]; ok {
		info := t.Info
		info.Name, info.DescriptionId = n[0], n[1]
		simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: info}})
	}
	d.mu.Lock()
	delay := d.taskDelay
	d.mu.Unlock()
	if internal || delay <= 0 {
		return
	}
	final := t.Info
	running := final
	running.State = types.TaskInfoStateRunning
	running.Progress = 0
	running.Result = nil
	running.Error = nil
	running.CompleteTime = nil
	simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: running}})
	go func() {
		start := time.Now()
		for {
			el := time.Since(start)
			if el >= delay {
				break
			}
			running.Progress = int32(100 * el / delay)
			simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: running}})
			time.Sleep(delay / 10)
		}
		now := time.Now()
		final.CompleteTime = &now
		simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: final}})
	}()
}

func (d *double) createSnapshot(w http.ResponseWriter, r *http.Request, req *types.CreateSnapshot_Task, internal bool) {
	m := d.model
	m.mu.Lock()
	v := m.byRef(req.This)
	if v == nil {
		m.mu.Unlock()
		d.inner.ServeHTTP(w, r)
		return
	}
	rec := d.forward(r)
	t := recTask(rec)
	if t != nil && t.Info.State == types.TaskInfoStateSuccess {
		if ref, ok := t.Info.Result.(types.ManagedObjectReference); ok {
			if err := d.afterSnapshot(v, ref, req.Name); err != nil {
				final := t.Info
				final.State = types.TaskInfoStateError
				final.Error = &types.LocalizedMethodFault{Fault: &types.FileFault{}, LocalizedMessage: err.Error()}
				simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: final}})
			}
		}
	}
	m.mu.Unlock()
	d.delayTask(t, internal, "CreateSnapshot_Task")
	if loseCreateAnswer(w, internal) {
		return
	}
	copyRecorder(w, rec)
}

// afterSnapshot updates the model after vcsim made snapshot ref of v.
func (d *double) afterSnapshot(v *vmState, ref types.ManagedObjectReference, name string) error {
	s := &snap{ref: ref, name: name, cbt: v.cbt, disks: map[int32]snapDisk{}}
	for _, dk := range v.disks {
		if v.cbt {
			dk.cbtSnapshot()
		}
		s.disks[dk.key] = snapDisk{changeID: dk.changeID(), seq: dk.seq}
		if err := v.addOverlay(dk); err != nil {
			return err
		}
	}
	v.snaps = append(v.snaps, s)
	d.syncDevices(v)
	return nil
}

func (d *double) removeSnapshot(w http.ResponseWriter, r *http.Request, req *types.RemoveSnapshot_Task, internal bool) {
	m := d.model
	m.mu.Lock()
	v, idx := m.bySnap(req.This)
	var err error
	if v != nil {
		last := idx
		if req.RemoveChildren {
			last = len(v.snaps) - 1
		}
		for i := last; i >= idx && err == nil; i-- {
			for _, dk := range v.disks {
				if err = dk.mergeDown(i); err != nil {
					break
				}
			}
			v.snaps = append(v.snaps[:i], v.snaps[i+1:]...)
		}
	}
	rec := d.forward(r)
	t := recTask(rec)
	if v != nil {
		d.syncDevices(v)
	}
	m.mu.Unlock()
	if t != nil {
		// vcsim names the snapshot as the task's entity; vSphere (and
		// pyvmomi's TaskInfo parser) want the VM.
		if sn, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachineSnapshot); ok || v != nil {
			info := t.Info
			vmRef := types.ManagedObjectReference{}
			if v != nil {
				vmRef = v.ref
			} else {
				vmRef = sn.Vm
			}
			info.Entity = &vmRef
			if vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine); ok {
				info.EntityName = vm.Name
			}
			if err != nil && info.State == types.TaskInfoStateSuccess {
				info.State = types.TaskInfoStateError
				info.Error = &types.LocalizedMethodFault{Fault: &types.FileFault{}, LocalizedMessage: err.Error()}
			}
			simulator.Map.Update(t, []types.PropertyChange{{Name: "info", Val: info}})
		}
	}
	d.delayTask(t, internal, "RemoveSnapshot_Task")
	copyRecorder(w, rec)
}

func (d *double) reconfigure(w http.ResponseWriter, r *http.Request, req *types.ReconfigVM_Task, internal bool) {
	// vcsim 0.24.2 dereferences deviceInfo on edit without checking.
	for _, dc := range req.Spec.DeviceChange {
		spec := dc.GetVirtualDeviceConfigSpec()
		if spec.Operation == types.VirtualDeviceConfigSpecOperationEdit &&
			(spec.Device == nil || spec.Device.GetVirtualDevice().DeviceInfo == nil) {
			writeFault(w, "A specified parameter was not correct: deviceChange.device.deviceInfo",
				invalidArg("deviceChange.device.deviceInfo"))
			return
		}
	}
	m := d.model
	m.mu.Lock()
	rec := d.forward(r)
	t := recTask(rec)
	if v := m.byRef(req.This); v != nil && t != nil && t.Info.State == types.TaskInfoStateSuccess &&
		req.Spec.ChangeTrackingEnabled != nil {
		d.setCBT(v, *req.Spec.ChangeTrackingEnabled)
	}
	m.mu.Unlock()
	d.delayTask(t, internal, "ReconfigVM_Task")
	copyRecorder(w, rec)
}

// setCBT switches change tracking; turning it on starts a new CBT identity.
func (d *double) setCBT(v *vmState, on bool) {
	if on && !v.cbt {
		for _, dk := range v.disks {
			dk.cbtReset()
		}
	}
	v.cbt = on
	vm := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() { vm.Config.ChangeTrackingEnabled = types.NewBool(on) })
	d.syncDevices(v)
}

// syncDevices rewrites the disks in vcsim's VM and snapshot configs from
// the model: file names of the chain heads and changeIds.
func (d *double) syncDevices(v *vmState) {
	vm := simulator.Map.Get(v.ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			dk := v.disk(vd.Key)
			if dk == nil {
				continue
			}
			b := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			b.FileName = fmt.Sprintf("[%s] %s/%s", d.dsOf(v), v.name, dk.headName(len(dk.layers)))
			b.ChangeId = ""
			if v.cbt {
				b.ChangeId = dk.changeID()
			}
		}
	})
	for i, s := range v.snaps {
		so, ok := simulator.Map.Get(s.ref).(*simulator.VirtualMachineSnapshot)
		if !ok {
			continue
		}
		devs := make([]types.BaseVirtualDevice, 0, len(vm.Config.Hardware.Device))
		for _, dev := range vm.Config.Hardware.Device {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				devs = append(devs, dev)
				continue
			}
			c := *vd
			b := *vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			c.Backing = &b
			if dk := v.disk(vd.Key); dk != nil {
				b.FileName = fmt.Sprintf("[%s] %s/%s", d.dsOf(v), v.name, dk.headName(i))
				b.ChangeId = ""
				if s.cbt {
					b.ChangeId = s.disks[dk.key].changeID
				}
			}
			devs = append(devs, &c)
		}
		simulator.Map.WithLock(so, func() {
			cfg := so.Config
			cfg.Hardware.Device = devs
			cfg.ChangeTrackingEnabled = types.NewBool(s.cbt)
			so.Config = cfg
		})
	}
}
