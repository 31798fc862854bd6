package obs

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/versity/versitygw/auth"
)

// accounts is the object store's identities: one S3 account per tenant
// namespace, kept in one JSON file of the store's folder so that the keys
// CCI issued stay valid across restarts. It is the gateway's IAM service
// (auth.IAMService); its methods may be called concurrently.
type accounts struct {
	path string

	mu   sync.Mutex
	byNS map[string]auth.Account // tenant namespace → account
}

func loadAccounts(path string) (*accounts, error) {
	a := &accounts{path: path, byNS: map[string]auth.Account{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &a.byNS); err != nil {
		return nil, fmt.Errorf("read object store accounts %q: %w (remove the file to issue new keys to every tenant)", path, err)
	}
	return a, nil
}

// save writes the accounts whole (a temporary file renamed over the old).
func (a *accounts) save() error {
	raw, err := json.MarshalIndent(a.byNS, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return err
	}
	tmp := a.path + ".new"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.path)
}

// forNamespace returns the account of a tenant namespace, issuing one
// the first time.
func (a *accounts) forNamespace(ns string) (auth.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if acct, ok := a.byNS[ns]; ok {
		return acct, nil
	}
	// A user (not userplus, not admin): it reaches only the buckets it
	// owns, and cannot make or remove buckets itself; CCI makes one per
	// claim.
	acct := auth.Account{Access: randomKey(20, upperAlnum), Secret: randomKey(40, secretChars), Role: auth.RoleUser}
	a.byNS[ns] = acct
	if err := a.save(); err != nil {
		delete(a.byNS, ns)
		return auth.Account{}, fmt.Errorf("save object store account of namespace %q: %w", ns, err)
	}
	return acct, nil
}

const (
	upperAlnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// randomKey draws n characters of set from the system's CSPRNG.
func randomKey(n int, set string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	for i := range b {
		b[i] = set[int(b[i])%len(set)]
	}
	return string(b)
}

var _ auth.IAMService = (*accounts)(nil)

var errManaged = errors.New("object store accounts are issued by CCI, one per tenant; they cannot be changed through the S3 admin API")

func (a *accounts) CreateAccount(auth.Account) error { return errManaged }

func (a *accounts) GetUserAccount(access string) (auth.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, acct := range a.byNS {
		if acct.Access == access {
			return acct, nil
		}
	}
	return auth.Account{}, auth.ErrNoSuchUser
}

func (a *accounts) ResolveAccounts(keys []string) ([]string, error) {
	var missing []string
	for _, k := range keys {
		if _, err := a.GetUserAccount(k); err != nil {
			missing = append(missing, k)
		}
	}
	return missing, nil
}

func (a *accounts) UpdateUserAccount(string, auth.MutableProps) error { return errManaged }
func (a *accounts) DeleteUserAccount(string) error                    { return errManaged }

func (a *accounts) ListUserAccounts() ([]auth.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]auth.Account, 0, len(a.byNS))
	for _, acct := range a.byNS {
		out = append(out, acct)
	}
	return out, nil
}

func (a *accounts) Shutdown() error { return nil }
