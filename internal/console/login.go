package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// loginRequest is what the login page sends: a token, or a kubeconfig's text.
type loginRequest struct {
	Token      string `json:"token"`
	Kubeconfig string `json:"kubeconfig"`
}

// Me is who a session is, as the app shows it.
type Me struct {
	User   string   `json:"user"`
	Groups []string `json:"groups"`
	// Namespace is the user's own: a tenant's service-account namespace,
	// or the kubeconfig context's.
	Namespace string `json:"namespace,omitempty"`
	// Operator says the user may list nodes: the operator pages are for it.
	Operator bool `json:"operator"`
	// Registry is where pods name the built-in registry's images.
	Registry string `json:"registry"`
}

// maxLoginBody bounds a login request (a kubeconfig is a few KiB).
const maxLoginBody = 1 << 20

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxLoginBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "login: want JSON {\"token\": …} or {\"kubeconfig\": …}: "+err.Error())
		return
	}
	cred, ns, err := credentialFrom(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	me, err := s.whoAmI(r.Context(), cred)
	if err != nil {
		s.refused(w, r.Context(), cred, err)
		return
	}
	if ns == "" {
		ns = me.Namespace
	}
	me.Namespace = ns
	exp := s.cfg.Now().Add(sessionTTL)
	value, err := s.seal.seal(session{Cred: cred, User: me.User, Namespace: ns, Expires: exp})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "seal session: "+err.Error())
		return
	}
	http.SetCookie(w, sessionCookie(value, exp))
	s.log.Info("console login", "user", me.User, "operator", me.Operator)
	writeJSON(w, me)
}

// refused answers a login whose credential the API did not take, with the
// reason: the TokenReview's when the console may ask for one.
func (s *Server) refused(w http.ResponseWriter, ctx context.Context, cred credential, err error) {
	if !apierrors.IsUnauthorized(err) {
		writeError(w, http.StatusBadGateway, "login: the API could not check the credential: "+err.Error())
		return
	}
	why := "the API answered 401 Unauthorized"
	if cred.Token != "" && s.cfg.Admin != nil {
		tr, rerr := s.cfg.Admin.AuthenticationV1().TokenReviews().Create(ctx,
			&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: cred.Token}}, metav1.CreateOptions{})
		if rerr == nil && !tr.Status.Authenticated && tr.Status.Error != "" {
			why = tr.Status.Error
		}
	}
	what := "token"
	if cred.Token == "" {
		what = "client certificate"
	}
	writeError(w, http.StatusUnauthorized, fmt.Sprintf("login refused: the %s is not valid (%s). Use the token or kubeconfig that `cci tenant create` wrote, or the admin kubeconfig of this control plane.", what, why))
}

// credentialFrom reads the credential of a login request, and the
// kubeconfig context's namespace.
func credentialFrom(req loginRequest) (credential, string, error) {
	if t := trimBearer(req.Token); t != "" {
		if strings.ContainsAny(t, " \t\n") {
			return credential{}, "", errors.New("login: the token has blanks inside; paste the token alone (the value of `token:` in the kubeconfig)")
		}
		return credential{Token: t}, "", nil
	}
	if strings.TrimSpace(req.Kubeconfig) == "" {
		return credential{}, "", errors.New("login: give a token or a kubeconfig")
	}
	kc, err := clientcmd.Load([]byte(req.Kubeconfig))
	if err != nil {
		return credential{}, "", fmt.Errorf("login: the kubeconfig does not parse: %w", err)
	}
	kctx := kc.Contexts[kc.CurrentContext]
	if kctx == nil {
		return credential{}, "", fmt.Errorf("login: the kubeconfig's current context %q is not among its contexts", kc.CurrentContext)
	}
	ai := kc.AuthInfos[kctx.AuthInfo]
	if ai == nil {
		return credential{}, "", fmt.Errorf("login: the kubeconfig has no user %q (named by context %q)", kctx.AuthInfo, kc.CurrentContext)
	}
	switch {
	case ai.Token != "":
		return credential{Token: strings.TrimSpace(ai.Token)}, kctx.Namespace, nil
	case len(ai.ClientCertificateData) > 0 && len(ai.ClientKeyData) > 0:
		return credential{CertPEM: ai.ClientCertificateData, KeyPEM: ai.ClientKeyData}, kctx.Namespace, nil
	case ai.TokenFile != "" || ai.ClientCertificate != "":
		return credential{}, "", fmt.Errorf("login: user %q of the kubeconfig names files (%s%s); the browser cannot send them: use a kubeconfig with the data inline (token, client-certificate-data)", kctx.AuthInfo, ai.TokenFile, ai.ClientCertificate)
	default:
		return credential{}, "", fmt.Errorf("login: user %q of the kubeconfig has neither a token nor a client certificate with its key", kctx.AuthInfo)
	}
}

// restConfig is a client configuration that acts as cred.
func (s *Server) restConfig(cred credential) *rest.Config {
	rc := &rest.Config{
		Host:            s.cfg.APIServer,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.cfg.CAPEM, CertData: cred.CertPEM, KeyData: cred.KeyPEM},
		BearerToken:     cred.Token,
		Timeout:         15 * time.Second,
		UserAgent:       "cci-console",
	}
	return rc
}

// whoAmI asks the API who cred is (SelfSubjectReview) and whether it may
// list nodes.
func (s *Server) whoAmI(ctx context.Context, cred credential) (*Me, error) {
	kube, err := kubernetes.NewForConfig(s.restConfig(cred))
	if err != nil {
		return nil, err
	}
	rev, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	u := rev.Status.UserInfo
	me := &Me{User: u.Username, Groups: u.Groups, Registry: s.cfg.RegistryAddr}
	if parts := strings.Split(u.Username, ":"); len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		me.Namespace = parts[2]
	}
	sar, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authzv1.ResourceAttributes{Resource: "nodes", Verb: "list"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	me.Operator = sar.Status.Allowed
	return me, nil
}

// session says who the cookie's user is, checking with the API that the
// credential still works: the app's first call on every load.
func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	sess, err := s.seal.sessionFrom(r, s.cfg.Now())
	if err != nil {
		http.SetCookie(w, clearCookie())
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	me, err := s.whoAmI(r.Context(), sess.Cred)
	if apierrors.IsUnauthorized(err) {
		http.SetCookie(w, clearCookie())
		writeError(w, http.StatusUnauthorized, credentialGone)
		return
	}
	if err != nil {
		writeError(w, http.StatusBadGateway, "the API could not say who this session is: "+err.Error())
		return
	}
	if sess.Namespace != "" {
		me.Namespace = sess.Namespace
	}
	writeJSON(w, me)
}

func (s *Server) logout(w http.ResponseWriter, _ *http.Request) {
	http.SetCookie(w, clearCookie())
	writeJSON(w, map[string]string{"message": "logged out"})
}
