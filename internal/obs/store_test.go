package obs

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

func client(endpoint string, c Credentials) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
	})
}

// TestStoreTenants runs the embedded gateway and checks that a tenant's
// keys reach its bucket and another tenant's are refused.
func TestStoreTenants(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := Open(t.TempDir(), addr, "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBucket(ctx, "pvc-one", "tenant-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBucket(ctx, "pvc-one", "tenant-a"); err != nil {
		t.Fatalf("second create of the same bucket: %v", err)
	}
	a, _ := s.TenantCredentials("tenant-a")
	b, _ := s.TenantCredentials("tenant-b")
	ca, cb := client(s.Endpoint, a), client(s.Endpoint, b)
	if _, err := ca.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pvc-one"), Key: aws.String("dir/hello.txt"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("owner's put: %v", err)
	}
	out, err := ca.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pvc-one"), Key: aws.String("dir/hello.txt")})
	if err != nil {
		t.Fatalf("owner's get: %v", err)
	}
	body, _ := io.ReadAll(out.Body)
	if string(body) != "hello" {
		t.Fatalf("got %q, want hello", body)
	}
	for name, call := range map[string]func() error{
		"get": func() error {
			_, err := cb.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("pvc-one"), Key: aws.String("dir/hello.txt")})
			return err
		},
		"put": func() error {
			_, err := cb.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("pvc-one"), Key: aws.String("x"), Body: strings.NewReader("x")})
			return err
		},
		"list": func() error {
			_, err := cb.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("pvc-one")})
			return err
		},
		"create": func() error {
			_, err := cb.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("mine")})
			return err
		},
	} {
		var apiErr smithy.APIError
		if err := call(); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDenied" {
			t.Errorf("another tenant's %s: got %v, want AccessDenied", name, err)
		}
	}
	wrong := client(s.Endpoint, Credentials{a.AccessKeyID, "not-the-secret"})
	if _, err := wrong.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("pvc-one")}); err == nil {
		t.Error("a wrong secret was accepted")
	}
	if err := s.DeleteBucket("pvc-one"); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("pvc-one")}); err == nil {
		t.Error("a deleted bucket still lists")
	}
}
