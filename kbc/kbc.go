package kbc

import (
	"context"

	"github.com/guestd/guestd/kbc/resource"
)

// Client fetches confidential resources by URI. Upstream calls this a KBC
// (key broker client).
type Client interface {
	GetResource(ctx context.Context, uri resource.URI) ([]byte, error)
}
