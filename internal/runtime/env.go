package runtime

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/kubernetes/pkg/kubelet/envvars"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// containerEnv computes a container's environment the way the kubelet
// does: service links, then envFrom, then env in order, each value able to
// refer to the variables before it with $(NAME). It runs when the container
// starts, so that status.podIP and live configMap values are known.
func (r *Runtime) containerEnv(pod *v1.Pod, c *v1.Container, podIPs []string) ([]v1.EnvVar, error) {
	var result []v1.EnvVar
	tmp := map[string]string{}
	add := func(name, value string) {
		if _, seen := tmp[name]; !seen {
			result = append(result, v1.EnvVar{Name: name})
		}
		tmp[name] = value
	}
	for _, e := range r.serviceEnv(pod) {
		add(e.Name, e.Value)
	}
	mapping := expansion.MappingFuncFor(tmp)

	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			optional := from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
			cm, err := r.cfg.ConfigMaps.ConfigMaps(pod.Namespace).Get(from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, &configError{fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)}
			}
			data = cm.Data
		case from.SecretRef != nil:
			optional := from.SecretRef.Optional != nil && *from.SecretRef.Optional
			s, err := r.cfg.Secrets.Secrets(pod.Namespace).Get(from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, &configError{fmt.Errorf("secret %q not found", from.SecretRef.Name)}
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			// Any key is a name, as on a kubelet: the API validates keys,
			// and names such as "1-data" are valid since relaxed
			// environment variable validation.
			add(from.Prefix+k, v)
		}
	}

	for _, e := range c.Env {
		value := e.Value
		if value != "" {
			value = expansion.Expand(value, mapping)
		}
		if e.ValueFrom != nil {
			v, ok, err := r.envValueFrom(pod, c, podIPs, e.ValueFrom)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			value = v
		}
		add(e.Name, value)
	}
	for i := range result {
		result[i].Value = tmp[result[i].Name]
	}
	return result, nil
}

// envValueFrom resolves one valueFrom; ok is false for an optional source that is absent.
func (r *Runtime) envValueFrom(pod *v1.Pod, c *v1.Container, podIPs []string, src *v1.EnvVarSource) (string, bool, error) {
	switch {
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := r.cfg.ConfigMaps.ConfigMaps(pod.Namespace).Get(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Errorf("configmap %q not found", ref.Name)}
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
		}
		return v, true, nil
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := r.cfg.Secrets.Secrets(pod.Namespace).Get(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Errorf("secret %q not found", ref.Name)}
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)}
		}
		return string(v), true, nil
	case src.FieldRef != nil:
		switch src.FieldRef.FieldPath {
		case "status.podIP":
			if len(podIPs) > 0 {
				return podIPs[0], true, nil
			}
			return "", true, nil
		case "status.podIPs":
			return strings.Join(podIPs, ","), true, nil
		case "status.hostIP", "status.hostIPs":
			return r.cfg.HostIP, true, nil
		}
		v, err := podField(pod, src.FieldRef.FieldPath)
		if err != nil {
			return "", false, &configError{err}
		}
		return v, true, nil
	case src.ResourceFieldRef != nil:
		ref := *src.ResourceFieldRef
		if ref.ContainerName == "" {
			ref.ContainerName = c.Name
		}
		v, err := resourceField(pod, &ref, r.cfg.Allocatable)
		if err != nil {
			return "", false, &configError{err}
		}
		return v, true, nil
	}
	return "", false, nil
}

// serviceEnv is the docker-links style variables of the Services a pod may
// see: those of its namespace when service links are on, and always the
// `kubernetes` Service of the default namespace.
func (r *Runtime) serviceEnv(pod *v1.Pod) []v1.EnvVar {
	if r.cfg.Services == nil {
		return nil
	}
	all, err := r.cfg.Services.List(labels.Everything())
	if err != nil {
		return nil
	}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	seen := map[string]*v1.Service{}
	for _, s := range all {
		if !v1helperIsServiceIPSet(s) {
			continue
		}
		if s.Namespace == metaDefault && s.Name == "kubernetes" {
			if _, ok := seen[s.Name]; !ok {
				seen[s.Name] = s
			}
			continue
		}
		if s.Namespace == pod.Namespace && links {
			seen[s.Name] = s
		}
	}
	var list []*v1.Service
	for _, s := range seen {
		list = append(list, s)
	}
	return envvars.FromServices(list)
}

const metaDefault = "default"

func v1helperIsServiceIPSet(s *v1.Service) bool {
	return s.Spec.ClusterIP != v1.ClusterIPNone && s.Spec.ClusterIP != ""
}

// expandCommand expands $(NAME) in a container's command and args with its
// environment, as the kubelet does.
func expandCommand(args []string, env []v1.EnvVar) []string {
	vals := make(map[string]string, len(env))
	for _, e := range env {
		vals[e.Name] = e.Value
	}
	mapping := expansion.MappingFuncFor(vals)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expansion.Expand(a, mapping)
	}
	return out
}
