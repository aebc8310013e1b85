// SPDX-License-Identifier: Apache-2.0
// The /folder middleware: session or Basic auth, double-encoded query
// parameters, octet-stream type, counters and fault injection in front of
// vcsim's http.FileServer.
package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/vim25/soap"
)

type countWriter struct {
	http.ResponseWriter
	d     *double
	limit int64 // truncate the body after limit bytes; -1: never
	trunc bool
	n     int64
}

func (c *countWriter) WriteHeader(code int) {
	c.d.mu.Lock()
	if code == http.StatusPartialContent {
		c.d.st.Partial206++
	}
	c.d.mu.Unlock()
	if c.trunc && code/100 == 2 {
		if cl, err := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64); err == nil && cl > 1 {
			c.limit = cl / 2
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countWriter) Write(p []byte) (int, error) {
	abort := false
	if c.limit >= 0 && c.n+int64(len(p)) > c.limit {
		p = p[:c.limit-c.n]
		abort = true
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	c.d.mu.Lock()
	c.d.st.FolderBytes += int64(n)
	c.d.mu.Unlock()
	if abort {
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		// net/http closes the connection without finishing the body.
		panic(http.ErrAbortHandler)
	}
	return n, err
}

// basicSession logs in on behalf of a Basic-auth'd /folder request and
// returns the new session cookie's value, as ESXi does.
func (d *double) basicSession() string {
	body := `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">` +
		`<soapenv:Body><Login xmlns="urn:vim25"><_this type="SessionManager">` + d.sessionManager() + `</_this>` +
		`<userName>` + xmlEsc(opt.username) + `</userName><password>` + xmlEsc(opt.password) + `</password></Login></soapenv:Body></soapenv:Envelope>`
	req := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(body))
	req.Header.Set("Content-Type", "text/xml")
	rec := httptest.NewRecorder()
	d.inner.ServeHTTP(rec, req)
	d.mu.Lock()
	d.st.Logins++
	d.mu.Unlock()
	return d.addSession(rec.Header())
}

func xmlEsc(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")
	return r.Replace(s)
}

func (d *double) serveFolder(w http.ResponseWriter, r *http.Request) {
	defer d.logFolder(r)() // the request log (ferryctl.go)
	folderDelay()
	d.mu.Lock()
	d.st.FolderRequests++
	d.mu.Unlock()

	// virt-v2v double-quotes dcPath and dsName; accept both forms.
	q := r.URL.Query()
	for _, k := range []string{"dcPath", "dsName"} {
		if v := q.Get(k); strings.Contains(v, "%") {
			if u, err := url.QueryUnescape(v); err == nil {
				q.Set(k, u)
			}
		}
	}
	r.URL.RawQuery = q.Encode()

	if !d.sessionOK(r) {
		u, p, ok := r.BasicAuth()
		if !ok || u != opt.username || p != opt.password {
			d.mu.Lock()
			d.st.Folder401++
			d.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
			http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
			return
		}
		if key := d.basicSession(); key != "" {
			http.SetCookie(w, &http.Cookie{Name: soap.SessionCookieName, Value: key, Path: "/", HttpOnly: true, Secure: true})
		}
	}

	cw := &countWriter{ResponseWriter: w, d: d, limit: -1}
	if r.Method == http.MethodGet {
		d.mu.Lock()
		x := d.rng.Float64()
		r503, rReset, rTrunc := d.r503, d.rReset, d.rTrunc
		var kind string
		switch {
		case x < r503:
			kind = "503"
			d.st.Faults503++
		case x < r503+rReset:
			kind = "reset"
			d.st.FaultsReset++
		case x < r503+rReset+rTrunc:
			kind = "trunc"
			d.st.FaultsTrunc++
		}
		if kind != "" {
			d.st.FaultsInjected++
		}
		d.mu.Unlock()
		switch kind {
		case "503":
			w.Header().Set("Retry-After", "0")
			http.Error(w, "503 Service Unavailable", http.StatusServiceUnavailable)
			return
		case "reset":
			resetConn(w)
			return
		case "trunc":
			cw.trunc = true
		}
	}
	if !strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != "/folder" {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	if d.serveLocalFile(cw, r) {
		return
	}
	d.inner.ServeHTTP(cw, r)
}

// serveLocalFile answers GET/HEAD of a file on our own datastore directly, without
// vcsim's inventory lookup per request (which costs more CPU than the copy itself, and
// would make every benchmark of many range requests measure the simulator).  What the
// client sees is the same: Range/206, Content-Range, Accept-Ranges, 404, 416.
func (d *double) serveLocalFile(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	q := r.URL.Query()
	rel := strings.TrimPrefix(r.URL.Path, "/folder/")
	dsDir := d.dsDirOf(q.Get("dsName"))
	if dsDir == "" || q.Get("dcPath") != d.dcName || rel == r.URL.Path || rel == "" {
		return false
	}
	p := filepath.Join(dsDir, filepath.FromSlash(path.Clean("/"+rel)))
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		return false
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return true
}

// resetConn drops the connection with an RST and no answer.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	var raw net.Conn = conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
}
