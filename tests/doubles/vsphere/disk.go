// SPDX-License-Identifier: Apache-2.0
// The disk model: base flat files, snapshot overlays and the CBT journal.
//
// A disk is its base NAME-flat.vmdk plus one overlay per snapshot.  With
// snapshots S1..Sn the chain is base <- O1 <- ... <- On (live); snapshot Sk
// sees base+O1..O(k-1), the guest sees everything.  Overlays are sparse files
// with the disk's offsets and a set of the 64 KiB blocks they hold (the first
// write to a block copies it up from below).  Removing Sk merges Ok into the
// layer below it, as consolidation does.
//
// CBT: each disk has a CBT uuid and a sequence; changeId = "uuid/seq".  The
// blocks written while the sequence is s form epoch s; a snapshot closes the
// current epoch and bumps the sequence.  Changes between changeId a and a
// snapshot taken at sequence b are the union of epochs a..b-1.
//
// THREAD MODEL: everything here runs under model.mu.
package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/vim25/types"
)

const blockSize = 64 << 10

type blockSet map[int64]struct{}

type overlay struct {
	path string
	f    *os.File
	has  blockSet
}

type disk struct {
	key      int32
	label    string
	stem     string // "NAME" or "NAME_1": file names are STEM.vmdk, STEM-flat.vmdk
	dir      string // VM directory (absolute)
	capacity int64
	uuid     string // backing.uuid
	base     *os.File
	layers   []*overlay

	cbtUUID  string
	seq      int
	firstSeq int
	cur      blockSet
	epochs   map[int]blockSet
}

type snapDisk struct {
	changeID string
	seq      int
}

type snap struct {
	ref   types.ManagedObjectReference
	name  string
	cbt   bool
	disks map[int32]snapDisk
}

type vmState struct {
	name   string
	ds     string // its datastore, "" = the double's default (placement.go)
	ref    types.ManagedObjectReference
	dir    string
	cbt    bool
	disks  []*disk
	snaps  []*snap
	ovlCtr int
}

type model struct {
	mu  sync.Mutex
	vms map[string]*vmState // by name
}

func newModel() *model { return &model{vms: map[string]*vmState{}} }

func (m *model) byRef(ref types.ManagedObjectReference) *vmState {
	for _, v := range m.vms {
		if v.ref == ref {
			return v
		}
	}
	return nil
}

func (m *model) bySnap(ref types.ManagedObjectReference) (*vmState, int) {
	for _, v := range m.vms {
		for i, s := range v.snaps {
			if s.ref == ref {
				return v, i
			}
		}
	}
	return nil, -1
}

func (m *model) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.vms {
		for _, d := range v.disks {
			_ = d.base.Close()
			for _, l := range d.layers {
				_ = l.f.Close()
			}
		}
	}
}

func (v *vmState) disk(key int32) *disk {
	for _, d := range v.disks {
		if d.key == key {
			return d
		}
	}
	return nil
}

func (d *disk) flatPath() string { return filepath.Join(d.dir, d.stem+"-flat.vmdk") }

// headName is the descriptor name of the chain head seen at level l.
func (d *disk) headName(l int) string {
	if l == 0 {
		return d.stem + ".vmdk"
	}
	return fmt.Sprintf("%s-%06d.vmdk", d.stem, l)
}

func newCBTUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] = 0x52 // vSphere's CBT uuids start so
	var s strings.Builder
	for i, c := range b {
		switch {
		case i == 8:
			s.WriteByte('-')
		case i > 0:
			s.WriteByte(' ')
		}
		fmt.Fprintf(&s, "%02x", c)
	}
	return s.String()
}

func (d *disk) changeID() string { return fmt.Sprintf("%s/%d", d.cbtUUID, d.seq) }

// cbtReset gives the disk a new CBT identity: old changeIds become unknown.
func (d *disk) cbtReset() {
	d.cbtUUID = newCBTUUID()
	d.seq = 1
	d.firstSeq = 1
	d.cur = blockSet{}
	d.epochs = map[int]blockSet{}
}

