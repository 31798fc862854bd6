package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
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

// dailyUsage answers GET /cci/usage/daily?namespace=NS: this month's
// report from the usage endpoint, as the user, broken down by day
// (by=day), the namespace's part of each day.
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
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	rep, uerr := s.dailyReport(ctx, &http.Client{Transport: tr}, sess, metering.MonthStart(now), now)
	if uerr != nil {
		writeError(w, uerr.code, uerr.msg)
		return
	}
	out := Daily{Currency: rep.Currency, Namespace: ns, Days: make([]DayUsage, 0, len(rep.Days))}
	for _, d := range rep.Days {
		day := DayUsage{Date: d.Date, Usage: d.Usage}
		if ns != "" {
			day.Usage = metering.Usage{}
			for _, n := range d.Namespaces {
				if n.Namespace == ns {
					day.Usage = addUsage(day.Usage, n.Usage)
				}
			}
		}
		out.Days = append(out.Days, day)
		out.Total = addUsage(out.Total, day.Usage)
	}
	writeJSON(w, out)
}

type usageError struct {
	code int
	msg  string
}

// dailyReport asks the usage endpoint, as the user, for [since, until) by day.
func (s *Server) dailyReport(ctx context.Context, client *http.Client, sess session, since, until time.Time) (*metering.Report, *usageError) {
	u := *s.usage
	u.Path = strings.TrimSuffix(u.Path, "/") + metering.UsagePath
	u.RawQuery = url.Values{"since": {since.Format(time.RFC3339)}, "until": {until.Format(time.RFC3339)}, "by": {"day"}}.Encode()
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
		return nil, &usageError{resp.StatusCode, fmt.Sprintf("usage since %s: %s", since.Format(time.DateOnly), st.Message)}
	}
	rep := &metering.Report{}
	if err := json.NewDecoder(resp.Body).Decode(rep); err != nil {
		return nil, &usageError{http.StatusBadGateway, "usage report: " + err.Error()}
	}
	return rep, nil
}

func addUsage(a, b metering.Usage) metering.Usage {
	return metering.Usage{
		Seconds: a.Seconds + b.Seconds, CoreSeconds: a.CoreSeconds + b.CoreSeconds, GiBSeconds: a.GiBSeconds + b.GiBSeconds,
		GPUSeconds: a.GPUSeconds + b.GPUSeconds, Cost: a.Cost + b.Cost,
	}
}
