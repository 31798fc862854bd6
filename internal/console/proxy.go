package console

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/cci-project/cci/internal/metering"
)

// proxyAPI passes a request to the apiserver as the session's user: the
// browser's cookie and any Authorization it sent are dropped, the user's
// own credential is put in. Watches, log streams (flushed at once) and
// WebSocket upgrades (exec, attach) pass through.
func (s *Server) proxyAPI(w http.ResponseWriter, r *http.Request, sess session) {
	s.reverseProxy(w, r, sess, s.api, r.URL.Path)
}

// proxyUsage passes a usage query to the metering endpoint as the user,
// which answers only for the tenants the user belongs to.
func (s *Server) proxyUsage(w http.ResponseWriter, r *http.Request, sess session) {
	if s.usage == nil {
		writeError(w, http.StatusServiceUnavailable, "this control plane runs no usage endpoint")
		return
	}
	s.reverseProxy(w, r, sess, s.usage, metering.UsagePath)
}

func (s *Server) reverseProxy(w http.ResponseWriter, r *http.Request, sess session, target *url.URL, path string) {
	tr, err := s.transportFor(sess.Cred)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "session credential: "+err.Error())
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimSuffix(target.Path, "/") + path
			pr.Out.URL.RawPath = ""
			setCredential(pr.Out.Header, sess.Cred)
		},
		Transport:      tr,
		FlushInterval:  -1,
		ModifyResponse: credentialRefused,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("console proxy", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusBadGateway, "the API did not answer (is the control plane restarting?): "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
}

// credentialRefused rewrites the API's 401 (its message is only
// "Unauthorized") into one that says what happened and what to do, and
// ends the session: a credential the API no longer takes (a token that
// expired, or was revoked with its tenant or service account) does not
// come back. The page goes to login with this message.
func credentialRefused(resp *http.Response) error {
	if resp.StatusCode != http.StatusUnauthorized {
		return nil
	}
	said, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	var st struct{ Message string }
	if json.Unmarshal(said, &st) != nil || st.Message == "" {
		st.Message = strings.TrimSpace(string(said))
	}
	body, err := json.Marshal(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": http.StatusUnauthorized, "reason": "Unauthorized",
		"message": credentialGone + " (the API said: " + st.Message + ")",
	})
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Add("Set-Cookie", clearCookie().String())
	return nil
}

// credentialGone is what the console says when the API refuses a
// session's credential.
const credentialGone = "the API no longer accepts this session's credential (expired or revoked); log in again"

// setCredential replaces whatever the browser sent with the user's
// credential: a bearer token, or nothing (the client certificate goes in
// the TLS handshake).
func setCredential(h http.Header, c credential) {
	h.Del("Cookie")
	h.Del("Authorization")
	if c.Token != "" {
		h.Set("Authorization", "Bearer "+c.Token)
	}
}
