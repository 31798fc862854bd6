package netpol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"sigs.k8s.io/kube-network-policies/pkg/network"
)

// verdictFunc judges one packet (the first of a new connection): true lets
// it pass.
type verdictFunc func(ctx context.Context, p *network.Packet) bool

// openQueue binds the NFQUEUE number and answers every packet queued there
// with judge's verdict until ctx ends or the returned queue is closed.
func openQueue(ctx context.Context, num uint16, judge verdictFunc, log *slog.Logger) (*nfqueue.Nfqueue, error) {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue: num,
		// GSO: no re-segmenting of offloaded packets for us, we read only
		// headers. Fail open: a full queue passes packets instead of
		// dropping them, like --queue-bypass when no one listens.
		Flags:        nfqueue.NfQaCfgFlagGSO | nfqueue.NfQaCfgFlagFailOpen,
		MaxPacketLen: 128, // IP and transport headers are enough
		MaxQueueLen:  1024,
		Copymode:     nfqueue.NfQnlCopyPacket,
		WriteTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("network policy: open NFQUEUE %d: %w", num, err)
	}
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		id := *a.PacketID
		verdict := nfqueue.NfAccept
		if a.Payload == nil {
			_ = nf.SetVerdict(id, verdict)
			return 0
		}
		p, err := network.ParsePacket(*a.Payload)
		if err != nil {
			// A packet we cannot read (an unknown protocol) passes: the
			// policies speak of TCP, UDP and SCTP ports only.
			log.Debug("unparsable packet accepted", "err", err)
			_ = nf.SetVerdict(id, verdict)
			return 0
		}
		p.ID = id
		if !judge(ctx, &p) {
			verdict = nfqueue.NfDrop
		}
		if err := nf.SetVerdict(id, verdict); err != nil {
			log.Warn("set NFQUEUE verdict", "id", id, "err", err)
		}
		return 0
	}
	onErr := func(err error) int {
		var opErr *netlink.OpError
		if errors.As(err, &opErr) && (opErr.Timeout() || opErr.Temporary()) {
			return 0
		}
		if ctx.Err() == nil {
			log.Warn("NFQUEUE receive", "err", err)
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		nf.Close()
		return nil, fmt.Errorf("network policy: listen on NFQUEUE %d: %w", num, err)
	}
	return nf, nil
}

// verdict asks the policy engine about p.
func (e *Enforcer) verdict(ctx context.Context, p *network.Packet) bool {
	ok, err := e.engine.EvaluatePacket(ctx, p)
	if err != nil {
		e.log.Warn("policy evaluation failed; packet dropped", "packet", p.String(), "err", err)
		return false
	}
	if !ok {
		e.log.Debug("packet denied by network policy", "packet", p.String())
	}
	return ok
}
