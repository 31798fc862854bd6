package runtime

import (
	"encoding/base64"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestAddDockerCreds(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("bob:pw2"))
	creds := map[string][2]string{}
	err := addDockerCreds(creds, &v1.Secret{Type: v1.SecretTypeDockerConfigJson, Data: map[string][]byte{
		v1.DockerConfigJsonKey: []byte(`{"auths":{"127.0.0.1:5000":{"username":"a","password":"pw"},"https://10.0.0.1:5000/v1/":{"auth":"` + auth + `"}}}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := &pullAuth{creds: creds}
	for host, want := range map[string]string{"127.0.0.1:5000": "a:pw", "10.0.0.1:5000": "bob:pw2", "10.0.0.2:5000": ":", "mirror:5000": "a:pw"} {
		u, p, _ := a.lookup(host, map[string]string{"127.0.0.1:5000": "mirror:5000"})
		if u+":"+p != want {
			t.Errorf("lookup(%s) = %s:%s, want %s", host, u, p, want)
		}
	}
	for _, bad := range []*v1.Secret{
		{Type: v1.SecretTypeOpaque},
		{Type: v1.SecretTypeDockerConfigJson, Data: map[string][]byte{v1.DockerConfigJsonKey: []byte("{")}},
	} {
		if err := addDockerCreds(map[string][2]string{}, bad); err == nil {
			t.Errorf("secret %v accepted", bad.Type)
		}
	}
	// A refusal names who pulled and why.
	err = (&pullAuth{who: `tenant "b"`, verify: true}).refusal(errString("unexpected status: 403 Forbidden"))
	if !strings.Contains(err.Error(), `the registry refused tenant "b": a tenant pulls only its own repositories`) {
		t.Errorf("refusal = %v", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
