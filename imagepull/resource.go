package imagepull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/resource"
)

// maxResourceBytes caps a configuration resource (policy, auth.json,
// sigstore config, key) read from a file.
const maxResourceBytes = 4 << 20

// fetchResource returns the bytes a configuration value names: a resource
// URI (kbs://…, kbs+<plugin>://…) fetched through the KBC, or a local file
// (an absolute path or file:// URL). Fetched secrets stay in memory.
func fetchResource(ctx context.Context, client kbc.Client, where string) ([]byte, error) {
	switch {
	case strings.HasPrefix(where, "kbs://") || strings.HasPrefix(where, "kbs+"):
		uri, err := resource.Parse(where)
		if err != nil {
			return nil, err
		}
		if client == nil {
			return nil, fmt.Errorf("fetch %s: no KBC is configured", where)
		}
		data, err := client.GetResource(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", where, err)
		}
		return data, nil
	case strings.HasPrefix(where, "file://"):
		return readFile(strings.TrimPrefix(where, "file://"))
	case strings.HasPrefix(where, "/"):
		return readFile(where)
	}
	return nil, fmt.Errorf("%q is neither a kbs:// resource URI nor an absolute path", where)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxResourceBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxResourceBytes {
		return nil, fmt.Errorf("read %s: %w", path, errors.New("file is larger than 4 MiB"))
	}
	return data, nil
}
