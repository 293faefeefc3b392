package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/offline"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/sev"
	"github.com/guestd/guestd/kbc/teekey"
)

// KBCOptions configures NewKBC. Fields apply to the KBCs that use them.
type KBCOptions struct {
	// cc_kbc
	Attester     attester.Attester
	CertPEM      []byte
	KeyAlgorithm teekey.Algorithm
	InitData     *protocol.InitData
	Passport     bool
	Timeout      time.Duration
	// offline_fs_kbc
	Offline offline.Options
	// offline_sev_kbc
	SEV sev.Options
	// Logger receives the KBCs' logs.
	Logger *slog.Logger
}

// NewKBC builds the KBC that aa_kbc_params names.
func NewKBC(ctx context.Context, p config.KbcParams, o KBCOptions) (kbc.Client, error) {
	switch p.KBC {
	case config.KBCCC:
		c, err := kbs.New(kbs.Config{
			URL: p.URI, CertPEM: o.CertPEM, KeyAlgorithm: o.KeyAlgorithm, Attester: o.Attester,
			InitData: o.InitData, Passport: o.Passport, Timeout: o.Timeout, Logger: o.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("cc_kbc: %w", err)
		}
		return c, nil
	case config.KBCOfflineFS:
		return offline.New(o.Offline), nil
	case config.KBCOfflineSEV:
		k, err := sev.New(ctx, o.SEV)
		if err != nil {
			return nil, fmt.Errorf("offline_sev_kbc: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("KBC %q is not supported", p.KBC)
}
