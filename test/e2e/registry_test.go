package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/tenant"
	"github.com/cci-project/cci/internal/testimage"
)

// TestTenantRegistry: a tenant pushes under its own prefix with the
// credentials CCI put in its namespace, its pod runs the image, and another
// tenant's pod on the same host cannot use it (ErrImagePull saying why),
// although the image is already on the host.
func TestTenantRegistry(t *testing.T) {
	a, akc := createTenant(t, "tra")
	b, bkc := createTenant(t, "trb")
	ctx := context.Background()

	// The tenant's credentials, as its pods get them.
	sec, err := client(t).CoreV1().Secrets(a).Get(ctx, tenant.PullSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("tenant %s has no pull secret: %v", a, err)
	}
	if sec.Type != v1.SecretTypeDockerConfigJson {
		t.Fatalf("pull secret type %q, want %q", sec.Type, v1.SecretTypeDockerConfigJson)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password string } `json:"auths"`
	}
	if err := json.Unmarshal(sec.Data[v1.DockerConfigJsonKey], &cfg); err != nil {
		t.Fatal(err)
	}
	creds, ok := cfg.Auths[cci.Registry]
	if !ok || creds.Username != a {
		t.Fatalf("pull secret of %s has no credentials of user %q for %s: %v", a, a, cci.Registry, cfg.Auths)
	}
	asA := remote.WithAuth(&authn.Basic{Username: creds.Username, Password: creds.Password})

	// The shell image with a command of its own, pushed as tenant a.
	src, err := remote.Image(mustRef(t, image(testimage.Shell)))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := src.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	c.Cmd = []string{"sh", "-c", "echo private-image-runs; sleep 3600"}
	img, err := mutate.Config(src, c)
	if err != nil {
		t.Fatal(err)
	}
	own := cci.Registry + "/" + a + "/app:1"
	if err := remote.Write(mustRef(t, own), img, asA); err != nil {
		t.Fatalf("tenant %s pushing %s: %v", a, own, err)
	}
	for _, ref := range []string{cci.Registry + "/" + b + "/app:1", cci.Registry + "/" + testimage.Shell} {
		err := remote.Write(mustRef(t, ref), img, asA)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden {
			t.Errorf("tenant %s pushing %s: %v, want 403 Forbidden", a, ref, err)
		}
	}
	if err := remote.Write(mustRef(t, own), img); err == nil {
		t.Errorf("an anonymous client overwrote %s", own)
	}
	if _, err := remote.Image(mustRef(t, own)); err == nil {
		t.Errorf("an anonymous client pulled %s", own)
	}

	pod := func(n string) string {
		return `apiVersion: v1
kind: Pod
metadata:
  name: ` + n + `
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: ` + own + "\n"
	}
	mustTenantKubectl(t, akc, pod("own"), "create", "-f", "-")
	got, err := client(t).CoreV1().Pods(a).Get(ctx, "own", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.ImagePullSecrets) == 0 || got.Spec.ImagePullSecrets[len(got.Spec.ImagePullSecrets)-1].Name != tenant.PullSecret {
		t.Errorf("tenant pod's imagePullSecrets = %v, want %s added by admission", got.Spec.ImagePullSecrets, tenant.PullSecret)
	}
	waitFor(t, 2*time.Minute, "tenant "+a+"'s pod running its own image", func() (bool, string) {
		out, _ := tenantKubectl(t, akc, "", "logs", "own")
		return strings.Contains(out, "private-image-runs"), out
	})

	// Tenant b, same host, where the image now is.
	mustTenantKubectl(t, bkc, pod("theirs"), "create", "-f", "-")
	var msg string
	waitFor(t, 2*time.Minute, "tenant "+b+"'s pod refused the image", func() (bool, string) {
		p, err := client(t).CoreV1().Pods(b).Get(ctx, "theirs", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, "no status yet"
		}
		s := p.Status.ContainerStatuses[0]
		if s.State.Running != nil {
			t.Fatalf("tenant %s's pod runs tenant %s's private image", b, a)
		}
		if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
			msg = w.Message
			return true, ""
		}
		return false, p.Status.String()
	})
	t.Logf("tenant %s's pull failure: %s", b, msg)
	for _, want := range []string{"the registry refused tenant " + `"` + b + `"`, "a tenant pulls only its own repositories"} {
		if !strings.Contains(msg, want) {
			t.Errorf("tenant %s's pull failure %q does not say %q", b, msg, want)
		}
	}
}
