package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// createTenant runs `cci tenant create` and returns the tenant's token,
// read from the kubeconfig it wrote.
func createTenant(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command(cci.Bin, "tenant", "create", name, "--data-dir", cci.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("cci tenant create %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(cci.Bin, "tenant", "delete", name, "--data-dir", cci.DataDir).CombinedOutput(); err != nil && !strings.Contains(string(out), "no tenant") {
			t.Logf("cci tenant delete %s: %v\n%s", name, err, out)
		}
	})
	kc, err := clientcmd.LoadFromFile(filepath.Join(cci.DataDir, "tenants", name+".kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	ai := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
	if ai == nil || ai.Token == "" {
		t.Fatalf("tenant %s's kubeconfig has no token", name)
	}
	return ai.Token
}

// outDir is where the browser's screenshots go.
func outDir(t *testing.T) string {
	dir := os.Getenv("CCI_CONSOLE_OUT")
	if dir == "" {
		dir = filepath.Join(cluster.RepoRoot(), "_output", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTenantAndOperatorInBrowser runs flow.mjs in Chromium: a bad token is
// refused with the reason; a tenant logs in with its token, creates a
// Deployment from the form, sees its pod Running, reads its log, runs
// `echo hi` in the exec terminal, scales to 3, sees its usage grow,
// deletes it, and gets the API's 403 for another tenant's namespace; an
// exec into a container without a shell gets a message and the page goes
// on; a list open while the control plane restarts reconnects by itself;
// the operator logs in with the admin kubeconfig and sees tenants and
// hosts; a page whose token is revoked (its tenant deleted) goes back to
// login with a message.
// What the browser did is then checked through the API.
func TestTenantAndOperatorInBrowser(t *testing.T) {
	token := createTenant(t, "console-a")
	otherToken := createTenant(t, "console-b")
	out := outDir(t)

	// The flow stops and starts the control plane through this, to see an
	// open page reconnect by itself (data, session key and the host's pods
	// survive a restart).
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch r.URL.Path {
		case "/stop":
			err = cci.Stop(syscall.SIGINT)
		case "/start":
			_, err = cci.Start()
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			t.Logf("%s the control plane: %v", r.URL.Path, err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		t.Logf("control plane %s: done", strings.TrimPrefix(r.URL.Path, "/"))
	}))
	defer control.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "flow.mjs")
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+consoleURL,
		"CONSOLE_DIR="+filepath.Join(cluster.RepoRoot(), "console"),
		"CHROMIUM="+browser,
		"TENANT_TOKEN="+token,
		"TENANT_NS=console-a",
		"OTHER_TOKEN="+otherToken,
		"CCI_BIN="+cci.Bin,
		"CCI_DATA_DIR="+cci.DataDir,
		"OTHER_NS=console-b",
		"ADMIN_KUBECONFIG="+cci.Kubeconfig,
		"IMAGE="+cci.Registry+"/"+testimage.Shell,
		"OUT="+out,
		"CONTROL_URL="+control.URL,
	)
	w := &testWriter{t: t}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		t.Fatalf("the browser flow failed (screenshots in %s): %v", out, err)
	}

	// The browser's deletion reached the API.
	kube := cci.Client(t)
	cluster.WaitFor(t, 2*time.Minute, "the Deployment and its pods to be gone", func() (bool, string) {
		_, err := kube.AppsV1().Deployments("console-a").Get(context.Background(), "web", metav1.GetOptions{})
		pods, _ := kube.CoreV1().Pods("console-a").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
		return err != nil && pods != nil && len(pods.Items) == 0, "deployment err " + errString(err)
	})
	for _, shot := range []string{"login-refused.png", "overview.png", "create-form.png", "pod-logs-exec.png", "scaled.png", "usage.png", "forbidden.png", "tenants.png", "hosts.png", "session-ended.png", "exec-no-shell.png", "reconnected.png", "yaml-error.png", "secret.png", "pod-timeline.png", "pools-registry.png"} {
		if st, err := os.Stat(filepath.Join(out, shot)); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s missing: %v", shot, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// testWriter passes the browser script's lines to t.Log.
type testWriter struct {
	t    *testing.T
	rest string
}

func (w *testWriter) Write(p []byte) (int, error) {
	s := w.rest + string(p)
	lines := strings.Split(s, "\n")
	for _, l := range lines[:len(lines)-1] {
		w.t.Log(l)
	}
	w.rest = lines[len(lines)-1]
	return len(p), nil
}
