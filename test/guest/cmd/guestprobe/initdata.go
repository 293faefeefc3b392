package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/guestd/guestd/agent/config"
)

// initdataMain does what kata-agent does at boot (src/agent/src/initdata.rs):
// find the block device that starts with the initdata magic among /dev/vd*
// and /dev/sd*, decode it, and write initdata.toml (the document byte for
// byte) plus the [data] entries aa.toml and cdh.toml into OUTDIR. kata
// fails its start-up when the device is there but cannot be decoded; so do
// we (exit 1). No device is not an error.
func initdataMain(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("want OUTDIR")
	}
	dev, err := findInitdataDevice("/dev", true)
	if err != nil {
		return err
	}
	if dev == "" {
		fmt.Fprintln(stdout, "initdata: no initdata device found (looked at /dev/vd*, /dev/sd*)")
		return nil
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	d, written, err := extractInitdata(f, args[0])
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	fmt.Fprintf(stdout, "initdata: %s: version %s, %s digest %x; wrote %s\n",
		dev, d.Version, d.Algorithm, d.Digest, strings.Join(written, ", "))
	if _, ok := d.Policy(); ok {
		fmt.Fprintln(stdout, "initdata: has policy.rego (kata gives it to the agent policy; not written)")
	}
	return nil
}

// findInitdataDevice returns the first entry of dir (in name order) whose
// name starts with "vd" or "sd" and whose first 8 bytes are the initdata
// magic, or "" when there is none. With blockOnly, only block devices are
// considered (as kata does); tests pass false to use regular files.
func findInitdataDevice(dir string, blockOnly bool) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "vd") || strings.HasPrefix(n, "sd") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if blockOnly && (st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0) {
			continue
		}
		if !blockOnly && !st.Mode().IsRegular() {
			continue
		}
		ok, err := hasInitdataMagic(p)
		if err != nil {
			continue // kata logs and goes on
		}
		if ok {
			return p, nil
		}
	}
	return "", nil
}

func hasInitdataMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [len(config.InitdataMagic)]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, err
	}
	return bytes.Equal(magic[:], []byte(config.InitdataMagic)), nil
}

// initdataFiles maps [data] keys to the files kata writes them to.
var initdataFiles = []string{config.InitdataKeyAA, config.InitdataKeyCDH}

// extractInitdata decodes an initdata block from r and writes outdir/
// initdata.toml and, when present in [data], outdir/aa.toml and cdh.toml.
// It returns the parsed document and the names of the files written.
// Nothing is written unless the whole document decodes and validates.
func extractInitdata(r io.Reader, outdir string) (*config.Initdata, []string, error) {
	raw, err := config.ReadInitdataBlock(r, 0)
	if err != nil {
		return nil, nil, err
	}
	d, err := config.ParseInitdata(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(outdir, 0o755); err != nil {
		return nil, nil, err
	}
	files := []struct {
		name string
		data []byte
	}{{"initdata.toml", raw}}
	for _, k := range initdataFiles {
		if s, ok := d.Data[k]; ok {
			files = append(files, struct {
				name string
				data []byte
			}{k, []byte(s)})
		}
	}
	var written []string
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(outdir, f.name), f.data, 0o600); err != nil {
			return nil, nil, err
		}
		written = append(written, f.name)
	}
	return d, written, nil
}
