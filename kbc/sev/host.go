package sev

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// modprobePath is the modprobe upstream ran.
const modprobePath = "/sbin/modprobe"

// hostSystem is the real kernel.
type hostSystem struct{}

func (hostSystem) modprobe(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, modprobePath, args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 512 {
			msg = msg[:512] + "..."
		}
		if msg != "" {
			return fmt.Errorf("%s %s: %w: %s", modprobePath, strings.Join(args, " "), err, msg)
		}
		return fmt.Errorf("%s %s: %w", modprobePath, strings.Join(args, " "), err)
	}
	return nil
}
