package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// CookieName is the session cookie. It holds the user's credential sealed
// with the console's key (AES-GCM): the browser's scripts cannot read it
// (HttpOnly), it travels only over TLS (Secure) and only with requests from
// the console's own pages (SameSite=Strict). The token is never in a URL
// or in the browser's storage.
const CookieName = "cci_session"

// sessionTTL bounds a session; the credential's own expiry (a token's)
// may end it sooner: the API then answers 401 and the page goes to login.
const sessionTTL = 12 * time.Hour

// credential is what the console presents to the apiserver for a user.
type credential struct {
	Token string `json:"t,omitempty"`
	// CertPEM and KeyPEM are a client certificate (the admin kubeconfig's).
	CertPEM []byte `json:"c,omitempty"`
	KeyPEM  []byte `json:"k,omitempty"`
}

// session is the cookie's content.
type session struct {
	Cred      credential `json:"cred"`
	User      string     `json:"user"`
	Namespace string     `json:"ns,omitempty"`
	Expires   time.Time  `json:"exp"`
}

// sealer seals and opens session cookies.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("console session key: want 32 bytes, have %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(sess session) (string, error) {
	plain, err := json.Marshal(sess)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(CookieName))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

var errNoSession = errors.New("not logged in")

func (s *sealer) open(value string, now time.Time) (session, error) {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return session{}, errNoSession
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(CookieName))
	if err != nil {
		// Sealed with another key (another control plane's data folder).
		return session{}, errNoSession
	}
	var sess session
	if err := json.Unmarshal(plain, &sess); err != nil {
		return session{}, errNoSession
	}
	if now.After(sess.Expires) {
		return session{}, errors.New("the session ended; log in again")
	}
	return sess, nil
}

// sessionFrom reads the request's session.
func (s *sealer) sessionFrom(r *http.Request, now time.Time) (session, error) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return session{}, errNoSession
	}
	return s.open(c.Value, now)
}

func sessionCookie(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name:     CookieName,
		Value:    value,
		Path:     "/",
		Expires:  expires,
		MaxAge:   int(time.Until(expires).Seconds()),
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	}
}

func clearCookie() *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

// LoadOrCreateKey reads the session key at path, or writes a new random
// one there: sessions then survive a restart of the control plane.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != 32 {
			return nil, fmt.Errorf("console session key %q has %d bytes, want 32; delete it to make a new one (users log in again)", path, len(key))
		}
		return key, nil
	}
	if !os.IsNotExist(err) {
		return nil, fmt.Errorf("read console session key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("write console session key: %w", err)
	}
	return key, nil
}
