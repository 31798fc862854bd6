package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cci-project/cci/internal/metering"
)

// DayUsage is one UTC day of a month's usage.
type DayUsage struct {
	Date string `json:"date"` // 2006-01-02
	metering.Usage
}

// Daily is this month's usage day by day.
type Daily struct {
	Currency string `json:"currency"`
	// Namespace is the namespace the days are about; empty: all the
	// caller may read.
	Namespace string         `json:"namespace,omitempty"`
	Days      []DayUsage     `json:"days"`
	Total     metering.Usage `json:"total"`
}

// dailyUsage answers GET /cci/usage/daily?namespace=NS: the usage
// endpoint asked once per day of this month so far, as the user (it
// answers per window, not per day), summed for the namespace.
func (s *Server) dailyUsage(w http.ResponseWriter, r *http.Request, sess session) {
	if s.usage == nil {
		writeError(w, http.StatusServiceUnavailable, "this control plane runs no usage endpoint")
		return
	}
	tr, err := s.transportFor(sess.Cred)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "session credential: "+err.Error())
		return
	}
	ns := r.URL.Query().Get("namespace")
	now := s.cfg.Now().UTC()
	start := metering.MonthStart(now)
	var days []time.Time
	for d := start; d.Before(now); d = d.AddDate(0, 0, 1) {
		days = append(days, d)
	}
	out := Daily{Namespace: ns, Days: make([]DayUsage, len(days))}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: tr}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr *usageError
	)
	// A few days at a time: each is a report over the month's records.
	sem := make(chan struct{}, 4)
	for i, d := range days {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rep, uerr := s.usageReport(ctx, client, sess, d, d.AddDate(0, 0, 1))
			mu.Lock()
			defer mu.Unlock()
			if uerr != nil {
				if firstErr == nil {
					firstErr = uerr
				}
				return
			}
			out.Currency = rep.Currency
			out.Days[i] = DayUsage{Date: d.Format(time.DateOnly), Usage: usageIn(rep, ns)}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		writeError(w, firstErr.code, firstErr.msg)
		return
	}
	for _, d := range out.Days {
		out.Total = addUsage(out.Total, d.Usage)
	}
	writeJSON(w, out)
}

type usageError struct {
	code int
	msg  string
}

func (s *Server) usageReport(ctx context.Context, client *http.Client, sess session, since, until time.Time) (*metering.Report, *usageError) {
	u := *s.usage
	u.Path = strings.TrimSuffix(u.Path, "/") + metering.UsagePath
	u.RawQuery = url.Values{"since": {since.Format(time.RFC3339)}, "until": {until.Format(time.RFC3339)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &usageError{http.StatusInternalServerError, err.Error()}
	}
	setCredential(req.Header, sess.Cred)
	resp, err := client.Do(req)
	if err != nil {
		return nil, &usageError{http.StatusBadGateway, "the usage endpoint did not answer (is the control plane restarting?): " + err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(b, &st) != nil || st.Message == "" {
			st.Message = strings.TrimSpace(string(b))
		}
		return nil, &usageError{resp.StatusCode, fmt.Sprintf("usage of %s: %s", since.Format(time.DateOnly), st.Message)}
	}
	rep := &metering.Report{}
	if err := json.NewDecoder(resp.Body).Decode(rep); err != nil {
		return nil, &usageError{http.StatusBadGateway, "usage report: " + err.Error()}
	}
	return rep, nil
}

// usageIn is a report's usage of one namespace, or its total.
func usageIn(rep *metering.Report, ns string) metering.Usage {
	if ns == "" {
		return rep.Total
	}
	var u metering.Usage
	for _, t := range rep.Tenants {
		for _, n := range t.Namespaces {
			if n.Namespace == ns {
				u = addUsage(u, n.Usage)
			}
		}
	}
	return u
}

func addUsage(a, b metering.Usage) metering.Usage {
	return metering.Usage{
		Seconds: a.Seconds + b.Seconds, CoreSeconds: a.CoreSeconds + b.CoreSeconds, GiBSeconds: a.GiBSeconds + b.GiBSeconds,
		GPUSeconds: a.GPUSeconds + b.GPUSeconds, Cost: a.Cost + b.Cost,
	}
}
