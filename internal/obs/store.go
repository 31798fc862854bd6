// Package obs is CCI's object storage (cci-obs): an S3-compatible object
// store that the control plane runs, a bucket per PersistentVolumeClaim,
// and one S3 account per tenant namespace whose keys CCI puts in a Secret
// of that namespace. Pods get the bucket as files (the agent mounts it
// with rclone, internal/rclone); any S3 client reaches the same bucket at
// the store's address with the tenant's keys.
//
// The store is Versity's S3 gateway (github.com/versity/versitygw, Apache
// 2.0) embedded as a library (its embedgw package) with its POSIX backend:
// a bucket is a folder, an object a file, metadata in a sidecar folder
// (no extended attributes needed from the data folder's file system).
// Its access control is S3's own: an account of role "user" reaches only
// the buckets it owns, so one tenant's keys are refused on another's
// buckets without anything of ours between the client and the gateway.
package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

// Store is the object store of one control plane. Create it with Open,
// then Run it; Account and bucket methods may be called concurrently
// with Run and with each other.
type Store struct {
	// Listen is host:port the S3 API listens on.
	Listen string
	// Endpoint is the URL hosts, pods and users reach the S3 API at.
	Endpoint string

	dir      string
	be       *posix.Posix
	accounts *accounts
	root     auth.Account
}

// Region is the region the store reports; S3 clients must sign for it.
const Region = "us-east-1"

// Open prepares the store whose buckets and accounts live under dir (an
// absolute path).
//
// The gateway's POSIX backend changes the working directory of the whole
// process to the buckets' folder and works with paths relative to it from
// then on: every path the process uses after Open must be absolute (the
// server's configuration makes them so).
func Open(dir, listen, endpoint string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("object store folder %q is not an absolute path", dir)
	}
	for _, d := range []string{"buckets", "meta"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("object store folder: %w", err)
		}
	}
	sc, err := meta.NewSideCar(filepath.Join(dir, "meta"))
	if err != nil {
		return nil, fmt.Errorf("object store metadata folder: %w", err)
	}
	opts := posix.PosixOpts{SideCarDir: filepath.Join(dir, "meta")}
	opts.SetNewDirPerm(0o755)
	opts.SetNewFilePerm(0o644)
	be, err := posix.New(filepath.Join(dir, "buckets"), sc, opts)
	if err != nil {
		return nil, fmt.Errorf("object store backend: %w", err)
	}
	accts, err := loadAccounts(filepath.Join(dir, "accounts.json"))
	if err != nil {
		return nil, err
	}
	root, err := loadRoot(filepath.Join(dir, "root.json"))
	if err != nil {
		return nil, err
	}
	return &Store{Listen: listen, Endpoint: endpoint, dir: dir, be: be, accounts: accts, root: root}, nil
}

// loadRoot reads the gateway's root keys, made on first start. Nothing of
// CCI signs with them (buckets are made through the backend); the gateway
// needs a root account to start.
func loadRoot(path string) (auth.Account, error) {
	var root auth.Account
	raw, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(raw, &root); err != nil {
			return root, fmt.Errorf("read %q: %w (remove it to make new root keys)", path, err)
		}
		return root, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return root, err
	}
	root = auth.Account{Access: randomKey(20, upperAlnum), Secret: randomKey(40, secretChars), Role: auth.RoleAdmin}
	raw, _ = json.Marshal(root)
	return root, os.WriteFile(path, raw, 0o600)
}

// Run serves the S3 API until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	cfg := &embedgw.Config{
		RootUserAccess:    s.root.Access,
		RootUserSecret:    s.root.Secret,
		Region:            Region,
		Ports:             []string{s.Listen},
		MaxConnections:    10000,
		MaxRequests:       5000,
		MultipartMaxParts: 10000,
		KeepAlive:         true,
		Quiet:             true,
		IAMService:        s.accounts,
		HealthPath:        "/healthz",
	}
	if err := embedgw.RunVersityGW(ctx, s.be, cfg); err != nil && ctx.Err() == nil {
		return fmt.Errorf("object store on %s: %w", s.Listen, err)
	}
	return nil
}

// Ready blocks until the S3 API accepts connections.
func (s *Store) Ready(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", s.Listen, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Credentials are one tenant's S3 keys.
type Credentials struct {
	AccessKeyID, SecretAccessKey string
}

// TenantCredentials returns the S3 keys of a tenant namespace, issuing
// them the first time.
func (s *Store) TenantCredentials(ns string) (Credentials, error) {
	acct, err := s.accounts.forNamespace(ns)
	return Credentials{acct.Access, acct.Secret}, err
}

// CreateBucket makes a bucket owned by the tenant namespace ns (only its
// keys reach it); one that exists is kept.
func (s *Store) CreateBucket(ctx context.Context, name, ns string) error {
	acct, err := s.accounts.forNamespace(ns)
	if err != nil {
		return err
	}
	acl, err := json.Marshal(auth.ACL{
		Owner:    acct.Access,
		Grantees: []auth.Grantee{{Permission: auth.PermissionFullControl, Access: acct.Access, Type: types.TypeCanonicalUser}},
	})
	if err != nil {
		return err
	}
	err = s.be.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                    &name,
		ObjectOwnership:           types.ObjectOwnershipBucketOwnerEnforced,
		CreateBucketConfiguration: &types.CreateBucketConfiguration{},
	}, acl)
	if err != nil && !bucketExists(err) {
		return fmt.Errorf("create bucket %q: %w", name, err)
	}
	return nil
}

func bucketExists(err error) bool {
	var apiErr interface{ ErrorCode() string }
	if errors.As(err, &apiErr) {
		c := apiErr.ErrorCode()
		return c == "BucketAlreadyOwnedByYou" || c == "BucketAlreadyExists"
	}
	s := err.Error()
	return strings.Contains(s, "BucketAlreadyOwnedByYou") || strings.Contains(s, "BucketAlreadyExists") || strings.Contains(s, "already")
}

// DeleteBucket removes a bucket with everything in it; a bucket that is
// gone is no error. The backend refuses to remove a bucket that holds
// objects (S3's rule for clients), so CCI, which owns the bucket's life,
// removes its folder and metadata itself.
func (s *Store) DeleteBucket(name string) error {
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return fmt.Errorf("bucket name %q is not a plain name", name)
	}
	for _, d := range []string{filepath.Join(s.dir, "buckets", name), filepath.Join(s.dir, "meta", name)} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove bucket %q: %w", name, err)
		}
	}
	return nil
}

// BucketDir is the folder that holds a bucket's objects.
func (s *Store) BucketDir(name string) string { return filepath.Join(s.dir, "buckets", name) }
