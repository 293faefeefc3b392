package config

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
)

func TestInitdataDigestVectors(t *testing.T) {
	// Expected values from coreutils sha{256,384,512}sum over the fixture
	// files (see testdata/README.md), not from the code under test.
	tests := []struct {
		file, alg, digest string
	}{
		{"sha256.toml", "sha256", "e1bcf3a06b8943c57a0306f9d4814e8085828db821e1cebe9e8c31e3e3f1c4b1"},
		{"sha384.toml", "sha384", "18b2207434c8943e2f2ac0d65952b90b8c2286d05b6d99c11f05e4644be7fe3d30b39a70cf9ba09dc92914b8d6a9c55e"},
		{"sha512.toml", "sha512", "b2990822659a11d57c0bc2cc7219bc2468d507e4c9acb0e2203678ca198de3b806d4794f17ee976b41028b8735ea0dabb3b1b2742c20d7e944bcd8e9c92a0952"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "initdata", tt.file)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			d, err := LoadInitdata(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(d.Digest); got != tt.digest {
				t.Errorf("digest %s, want %s", got, tt.digest)
			}
			if d.Algorithm != tt.alg || d.Version != "0.1.0" {
				t.Errorf("algorithm %q version %q", d.Algorithm, d.Version)
			}
			if !bytes.Equal(d.Raw, raw) {
				t.Error("Raw is not the file's bytes")
			}
			if len(d.Unknown) != 0 {
				t.Errorf("unknown keys %q", d.Unknown)
			}
		})
	}
	// The well-known digests of the empty string.
	empty := map[string]string{
		"sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"sha384": "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
		"sha512": "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
	}
	for alg, want := range empty {
		got, err := InitdataDigest(alg, nil)
		if err != nil || hex.EncodeToString(got) != want {
			t.Errorf("InitdataDigest(%s, empty) = %x, %v", alg, got, err)
		}
	}
	for _, alg := range []string{"sm3", "SHA256", "md5", ""} {
		if _, err := InitdataDigest(alg, nil); err == nil {
			t.Errorf("InitdataDigest(%q) succeeded", alg)
		}
	}
}