// cbtSnapshot closes the current epoch.
func (d *disk) cbtSnapshot() {
	d.epochs[d.seq] = d.cur
	d.cur = blockSet{}
	d.seq++
}

func blocksOf(off, n int64) (int64, int64) {
	return off / blockSize, (off + n - 1) / blockSize
}

// readLevel reads p at off as seen with the first l overlays applied.
func (d *disk) readLevel(l int, p []byte, off int64) error {
	for len(p) > 0 {
		b := off / blockSize
		n := (b+1)*blockSize - off
		if n > int64(len(p)) {
			n = int64(len(p))
		}
		f := d.base
		for j := l - 1; j >= 0; j-- {
			if _, ok := d.layers[j].has[b]; ok {
				f = d.layers[j].f
				break
			}
		}
		// Extend the run while the following blocks come from the same file.
		for off+n < off+int64(len(p)) {
			nb := (off + n) / blockSize
			g := d.base
			for j := l - 1; j >= 0; j-- {
				if _, ok := d.layers[j].has[nb]; ok {
					g = d.layers[j].f
					break
				}
			}
			if g != f {
				break
			}
			n += blockSize
			if n > int64(len(p)) {
				n = int64(len(p))
			}
		}
		if err := readFull(f, p[:n], off); err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

func readFull(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err == io.EOF {
		for i := n; i < len(p); i++ {
			p[i] = 0
		}
		return nil
	}
	return err
}

// write is a guest write: it goes to the top overlay if there is one, and
// is journalled when CBT is on.
func (d *disk) write(p []byte, off int64, cbt bool) error {
	if off < 0 || off+int64(len(p)) > d.capacity {
		return fmt.Errorf("write [%d, +%d) beyond capacity %d", off, len(p), d.capacity)
	}
	if len(p) == 0 {
		return nil
	}
	first, last := blocksOf(off, int64(len(p)))
	if cbt {
		for b := first; b <= last; b++ {
			d.cur[b] = struct{}{}
		}
	}
	if len(d.layers) == 0 {
		_, err := d.base.WriteAt(p, off)
		return err
	}
	top := d.layers[len(d.layers)-1]
	buf := make([]byte, blockSize)
	for b := first; b <= last; b++ {
		if _, ok := top.has[b]; ok {
			continue
		}
		// Copy up the parts of the block the write does not cover.
		bs, be := b*blockSize, (b+1)*blockSize
		if be > d.capacity {
			be = d.capacity
		}
		if bs >= off && be <= off+int64(len(p)) {
			top.has[b] = struct{}{}
			continue
		}
		if err := d.readLevel(len(d.layers)-1, buf[:be-bs], bs); err != nil {
			return err
		}
		if _, err := top.f.WriteAt(buf[:be-bs], bs); err != nil {
			return err
		}
		top.has[b] = struct{}{}
	}
	_, err := top.f.WriteAt(p, off)
	return err
}

// copyFrom places the data regions of file src at off, as guest writes.
func (d *disk) copyFrom(src string, off int64, cbt bool) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if off+st.Size() > d.capacity {
		return fmt.Errorf("%s: %d bytes at %d beyond capacity %d", src, st.Size(), off, d.capacity)
	}
	buf := make([]byte, 8<<20)
	for _, e := range dataExtents(f, st.Size()) {
		for pos := e[0]; pos < e[1]; {
			n := e[1] - pos
			if n > int64(len(buf)) {
				n = int64(len(buf))
			}
			if _, err := f.ReadAt(buf[:n], pos); err != nil && err != io.EOF {
				return err
			}
			if err := d.write(buf[:n], off+pos, cbt); err != nil {
				return err
			}
			pos += n
		}
	}
	return nil
}

// dataExtents lists [start,end) data regions of f with SEEK_DATA/SEEK_HOLE.
func dataExtents(f *os.File, size int64) [][2]int64 {
	var out [][2]int64
	fd := int(f.Fd())
	for pos := int64(0); pos < size; {
		s, err := syscall.Seek(fd, pos, 3) // SEEK_DATA
		if err != nil || s >= size {
			break
		}
		e, err := syscall.Seek(fd, s, 4) // SEEK_HOLE
		if err != nil || e > size {
			e = size
		}
		out = append(out, [2]int64{s, e})
		pos = e
	}
	return out
}

// allocated returns the 64 KiB blocks holding data at level l.
func (d *disk) allocated(l int) blockSet {
	bs := blockSet{}
	for _, e := range dataExtents(d.base, d.capacity) {
		for b := e[0] / blockSize; b <= (e[1]-1)/blockSize; b++ {
			bs[b] = struct{}{}
		}
	}
	for j := 0; j < l; j++ {
		for b := range d.layers[j].has {
			bs[b] = struct{}{}
		}
	}
	return bs
}

// addOverlay starts a new top layer (a snapshot was taken).
func (v *vmState) addOverlay(d *disk) error {
	v.ovlCtr++
	p := filepath.Join(d.dir, fmt.Sprintf("%s-%06d-delta.raw", d.stem, v.ovlCtr))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(d.capacity); err != nil {
		f.Close()
		return err
	}
	d.layers = append(d.layers, &overlay{path: p, f: f, has: blockSet{}})
	return nil
}

// mergeDown merges overlay i into the layer below it and drops it.
func (d *disk) mergeDown(i int) error {
	src := d.layers[i]
	keys := make([]int64, 0, len(src.has))
	for b := range src.has {
		keys = append(keys, b)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
	buf := make([]byte, blockSize)
	for _, b := range keys {
		bs, be := b*blockSize, (b+1)*blockSize
		if be > d.capacity {
			be = d.capacity
		}
		if err := readFull(src.f, buf[:be-bs], bs); err != nil {
			return err
		}
		if i == 0 {
			if _, err := d.base.WriteAt(buf[:be-bs], bs); err != nil {
				return err
			}
		} else {
			dst := d.layers[i-1]
			if _, err := dst.f.WriteAt(buf[:be-bs], bs); err != nil {
				return err
			}
			dst.has[b] = struct{}{}
		}
	}
	_ = src.f.Close()
	_ = os.Remove(src.path)
	d.layers = append(d.layers[:i], d.layers[i+1:]...)
	return nil
}

// changedSince answers the CBT question for a changeId against snapshot
// sequence upto (live: includeCur).  ok=false means unknown changeId.
func (d *disk) changedSince(changeID string, upto int, includeCur bool) (blockSet, bool) {
	slash := strings.LastIndexByte(changeID, '/')
	if slash < 0 || changeID[:slash] != d.cbtUUID {
		return nil, false
	}
	a, err := strconv.Atoi(changeID[slash+1:])
	if err != nil || a < d.firstSeq || a > upto {
		return nil, false
	}
	bs := blockSet{}
	for s := a; s < upto; s++ {
		for b := range d.epochs[s] {
			bs[b] = struct{}{}
		}
	}
	if includeCur {
		for b := range d.cur {
			bs[b] = struct{}{}
		}
	}
	return bs, true
}

// areas turns a block set into merged areas clipped to [start, end).
func areas(bs blockSet, capacity, start, end int64) []types.DiskChangeExtent {
	keys := make([]int64, 0, len(bs))
	for b := range bs {
		keys = append(keys, b)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
	var out []types.DiskChangeExtent
	for _, b := range keys {
		s, e := b*blockSize, (b+1)*blockSize
		if e > capacity {
			e = capacity
		}
		if s < start {
			s = start
		}
		if e > end {
			e = end
		}
		if s >= e {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length == s {
			out[n-1].Length += e - s
			continue
		}
		out = append(out, types.DiskChangeExtent{Start: s, Length: e - s})
	}
	return out
}
