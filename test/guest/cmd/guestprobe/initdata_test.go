package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// initdataBlock lays doc out as kata's runtime writes the initdata device:
// magic, little-endian length of the gzip stream, the gzip stream, zero
// padding to a 512-byte sector.
func initdataBlock(t *testing.T, doc string) []byte {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(doc))
	zw.Close()
	var b bytes.Buffer
	b.WriteString("initdata")
	binary.Write(&b, binary.LittleEndian, uint64(z.Len()))
	b.Write(z.Bytes())
	if pad := b.Len() % 512; pad != 0 {
		b.Write(make([]byte, 512-pad))
	}
	return b.Bytes()
}

const (
	aaTOML  = "[token_configs.kbs]\nurl = \"http://10.0.2.100:8080\"\n"
	cdhTOML = "socket = \"unix:///run/confidential-containers/cdh.sock\"\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.100:8080\"\n"
)

func TestExtractInitdata(t *testing.T) {
	full := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = '''\n" + aaTOML + "'''\n\"cdh.toml\" = '''\n" + cdhTOML + "'''\n\"policy.rego\" = '''\npackage agent_policy\n'''\n"
	aaOnly := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = '''\n" + aaTOML + "'''\n"
	noData := "version = \"0.1.0\"\nalgorithm = \"sha512\"\n[data]\n"

	tests := []struct {
		name    string
		block   func(t *testing.T) []byte
		files   map[string]string // expected files in OUTDIR
		wantErr string
	}{
		{name: "aa, cdh and policy", block: func(t *testing.T) []byte { return initdataBlock(t, full) },
			files: map[string]string{"initdata.toml": full, "aa.toml": aaTOML, "cdh.toml": cdhTOML}},
		{name: "aa only", block: func(t *testing.T) []byte { return initdataBlock(t, aaOnly) },
			files: map[string]string{"initdata.toml": aaOnly, "aa.toml": aaTOML}},
		{name: "empty data", block: func(t *testing.T) []byte { return initdataBlock(t, noData) },
			files: map[string]string{"initdata.toml": noData}},
		{name: "bad magic", block: func(t *testing.T) []byte {
			b := initdataBlock(t, full)
			copy(b, "initdatx")
			return b
		}, wantErr: "magic"},
		{name: "truncated", block: func(t *testing.T) []byte { return initdataBlock(t, full)[:40] }, wantErr: "truncated"},
		{name: "not gzip", block: func(t *testing.T) []byte {
			b := initdataBlock(t, full)
			b[16] ^= 0xff
			return b
		}, wantErr: "gunzip"},
		{name: "wrong version", block: func(t *testing.T) []byte {
			return initdataBlock(t, strings.Replace(full, "0.1.0", "0.2.0", 1))
		}, wantErr: "version"},
		{name: "bad algorithm", block: func(t *testing.T) []byte {
			return initdataBlock(t, strings.Replace(full, "sha256", "md5", 1))
		}, wantErr: "algorithm"},
		{name: "no data table", block: func(t *testing.T) []byte {
			return initdataBlock(t, "version = \"0.1.0\"\nalgorithm = \"sha256\"\n")
		}, wantErr: "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "initdata")
			d, written, err := extractInitdata(bytes.NewReader(tt.block(t)), out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(out); !os.IsNotExist(serr) {
					t.Errorf("OUTDIR exists after a failure (%v): nothing may be written", serr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(out, e.Name()))
				got[e.Name()] = string(b)
			}
			if !reflect.DeepEqual(got, tt.files) {
				t.Errorf("files = %q, want %q", got, tt.files)
			}
			var want []string
			for k := range tt.files {
				want = append(want, k)
			}
			sort.Strings(want)
			sort.Strings(written)
			if !reflect.DeepEqual(written, want) {
				t.Errorf("written = %v, want %v", written, want)
			}
			if d.Algorithm == "sha256" {
				if sum := sha256.Sum256([]byte(tt.files["initdata.toml"])); !bytes.Equal(d.Digest, sum[:]) {
					t.Errorf("digest %x, want sha256 of the raw document %x", d.Digest, sum)
				}
			}
		})
	}
}

func TestFindInitdataDevice(t *testing.T) {
	good := initdataBlock(t, "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n")
	tests := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{name: "none", files: map[string][]byte{"vda": make([]byte, 4096)}, want: ""},
		{name: "empty dir", files: nil, want: ""},
		{name: "second disk", files: map[string][]byte{"vda": make([]byte, 4096), "vdb": good}, want: "vdb"},
		{name: "scsi", files: map[string][]byte{"sda": good}, want: "sda"},
		{name: "first in name order", files: map[string][]byte{"vdc": good, "sdb": good}, want: "sdb"},
		{name: "other names ignored", files: map[string][]byte{"xvda": good, "loop0": good, "initdata": good}, want: ""},
		{name: "short file skipped", files: map[string][]byte{"vda": []byte("init"), "vdb": good}, want: "vdb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := findInitdataDevice(dir, false)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" {
				tt.want = filepath.Join(dir, tt.want)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// Regular files are never block devices.
			if got, _ := findInitdataDevice(dir, true); got != "" {
				t.Errorf("blockOnly: got %q, want none", got)
			}
		})
	}
}
