package runtime

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	v1 "k8s.io/api/core/v1"
)

// pulledImage is an image ready to run: unpacked in the snapshotter.
type pulledImage struct {
	image  containerd.Image
	ref    string // normalized reference, e.g. docker.io/library/busybox:latest
	id     string // ref@digest, as the kubelet reports imageID
	pulled bool   // fetched now rather than found locally
	took   time.Duration
}

// puller pulls images once even when many pods ask at the same time.
type puller struct {
	client      *containerd.Client
	snapshotter string
	insecure    []string
	// mirrors maps a registry host to the host:port that serves it here.
	mirrors map[string]string

	mu       sync.Mutex
	inflight map[string]*pullCall
	// verified holds who|ref|digest of images here that the registry let
	// that identity pull (see pullAuth.verify).
	verified map[string]bool
}

// pulledLabel marks images this agent pulled from a registry; only those
// are checked against the registry again for another tenant (an image put
// here some other way has no registry to ask, as the kubelet's
// NeverVerifyPreloadedImages).
const pulledLabel = "cci.io/pulled"

type pullCall struct {
	done chan struct{}
	img  *pulledImage
	err  error
}

func newPuller(c *containerd.Client, snapshotter string, insecure []string, mirrors map[string]string) *puller {
	return &puller{client: c, snapshotter: snapshotter, insecure: insecure, mirrors: mirrors, inflight: map[string]*pullCall{}, verified: map[string]bool{}}
}

// ensure returns the image, pulling it as auth when the policy asks for it
// or it is not here. pulling is called when a pull starts.
func (p *puller) ensure(ctx context.Context, image string, policy v1.PullPolicy, auth *pullAuth, pulling func(string)) (*pulledImage, error) {
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", image, err)
	}
	ref := named.String()
	if policy == "" {
		policy = v1.PullIfNotPresent
		if _, tagged := named.(reference.Tagged); tagged && named.(reference.Tagged).Tag() == "latest" {
			policy = v1.PullAlways
		}
	}
	if policy != v1.PullAlways {
		img, err := p.client.GetImage(ctx, ref)
		if err == nil {
			if err := p.verify(ctx, ref, img, auth); err != nil {
				return nil, err
			}
			if err := p.unpack(ctx, img); err != nil {
				return nil, err
			}
			return &pulledImage{image: img, ref: ref, id: imageID(named, img)}, nil
		}
		if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("look up image %q: %w", ref, err)
		}
		if policy == v1.PullNever {
			return nil, fmt.Errorf("image %q is not present on the node and imagePullPolicy is Never", image)
		}
	}

	// Pulls are shared only between pods of one identity: another's may
	// not be allowed the image.
	key := ref
	if auth != nil {
		key = auth.who + "|" + ref
	}
	p.mu.Lock()
	if call, ok := p.inflight[key]; ok {
		p.mu.Unlock()
		select {
		case <-call.done:
			return call.img, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &pullCall{done: make(chan struct{})}
	p.inflight[key] = call
	p.mu.Unlock()

	pulling(ref)
	start := time.Now()
	img, err := p.client.Pull(ctx, ref,
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(p.snapshotter),
		containerd.WithResolver(p.resolver(auth)),
		containerd.WithPullLabel(pulledLabel, "true"),
	)
	if err == nil {
		call.img = &pulledImage{image: img, ref: ref, id: imageID(named, img), pulled: true, took: time.Since(start)}
		if auth != nil {
			p.mu.Lock()
			p.verified[auth.who+"|"+ref+"|"+img.Target().Digest.String()] = true
			p.mu.Unlock()
		}
	} else {
		err = auth.refusal(err)
	}
	call.err = err
	p.mu.Lock()
	delete(p.inflight, key)
	p.mu.Unlock()
	close(call.done)
	return call.img, call.err
}

func (p *puller) unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, p.snapshotter)
	if err != nil {
		return fmt.Errorf("check image %q: %w", img.Name(), err)
	}
	if !ok {
		if err := img.Unpack(ctx, p.snapshotter); err != nil {
			return fmt.Errorf("unpack image %q: %w", img.Name(), err)
		}
	}
	return nil
}

// verify checks that auth may pull img, already here, from its registry:
// the image may have come for another tenant's pod.
func (p *puller) verify(ctx context.Context, ref string, img containerd.Image, auth *pullAuth) error {
	if auth == nil || !auth.verify || img.Labels()[pulledLabel] == "" {
		return nil
	}
	key := auth.who + "|" + ref + "|" + img.Target().Digest.String()
	p.mu.Lock()
	ok := p.verified[key]
	p.mu.Unlock()
	if ok {
		return nil
	}
	if _, _, err := p.resolver(auth).Resolve(ctx, ref); err != nil {
		return auth.refusal(fmt.Errorf("check access to image %q, which is on this host: %w", ref, err))
	}
	p.mu.Lock()
	p.verified[key] = true
	p.mu.Unlock()
	return nil
}

func (p *puller) resolver(auth *pullAuth) remotes.Resolver {
	plain := func(host string) (bool, error) {
		if slices.Contains(p.insecure, host) {
			return true, nil
		}
		return docker.MatchLocalhost(host)
	}
	authorizer := docker.NewDockerAuthorizer(docker.WithAuthCreds(func(host string) (string, string, error) {
		return auth.lookup(host, p.mirrors)
	}))
	hosts := docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(plain), docker.WithAuthorizer(authorizer))
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: func(host string) ([]docker.RegistryHost, error) {
			// A mirror serves the same repositories under another address
			// (the built-in registry seen from a host in its own network
			// namespace); the image keeps the name it was asked by.
			if m, ok := p.mirrors[host]; ok {
				return hosts(m)
			}
			return hosts(host)
		},
	})
}

func imageID(named reference.Named, img containerd.Image) string {
	return reference.TrimNamed(named).String() + "@" + img.Target().Digest.String()
}