func TestInitdataDigestCoversRawBytes(t *testing.T) {
	a := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n")
	b := []byte("algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\n")
	da, err := ParseInitdata(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := ParseInitdata(b)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(da.Digest, db.Digest) {
		t.Error("equivalent documents with different bytes have the same digest; the digest must cover the raw bytes")
	}
	a[0] = 'V' // Raw must be a copy
	if da.Raw[0] != 'v' {
		t.Error("Raw aliases the caller's buffer")
	}
}

func TestInitdataEmbeddedConfigs(t *testing.T) {
	d, err := LoadInitdata(filepath.Join("testdata", "initdata", "sha256.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if keys := sortedKeys(d.Data); !reflect.DeepEqual(keys, []string{"aa.toml", "cdh.toml", "policy.rego"}) {
		t.Errorf("data keys %q", keys)
	}
	aa, err := d.AA()
	if err != nil {
		t.Fatal(err)
	}
	if aa.TokenConfigs.KBS == nil || aa.TokenConfigs.KBS.URL != "http://kbs-service.kbs.svc.cluster.local:8080" ||
		aa.EventlogConfig != (EventlogConfig{InitPCR: 17, EnableEventlog: true}) {
		t.Errorf("aa.toml: %s", dumpAA(aa))
	}
	cdh, err := d.CDH()
	if err != nil {
		t.Fatal(err)
	}
	if cdh.KBC != (CDHKBC{Name: "cc_kbc", URL: "http://kbs-service.kbs.svc.cluster.local:8080"}) ||
		cdh.Image.ImageSecurityPolicyURI != "kbs:///default/security-policy/test" || len(cdh.Credentials) != 0 || !cdh.ImageSet {
		t.Errorf("cdh.toml: %+v", cdh)
	}
	if p, ok := d.Policy(); !ok || !strings.Contains(p, "package agent_policy") {
		t.Errorf("policy.rego: %q, %v", p, ok)
	}

	d, err = LoadInitdata(filepath.Join("testdata", "initdata", "sha384.toml"))
	if err != nil {
		t.Fatal(err)
	}
	aa, err = d.AA()
	if err != nil {
		t.Fatal(err)
	}
	if aa.TokenConfigs.CoCoAS == nil || aa.TokenConfigs.CoCoAS.URL != "http://as.example:8000" || aa.TokenConfigs.KBS.TeeKeyAlgorithm != TeeKeyRSAOAEP256 {
		t.Errorf("aa.toml: %s", dumpAA(aa))
	}
	if cdh, err := d.CDH(); cdh != nil || err != nil {
		t.Errorf("absent cdh.toml: %v, %v", cdh, err)
	}
	if _, ok := d.Policy(); ok {
		t.Error("absent policy.rego reported present")
	}

	d, err = LoadInitdata(filepath.Join("testdata", "initdata", "sha512.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if aa, err := d.AA(); aa != nil || err != nil || len(d.Data) != 0 {
		t.Errorf("empty [data]: %v, %v, %q", aa, err, d.Data)
	}

	bad, err := ParseInitdata([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"[eventlog_config]\\ninit_pcr = 99\\n\"\n\"cdh.toml\" = \"socket = 1\\n\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.AA()
	wantKeyError(t, err, "eventlog_config.init_pcr", `initdata data."aa.toml"`)
	_, err = bad.CDH()
	wantKeyError(t, err, "socket", `initdata data."cdh.toml"`)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestParseInitdataMalformed(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		key       string
		fragments []string
	}{
		{"version missing", "algorithm = \"sha256\"\n[data]\n", "version", []string{"required"}},
		{"version other", "version = \"0.2.0\"\nalgorithm = \"sha256\"\n[data]\n", "version", []string{`"0.1.0"`}},
		{"version number", "version = 0.1\nalgorithm = \"sha256\"\n[data]\n", "version", []string{"expected a string"}},
		{"algorithm missing", "version = \"0.1.0\"\n[data]\n", "algorithm", []string{"required"}},
		{"algorithm sm3", "version = \"0.1.0\"\nalgorithm = \"sm3\"\n[data]\n", "algorithm", []string{"sha256, sha384 or sha512"}},
		{"algorithm upper case", "version = \"0.1.0\"\nalgorithm = \"SHA384\"\n[data]\n", "algorithm", nil},
		{"data missing", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n", "data", []string{"required"}},
		{"data not a table", "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = \"x\"\n", "data", []string{"expected a table"}},
		{"data value not a string", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = { url = \"x\" }\n", `data."aa.toml"`, []string{"expected a string"}},
		{"data value integer", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nkey = 1\n", "data.key", []string{"expected a string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseInitdata([]byte(tt.doc))
			if d != nil {
				t.Error("got initdata along with the error")
			}
			wantKeyError(t, err, tt.key, tt.fragments...)
		})
	}
	for _, garbage := range [][]byte{
		[]byte("not toml at all ["),
		{0x1f, 0x8b, 0x08, 0x00},
		[]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nk = \"\xff\"\n"),
	} {
		if d, err := ParseInitdata(garbage); err == nil || d != nil {
			t.Errorf("ParseInitdata(%q) = %v, %v", garbage, d, err)
		}
	}
	d, err := ParseInitdata([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\ncomment = \"x\"\n[data]\n[extra]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Unknown, []string{"comment", "extra"}) {
		t.Errorf("unknown = %q", d.Unknown)
	}
	if _, err := LoadInitdata(filepath.Join(t.TempDir(), "none.toml")); err == nil {
		t.Error("LoadInitdata of a missing file succeeded")
	}
}

// kataInitdataImg is the start of kata-containers@7c6ba40c
// src/agent/testdata/initdata.img (the rest is zero padding): kata-agent's
// own fixture, which decompresses to "some content".
const kataInitdataImg = "696e697464617461" + "2400000000000000" +
	"1f8b080000000000" + "00ff2acecf4d5548" + "cecf2b49cd2b0104" + "0000ffff3f311f43" + "0c000000"

// block builds an initdata block the way kata's runtime does.
func block(t testing.TB, toml []byte) []byte {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(toml); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	out := []byte(InitdataMagic)
	out = binary.LittleEndian.AppendUint64(out, uint64(gz.Len()))
	out = append(out, gz.Bytes()...)
	return append(out, make([]byte, (512-len(out)%512)%512)...)
}

func TestReadInitdataBlock(t *testing.T) {
	kata, err := hex.DecodeString(kataInitdataImg)
	if err != nil {
		t.Fatal(err)
	}
	kata = append(kata, make([]byte, 4096-len(kata))...)
	got, err := ReadInitdataBlock(bytes.NewReader(kata), 0)
	if err != nil || string(got) != "some content" {
		t.Errorf("kata fixture: %q, %v", got, err)
	}

	raw, err := os.ReadFile(filepath.Join("testdata", "initdata", "sha256.toml"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(filepath.Join("testdata", "initdata", "sha256.img"))
	if err != nil {
		t.Fatal(err)
	}
	got, err = ReadInitdataBlock(bytes.NewReader(img), 0)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("python-made block: %v", err)
	}
	d, err := ParseInitdata(got)
	if err != nil || hex.EncodeToString(d.Digest) != "e1bcf3a06b8943c57a0306f9d4814e8085828db821e1cebe9e8c31e3e3f1c4b1" {
		t.Errorf("digest of the block's document: %v", err)
	}

	// One byte at a time, as a slow device might deliver it.
	got, err = ReadInitdataBlock(iotest.OneByteReader(bytes.NewReader(img)), 0)
	if err != nil || !bytes.Equal(got, raw) {
		t.Errorf("one-byte reader: %v", err)
	}

	// Go-made block round trip.
	got, err = ReadInitdataBlock(bytes.NewReader(block(t, raw)), 0)
	if err != nil || !bytes.Equal(got, raw) {
		t.Errorf("round trip: %v", err)
	}
}

func TestReadInitdataBlockMalformed(t *testing.T) {
	img, err := os.ReadFile(filepath.Join("testdata", "initdata", "sha256.img"))
	if err != nil {
		t.Fatal(err)
	}
	gzLen := int(binary.LittleEndian.Uint64(img[8:16]))

	// Every truncation before the end of the gzip data fails.
	for n := 0; n < 16+gzLen; n++ {
		if _, err := ReadInitdataBlock(bytes.NewReader(img[:n]), 0); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	// Every single-byte corruption of the gzip data fails or yields the
	// document unchanged (e.g. a flipped bit in the gzip header's OS byte).
	raw, _ := ReadInitdataBlock(bytes.NewReader(img), 0)
	for i := 16; i < 16+gzLen; i++ {
		c := bytes.Clone(img)
		c[i] ^= 0x5a
		if got, err := ReadInitdataBlock(bytes.NewReader(c), 0); err == nil && !bytes.Equal(got, raw) {
			t.Fatalf("corrupt byte %d: silently returned a different document", i)
		}
	}

	withLen := func(n uint64, rest []byte) []byte {
		b := binary.LittleEndian.AppendUint64([]byte(InitdataMagic), n)
		return append(b, rest...)
	}
	bomb := func() []byte {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(make([]byte, 2<<20))
		zw.Close()
		return withLen(uint64(gz.Len()), gz.Bytes())
	}()
	tests := []struct {
		name  string
		data  []byte
		limit int64
		frag  string
	}{
		{"empty", nil, 0, "header"},
		{"bad magic", append([]byte("initdatX"), img[8:]...), 0, "magic"},
		{"zero padding only", make([]byte, 512), 0, "magic"},
		{"length 0", withLen(0, nil), 0, "length is 0"},
		{"length over limit", withLen(1<<20+1, nil), 0, "exceeds the limit"},
		{"length huge", withLen(^uint64(0), nil), 0, "exceeds the limit"},
		{"length beyond data", withLen(uint64(gzLen+600), img[16:]), 0, "truncated"},
		{"not gzip", withLen(12, []byte("some content")), 0, "gunzip"},
		{"gzip bomb", bomb, 0, "decompressed document exceeds"},
		{"small explicit limit", img, 64, "exceeds the limit of 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadInitdataBlock(bytes.NewReader(tt.data), tt.limit)
			if err == nil || !strings.Contains(err.Error(), tt.frag) {
				t.Errorf("got %q, %v; want an error containing %q", got, err, tt.frag)
			}
		})
	}

	// Bytes after the first gzip member within the declared length are
	// ignored, as kata does.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("first"))
	zw.Close()
	trailing := append(gz.Bytes(), []byte("garbage")...)
	got, err := ReadInitdataBlock(bytes.NewReader(withLen(uint64(len(trailing)), trailing)), 0)
	if err != nil || string(got) != "first" {
		t.Errorf("trailing bytes: %q, %v", got, err)
	}

	// A reader that fails mid-way reports the failure.
	r := io.MultiReader(bytes.NewReader(img[:20]), iotest.ErrReader(io.ErrClosedPipe))
	if _, err := ReadInitdataBlock(r, 0); err == nil {
		t.Error("failing reader: no error")
	}
}

func FuzzReadInitdataBlock(f *testing.F) {
	img, err := os.ReadFile(filepath.Join("testdata", "initdata", "sha256.img"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add([]byte(InitdataMagic))
	f.Add(append([]byte(InitdataMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ReadInitdataBlock(bytes.NewReader(data), 4096)
		if err != nil {
			return
		}
		if len(out) > 4096 {
			t.Fatalf("returned %d bytes over the limit", len(out))
		}
		if d, err := ParseInitdata(out); err == nil {
			_, _ = d.AA()
			_, _ = d.CDH()
		}
	})
}
