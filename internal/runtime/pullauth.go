package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tenantLabel marks a tenant's namespace (package tenant's Label; not
// imported, the runtime knows nothing else of tenants).
const tenantLabel = "cci.io/tenant"

// RegistryCredentials are the host's own credentials for the built-in
// registry.
type RegistryCredentials struct {
	// Hosts are the registry's host:port names, as images spell them.
	Hosts []string
	// Username and Password: the agent's identity (user node@cci, the
	// join token).
	Username, Password string
}

// pullAuth is who a pod's images are pulled as.
type pullAuth struct {
	// who names the identity in messages and keys what was verified.
	who string
	// creds are user and password by registry host:port.
	creds map[string][2]string
	// verify: an image already here is used only after the registry
	// confirmed that these credentials may pull it (tenant pods: another
	// tenant's pod may have pulled it).
	verify bool
}

// podPullAuth gathers the credentials a pod pulls with, as the kubelet
// does: its imagePullSecrets (kubernetes.io/dockerconfigjson or
// kubernetes.io/dockercfg). A tenant's pod pulls with those alone; other
// pods (the operator's, system pods) fall back to the host's own
// credentials, which pull everything.
func (r *Runtime) podPullAuth(ctx context.Context, pod *v1.Pod) (*pullAuth, error) {
	a := &pullAuth{creds: map[string][2]string{}}
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := r.cfg.Secrets.Secrets(pod.Namespace).Get(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) {
				// The kubelet pulls without a missing secret too.
				continue
			}
			return nil, fmt.Errorf("read image pull secret %q: %w", ref.Name, err)
		}
		if err := addDockerCreds(a.creds, s); err != nil {
			return nil, fmt.Errorf("image pull secret %q: %w", ref.Name, err)
		}
	}
	tenant, err := r.namespaceTenant(ctx, pod.Namespace)
	if err != nil {
		return nil, err
	}
	if tenant != "" {
		a.who, a.verify = fmt.Sprintf("tenant %q", tenant), true
		return a, nil
	}
	a.who = "namespace " + pod.Namespace
	if c := r.cfg.RegistryCredentials; c != nil {
		for _, h := range c.Hosts {
			if _, ok := a.creds[h]; !ok {
				a.creds[h] = [2]string{c.Username, c.Password}
			}
		}
	}
	return a, nil
}

// namespaceTenant returns the tenant that owns namespace ns, "" for none.
func (r *Runtime) namespaceTenant(ctx context.Context, ns string) (string, error) {
	if r.cfg.Kube == nil {
		return "", nil
	}
	n, err := r.cfg.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		// Fail closed: without knowing, the host's credentials are not lent.
		return "", fmt.Errorf("read namespace %q to choose pull credentials: %w", ns, err)
	}
	return n.Labels[tenantLabel], nil
}

// addDockerCreds reads a Docker config Secret into creds.
func addDockerCreds(creds map[string][2]string, s *v1.Secret) error {
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     []byte `json:"auth"` // base64 of user:password
	}
	var auths map[string]entry
	switch s.Type {
	case v1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]entry `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[v1.DockerConfigJsonKey], &cfg); err != nil {
			return fmt.Errorf("key %s is not a Docker config: %w", v1.DockerConfigJsonKey, err)
		}
		auths = cfg.Auths
	case v1.SecretTypeDockercfg:
		if err := json.Unmarshal(s.Data[v1.DockerConfigKey], &auths); err != nil {
			return fmt.Errorf("key %s is not a Docker config: %w", v1.DockerConfigKey, err)
		}
	default:
		return fmt.Errorf("type %q is not %s", s.Type, v1.SecretTypeDockerConfigJson)
	}
	for host, e := range auths {
		user, pass := e.Username, e.Password
		if u, p, ok := strings.Cut(string(e.Auth), ":"); ok && user == "" {
			user, pass = u, p
		}
		// Keys may be URLs ("https://host/v1/"), as `docker login` writes them.
		host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
		host, _, _ = strings.Cut(host, "/")
		if _, ok := creds[host]; !ok && user != "" {
			creds[host] = [2]string{user, pass}
		}
	}
	return nil
}

// lookup returns the credentials for host, which may be a mirror of the
// registry the secrets name.
func (a *pullAuth) lookup(host string, mirrors map[string]string) (string, string, error) {
	if a == nil {
		return "", "", nil
	}
	if c, ok := a.creds[host]; ok {
		return c[0], c[1], nil
	}
	for orig, m := range mirrors {
		if m == host {
			if c, ok := a.creds[orig]; ok {
				return c[0], c[1], nil
			}
		}
	}
	return "", "", nil
}

// refusal explains a registry's refusal to a pod's owner.
func (a *pullAuth) refusal(err error) error {
	msg := err.Error()
	if a == nil || !(strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "403 Forbidden") || strings.Contains(msg, "authorization failed")) {
		return err
	}
	if a.verify {
		return fmt.Errorf("the registry refused %s: a tenant pulls only its own repositories (<tenant>/…) and public ones: %w", a.who, err)
	}
	return fmt.Errorf("the registry refused %s: %w", a.who, err)
}
