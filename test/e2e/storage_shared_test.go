package e2e

// cci-obs (a bucket per claim in the control plane's object store, mounted
// into pods with rclone, reached by S3 clients with the tenant's keys) and
// cci-sfs (a file system of exactly the claimed size shared by many pods).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// waitBound waits for a claim to be bound and returns its volume's name.
func waitBound(t *testing.T, ns, name string) string {
	t.Helper()
	var pv string
	waitFor(t, 2*time.Minute, "claim "+ns+"/"+name+" bound", func() (bool, string) {
		pvc, err := client(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pv = pvc.Spec.VolumeName
		return pvc.Status.Phase == v1.ClaimBound, string(pvc.Status.Phase)
	})
	return pv
}

// s3Of is an S3 client with the keys of namespace ns (its Secret
// cci-obs-credentials), at the address the Secret names.
func s3Of(t *testing.T, ns string) (*s3.Client, string) {
	t.Helper()
	sec, err := client(t).CoreV1().Secrets(ns).Get(context.Background(), "cci-obs-credentials", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the tenant's S3 keys: %v", err)
	}
	endpoint := string(sec.Data["AWS_ENDPOINT_URL"])
	return s3.New(s3.Options{
		Region:       string(sec.Data["AWS_REGION"]),
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(string(sec.Data["AWS_ACCESS_KEY_ID"]), string(sec.Data["AWS_SECRET_ACCESS_KEY"]), ""),
	}), endpoint
}

func getObject(c *s3.Client, bucket, key string) (string, error) {
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return string(b), err
}

// podFile waits until path in the pod reads want.
func podFile(t *testing.T, ns, pod, path, want string) {
	t.Helper()
	waitFor(t, time.Minute, pod+":"+path+" reads "+want, func() (bool, string) {
		out, err := kubectl(t, "-n", ns, "exec", pod, "--", "cat", path)
		return err == nil && strings.TrimSpace(out) == want, out
	})
}

// A cci-obs claim: one pod writes a file, a second pod (gVisor) reads it,
// the S3 API serves it as an object with the namespace's keys and refuses
// another namespace's, and an object put through S3 shows in the pods.
// Then `cci up` (the agent, the object store and the file server)
// restarts and the pods' mounts, and those of two pods of a cci-sfs claim,
// still work.
func TestOBSBucketSharedWithS3(t *testing.T) {
	suffix := rand.String(4)
	ns := namedNamespace(t, "obs-a-"+suffix)
	other := namedNamespace(t, "obs-b-"+suffix)
	createClaim(t, ns, evsClaim("bucket", "1Gi", "cci-obs", v1.ReadWriteMany))
	createClaim(t, other, evsClaim("bucket", "1Gi", "cci-obs", v1.ReadWriteMany))
	bucket := waitBound(t, ns, "bucket")
	waitBound(t, other, "bucket")

	createPod(t, ns, claimPod("writer", "runc", "bucket", "echo hello-from-pod > /data/greeting.txt; sleep 3600"))
	createPod(t, ns, claimPod("reader", "gvisor", "bucket", "sleep 3600"))
	waitPodRunningIn(t, ns, "writer", 2*time.Minute)
	waitPodRunningIn(t, ns, "reader", 2*time.Minute)
	podFile(t, ns, "reader", "/data/greeting.txt", "hello-from-pod")

	mine, endpoint := s3Of(t, ns)
	t.Logf("object store at %s, bucket %s", endpoint, bucket)
	// Uploaded when the writer closed the file (rclone's write-back).
	waitFor(t, time.Minute, "the pod's file as an object", func() (bool, string) {
		got, err := getObject(mine, bucket, "greeting.txt")
		return err == nil && strings.TrimSpace(got) == "hello-from-pod", fmt.Sprint(got, err)
	})
	theirs, _ := s3Of(t, other)
	var apiErr smithy.APIError
	if _, err := getObject(theirs, bucket, "greeting.txt"); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDenied" {
		t.Errorf("another namespace's keys on the bucket: got %v, want AccessDenied", err)
	}
	if _, err := theirs.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("intruder"), Body: strings.NewReader("x")}); err == nil {
		t.Error("another namespace's keys put an object in the bucket")
	}
	if _, err := mine.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("from-s3.txt"), Body: strings.NewReader("hello-from-s3")}); err != nil {
		t.Fatalf("put with the namespace's keys: %v", err)
	}
	podFile(t, ns, "reader", "/data/from-s3.txt", "hello-from-s3")

	// A cci-sfs volume of two pods goes through the same restart (one
	// restart of the whole `cci up` for both kinds of FUSE mount).
	createClaim(t, ns, evsClaim("files", "64Mi", "cci-sfs", v1.ReadWriteMany))
	waitBound(t, ns, "files")
	createPod(t, ns, claimPod("sfs-writer", "runc", "files", "echo before-restart > /data/note; sleep 3600"))
	createPod(t, ns, claimPod("sfs-reader", "gvisor", "files", "sleep 3600"))
	waitPodRunningIn(t, ns, "sfs-writer", 2*time.Minute)
	waitPodRunningIn(t, ns, "sfs-reader", 2*time.Minute)
	podFile(t, ns, "sfs-reader", "/data/note", "before-restart")

	// The mounts outlive the agent: rclone runs in a session of its own.
	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	waitPodRunningIn(t, ns, "reader", 2*time.Minute)
	execOut(t, ns, "writer", "sh", "-c", "echo after-restart > /data/later.txt")
	podFile(t, ns, "reader", "/data/later.txt", "after-restart")
	waitFor(t, time.Minute, "the file written after the restart as an object", func() (bool, string) {
		got, err := getObject(mine, bucket, "later.txt")
		return err == nil && strings.TrimSpace(got) == "after-restart", fmt.Sprint(got, err)
	})
	// The cci-sfs pods' mount too: the old file reads, a new one passes.
	podFile(t, ns, "sfs-reader", "/data/note", "before-restart")
	execOut(t, ns, "sfs-writer", "sh", "-c", "echo after-restart > /data/later")
	podFile(t, ns, "sfs-reader", "/data/later", "after-restart")
}

