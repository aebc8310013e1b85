// SPDX-License-Identifier: Apache-2.0
// vsphere-double: a VMware vSphere test double for ferry's tests.
//
// It runs govmomi's vcsim (Debian's 0.24.2) in process and puts HTTP
// middleware in front of it that adds what vcsim lacks: a CBT model with
// QueryChangedDiskAreas and changeIds, delta-disk snapshot semantics,
// session checks and idle expiry on /folder and /sdk, delayed tasks and
// fault injection.  A second, plain-HTTP listener is the test-only control
// channel (control.go).
//
// THREAD MODEL: HTTP handlers run concurrently.  The disk/CBT model is
// guarded by one mutex (model.mu, see disk.go); vcsim objects are guarded
// by vcsim's own registry locks.  The model lock is never held while an
// internal SOAP call is made (the middleware takes it), so no deadlock.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
)

type options struct {
	dir         string
	listen      string
	control     string
	username    string
	password    string
	sessionIdle time.Duration
	taskDelay   time.Duration
	fault503    float64
	faultReset  float64
	faultTrunc  float64
	qcdaMax     int
	qcdaWindow  int64
	esx         bool
	seed        int64
	dsName      string
}

var opt options

func main() {
	flag.StringVar(&opt.dir, "dir", "", "state directory (required)")
	flag.StringVar(&opt.listen, "listen", "127.0.0.1:0", "HTTPS address of /sdk and /folder")
	flag.StringVar(&opt.control, "control", "127.0.0.1:0", "plain HTTP address of the control channel")
	flag.StringVar(&opt.username, "username", "user", "login user name")
	flag.StringVar(&opt.password, "password", "pass", "login password")
	flag.DurationVar(&opt.sessionIdle, "session-idle", 30*time.Minute, "idle time after which a session is gone")
	flag.DurationVar(&opt.taskDelay, "task-delay", 0, "time a snapshot/reconfigure task stays running")
	flag.Float64Var(&opt.fault503, "fault-503", 0, "rate of 503 answers to /folder GETs")
	flag.Float64Var(&opt.faultReset, "fault-reset", 0, "rate of connection resets on /folder GETs")
	flag.Float64Var(&opt.faultTrunc, "fault-truncate", 0, "rate of truncated bodies on /folder GETs")
	flag.IntVar(&opt.qcdaMax, "qcda-max-areas", 2000, "most changedArea entries per QueryChangedDiskAreas answer")
	flag.Var((*sizeFlag)(&opt.qcdaWindow), "qcda-window", "most bytes one QueryChangedDiskAreas answer covers, K/M/G suffixes (0: no limit)")
	flag.BoolVar(&opt.esx, "esx", false, "simulate a standalone ESXi host instead of vCenter")
	flag.Int64Var(&opt.seed, "seed", 1, "seed of the fault injection randomness")
	flag.StringVar(&opt.dsName, "datastore", "ferry ds 1", "name of the datastore holding the VMs")
	flag.Parse()
	if opt.dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: vsphere-double -dir DIR [options]; see -help")
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "vsphere-double: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := filepath.Abs(opt.dir)
	if err != nil {
		return err
	}
	opt.dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// vcsim makes its datastore directories with ioutil.TempDir.
	os.Setenv("TMPDIR", dir)
	log.SetPrefix("vsphere-double: ")

	cert, leaf, err := makeCerts(dir)
	if err != nil {
		return err
	}

	var m *simulator.Model
	if opt.esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
	}
	if err := m.Create(); err != nil {
		return fmt.Errorf("model: %v", err)
	}
	m.Service.Listen = &url.URL{Host: opt.listen, User: url.UserPassword(opt.username, opt.password)}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv := m.Service.NewServer()

	dbl := newDouble(m, srv.Server.Config.Handler)
	srv.Server.Config.Handler = dbl
	addr := srv.Listener.Addr().String()

	cl, err := net.Listen("tcp", opt.control)
	if err != nil {
		return fmt.Errorf("control listen: %v", err)
	}
	ctl := &http.Server{Handler: dbl.controlHandler()}
	go func() { _ = ctl.Serve(cl) }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dbl.setup(ctx, "https://"+addr+"/sdk", filepath.Join(dir, "ca.pem")); err != nil {
		return fmt.Errorf("setup: %v", err)
	}

	dc := "DC0"
	if opt.esx {
		dc = esx.Datacenter.Name
	}
	dbl.dcName = dc
	s1 := sha1.Sum(leaf.Raw)
	s256 := sha256.Sum256(leaf.Raw)
	fmt.Printf("SERVER=%s\nURL=https://%s/sdk\nCACERT=%s\nTHUMBPRINT_SHA1=%s\nTHUMBPRINT_SHA256=%s\n",
		addr, addr, shq(filepath.Join(dir, "ca.pem")), thumb(s1[:]), thumb(s256[:]))
	fmt.Printf("CONTROL=http://%s\nDATACENTER=%s\nDATASTORE=%s\nPID=%d\nREADY\n",
		cl.Addr().String(), dc, shq(opt.dsName), os.Getpid())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	go func() {
		time.Sleep(1500 * time.Millisecond)
		os.Exit(0)
	}()
	_ = ctl.Close()
	srv.Server.Config.SetKeepAlivesEnabled(false)
	_ = srv.Listener.Close()
	dbl.model.closeAll()
	return nil
}

type sizeFlag int64

func (s *sizeFlag) String() string { return fmt.Sprint(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	if v == "0" {
		*s = 0
		return nil
	}
	n, err := parseSize(v)
	*s = sizeFlag(n)
	return err
}

// shq quotes s for a POSIX shell when it needs quoting.
func shq(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func thumb(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(parts, ":")
}

// makeCerts writes DIR/ca.pem and DIR/ca-key.pem and returns a server
// certificate for 127.0.0.1 and localhost signed by that CA.
func makeCerts(dir string) (tls.Certificate, *x509.Certificate, error) {
	var none tls.Certificate
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return none, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ferry vsphere-double test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return none, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return none, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return none, nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return none, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return none, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}), 0o600); err != nil {
		return none, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key, Leaf: leaf}, leaf, nil
}
