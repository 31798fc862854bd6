package console

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"time"

	registryauth "github.com/cci-project/cci/internal/registry"

	"github.com/cci-project/cci/internal/metering"
	"github.com/cci-project/cci/internal/policy"
)

// FlavorOffer is one row of the flavor picker.
type FlavorOffer struct {
	// CPU in cores and Memory in GiB, as the form puts them in the pod's
	// resources (cpu: "0.5", memory: "1Gi").
	CPU    float64 `json:"cpu"`
	Memory float64 `json:"memoryGiB"`
	// Name is the flavor as people read it: "0.5 CPU / 1 GiB".
	Name string `json:"name"`
	// PricePerHour is what one pod of this flavor costs an hour.
	PricePerHour float64 `json:"pricePerHour"`
}

// Flavors is the flavor table as the console offers it.
type Flavors struct {
	Currency string        `json:"currency"`
	Flavors  []FlavorOffer `json:"flavors"`
	// Rule says which other sizes admission takes.
	Rule string `json:"rule"`
}

// offeredCPUs are the CPU sizes the picker lists, each with every memory
// ratio the flavor table allows; the form takes any other valid size too.
var offeredCPUs = []int64{250, 500, 1000, 2000, 4000, 8000, 16000, 32000}

// flavorTable lists the flavors of policy's table for offeredCPUs, priced.
func flavorTable(p metering.Prices) Flavors {
	perHour := func(cpu, gib float64) float64 { return 3600 * (cpu*p.PerCoreSecond + gib*p.PerGiBSecond) }
	out := Flavors{Currency: p.Currency, Rule: fmt.Sprintf("CPU %g..%g cores in steps of %g; memory %d..%d GiB per core, whole GiB (0.5 GiB only with 0.25 CPU)",
		float64(policy.MinCPU)/1000, float64(policy.MaxCPU)/1000, float64(policy.CPUStep)/1000, policy.MinRatio, policy.MaxRatio)}
	for _, mc := range offeredCPUs {
		seen := map[int64]bool{}
		for ratio := int64(policy.MinRatio); ratio <= policy.MaxRatio; ratio *= 2 {
			mem := mc * ratio * policy.GiB / 1000
			if mem%policy.GiB != 0 {
				mem = (mem/policy.GiB + 1) * policy.GiB
			}
			if mc == policy.MinCPU && ratio == policy.MinRatio {
				mem = policy.GiB / 2
			}
			f := policy.Flavor{MilliCPU: mc, Memory: mem}
			if seen[mem] || len(f.Check()) > 0 {
				continue
			}
			seen[mem] = true
			cpu, gib := float64(mc)/1000, float64(mem)/float64(policy.GiB)
			out.Flavors = append(out.Flavors, FlavorOffer{
				CPU: cpu, Memory: gib, Name: f.String(),
				PricePerHour: math.Round(perHour(cpu, gib)*1e6) / 1e6,
			})
		}
	}
	return out
}

func (s *Server) flavors(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, flavorTable(s.cfg.Prices))
}

// Repository is one repository of the built-in registry.
type Repository struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	// Image is how a pod names its first tag.
	Image string `json:"image"`
}

// registry lists the built-in registry's repositories and tags (the
// distribution API's catalog), for the image picker. The console reads
// the catalog as the operator and shows each user what it may pull: the
// operator everything, a tenant its own repositories and the public ones,
// anyone else the public ones.
func (s *Server) registry(w http.ResponseWriter, r *http.Request, sess session) {
	if s.cfg.RegistryAddr == "" {
		writeError(w, http.StatusServiceUnavailable, "this control plane runs no registry")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	mayPull := func(string) bool { return true }
	if me, err := s.whoAmI(ctx, sess.Cred); err != nil || !me.Operator {
		id := registryIdentity(sess, me)
		public := s.cfg.RegistryPublic
		if public == nil {
			public = func(string) bool { return false }
		}
		mayPull = func(repo string) bool {
			return registryauth.Authorize(id, repo, registryauth.ActionPull, public) == nil
		}
	}
	base := "http://" + s.cfg.RegistryAddr
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if err := s.getJSON(ctx, base+"/v2/_catalog?n=1000", &cat); err != nil {
		writeError(w, http.StatusBadGateway, "registry catalog: "+err.Error())
		return
	}
	repos := []Repository{}
	for _, name := range cat.Repositories {
		if !mayPull(name) {
			continue
		}
		var tl struct {
			Tags []string `json:"tags"`
		}
		if err := s.getJSON(ctx, base+"/v2/"+name+"/tags/list", &tl); err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("registry tags of %q: %s", name, err))
			return
		}
		sort.Strings(tl.Tags)
		repo := Repository{Name: name, Tags: tl.Tags}
		if len(tl.Tags) > 0 {
			repo.Image = s.cfg.RegistryAddr + "/" + name + ":" + tl.Tags[0]
		}
		repos = append(repos, repo)
	}
	writeJSON(w, map[string]any{"registry": s.cfg.RegistryAddr, "repositories": repos})
}

// registryIdentity is who a session's user is to the registry: a tenant
// (the namespace of its service account) or nobody in particular.
func registryIdentity(sess session, me *Me) registryauth.Identity {
	ns := sess.Namespace
	if me != nil && me.Namespace != "" {
		ns = me.Namespace
	}
	return registryauth.Identity{Tenant: ns}
}

// getJSON reads a registry URL as the operator (when the console has its
// credentials).
func (s *Server) getJSON(ctx context.Context, u string, v any) error {
	if _, err := url.Parse(u); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if s.cfg.RegistryPassword != "" {
		req.SetBasicAuth(registryauth.OperatorUser, s.cfg.RegistryPassword)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