// A cci-sfs claim of 64Mi: a second pod (gVisor) reads what the first
// wrote, and writing 100 MiB into it fails in the pod.
func TestSFSSharedAndFull(t *testing.T) {
	ns := namedNamespace(t, "sfs-"+rand.String(4))
	createClaim(t, ns, evsClaim("shared", "64Mi", "cci-sfs", v1.ReadWriteMany))
	waitBound(t, ns, "shared")
	createPod(t, ns, claimPod("writer", "runc", "shared", "mkdir -p /data/dir && echo hello-sfs > /data/dir/note; sleep 3600"))
	createPod(t, ns, claimPod("reader", "gvisor", "shared", "sleep 3600"))
	waitPodRunningIn(t, ns, "writer", 2*time.Minute)
	waitPodRunningIn(t, ns, "reader", 2*time.Minute)
	podFile(t, ns, "reader", "/data/dir/note", "hello-sfs")

	// 100 MiB into 64 MiB: the writer must see the failure.
	cmd := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", "writer", "--",
		"sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=100 2>&1; echo rc=$?")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("exec dd: %v: %s", err, out)
	}
	if strings.Contains(string(out), "rc=0") {
		t.Errorf("writing 100 MiB into a 64Mi cci-sfs volume succeeded:\n%s", out)
	}
	t.Logf("dd past the size: %s", strings.TrimSpace(string(out)))
	// The volume still works after the failure.
	execOut(t, ns, "writer", "sh", "-c", "rm -f /data/big; echo still-here > /data/after")
	podFile(t, ns, "reader", "/data/after", "still-here")
}
