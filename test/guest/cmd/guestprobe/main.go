// Command guestprobe is TEST-ONLY code that runs inside the e2e guest image
// (test/guest/image) as the stand-in for the kata agent and shim: it
// extracts initdata the way kata-agent does, supervises the daemons, bridges
// host TCP (through QEMU hostfwd) to the daemons' AF_VSOCK listeners, and
// lets the host harness run shell scripts in the guest.
//
//	guestprobe bridge TCPPORT=CID:PORT [...]
//	guestprobe serve [ADDR]                 (default :8080)
//	guestprobe initdata OUTDIR
//	guestprobe supervise [-log FILE] [-ready FILE] NAME CMD [ARG...]
//	guestprobe wait [-t SECONDS] [-pid PID] TARGET...
//	guestprobe vsock-echo PORT
//
// It is never part of a production image.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: guestprobe COMMAND [ARGS]

  bridge TCPPORT=CID:PORT [...]   forward TCP 0.0.0.0:TCPPORT to AF_VSOCK CID:PORT
  serve [ADDR]                    HTTP: POST /sh?timeout=S runs the body with /bin/sh,
                                  GET /healthz; ADDR defaults to :8080
  initdata OUTDIR                 find kata's initdata block device (/dev/vd*, /dev/sd*)
                                  and write OUTDIR/initdata.toml, aa.toml, cdh.toml
  supervise [-log FILE] [-ready FILE] NAME CMD [ARG...]
                                  run CMD, copy its output to stdout as "[NAME] line"
                                  and to FILE; report its exit
  wait [-t SECONDS] [-pid PID] TARGET...
                                  wait until every TARGET answers: unix:PATH,
                                  tcp:HOST:PORT, listen:PORT (TCP, without connecting),
                                  vsock:CID:PORT, http://URL, file:PATH
  vsock-echo PORT                 echo server on AF_VSOCK PORT (any CID)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "bridge":
		err = bridgeMain(ctx, args[1:], stderr)
	case "serve":
		err = serveMain(ctx, args[1:], stderr)
	case "initdata":
		err = initdataMain(args[1:], stdout)
	case "supervise":
		return superviseMain(ctx, args[1:], stdout, stderr)
	case "wait":
		err = waitMain(ctx, args[1:], stderr)
	case "vsock-echo":
		err = vsockEchoMain(ctx, args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "guestprobe %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
