package eventlog

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The tagged event of "domain operation content", written out by hand
// from the format: id "AAEL" as a little-endian u32, text size 24, text.
const taggedHex = "4c454141 18000000" +
	" 646f6d61696e206f7065726174696f6e20636f6e74656e74" // "domain operation content"

// Upstream's test_event_digest vectors (attestation-agent/src/eventlog/
// mod.rs): the digest of the tagged event of "domain operation content".
var upstreamDigests = map[Algorithm]string{
	SHA256: "46df8dacf00a07d34a83cdf56d7978697790787cf2ba1432ef7c38f22cd96351",
	SHA384: "dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d793f670d02",
	SHA512: "b708d222ca8bd44dfe6ba0c4ca2cbb72379276fba8091025217064be45a813e5d6124ccf073219edb617d1faf007d55061465bdf34b7437dbdc9a7405bd4e9c0",
}

func TestUpstreamDigestVectors(t *testing.T) {
	tagged := unhex(t, taggedHex)
	for alg, want := range upstreamDigests {
		t.Run(alg.String(), func(t *testing.T) {
			var got []byte
			switch alg {
			case SHA256:
				s := sha256.Sum256(tagged)
				got = s[:]
			case SHA384:
				s := sha512.Sum384(tagged)
				got = s[:]
			case SHA512:
				s := sha512.Sum512(tagged)
				got = s[:]
			}
			if hex.EncodeToString(got) != want {
				t.Fatalf("hand-built tagged event hashes to %x, upstream says %s", got, want)
			}
			if _, d := encodeEntry(4, alg, "domain operation content"); hex.EncodeToString(d) != want {
				t.Errorf("encodeEntry digest %x, want %s", d, want)
			}
		})
	}
}

// goldenEntry is an entry written out by hand from the TCG_PCR_EVENT2 layout.
func goldenEntry(t testing.TB, register string, algID string, alg Algorithm) []byte {
	t.Helper()
	return unhex(t, register+ // target measurement register
		" 06000000"+ // EV_EVENT_TAG
		" 01000000"+ // one digest
		algID+
		upstreamDigests[alg]+
		" 20000000"+ // event size 8+24
		taggedHex)
}

func TestEncodeEntryGolden(t *testing.T) {
	for _, tc := range []struct {
		register uint32
		regHex   string
		alg      Algorithm
		algHex   string
	}{
		{4, "04000000", SHA384, "0c00"},
		{17, "11000000", SHA256, "0b00"},
		{1, "01000000", SHA512, "0d00"},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			got, _ := encodeEntry(tc.register, tc.alg, "domain operation content")
			want := goldenEntry(t, tc.regHex, tc.algHex, tc.alg)
			if !bytes.Equal(got, want) {
				t.Fatalf("entry\n got %x\nwant %x", got, want)
			}
			es, err := Parse(append(bytes.Clone(want), want...))
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != 2 {
				t.Fatalf("%d entries", len(es))
			}
			e := es[1]
			if e.Register != tc.register || e.Algorithm != tc.alg || hex.EncodeToString(e.Digest) != upstreamDigests[tc.alg] ||
				e.Domain != "domain" || e.Operation != "operation" || e.Content != "content" || e.Text() != "domain operation content" {
				t.Errorf("parsed %+v", e)
			}
		})
	}
}

func TestParseContentWithSpaces(t *testing.T) {
	text := `github.com/confidential-containers PullImage {"image":"a b", "digest":"sha256:00"}`
	b, _ := encodeEntry(4, SHA384, text)
	es, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Domain != "github.com/confidential-containers" || es[0].Operation != "PullImage" || es[0].Content != `{"image":"a b", "digest":"sha256:00"}` {
		t.Errorf("parsed %+v", es[0])
	}
}

func TestParseMalformed(t *testing.T) {
	good := goldenEntry(t, "04000000", "0c00", SHA384)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated header", good[:10], "truncated header"},
		{"truncated entry", good[:len(good)-1], "truncated entry"},
		{"trailing byte", append(bytes.Clone(good), 0), "truncated header"},
		{"event type", mut(func(b []byte) []byte { b[4] = 7; return b }), "event type 0x7"},
		{"digest count", mut(func(b []byte) []byte { b[8] = 2; return b }), "2 digests"},
		{"algorithm", mut(func(b []byte) []byte { b[12] = 0x12; return b }), "unknown digest algorithm 0x0012"},
		{"digest", mut(func(b []byte) []byte { b[14] ^= 1; return b }), "digest does not match"},
		{"tagged id", func() []byte {
			// A consistent entry whose tagged event id is not AAEL.
			data := unhex(t, "41414541 03000000 612062")
			s := sha512.Sum384(data)
			return append(append(unhex(t, "04000000 06000000 01000000 0c00"), s[:]...), append(unhex(t, "0b000000"), data...)...)
		}(), "tagged event id 0x41454141"},
		{"text", func() []byte { b, _ := encodeEntry(4, SHA384, "nospace"); return b }(), "is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.b)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want ErrMalformed with %q", err, tc.want)
			}
		})
	}
}

func TestCheckEvent(t *testing.T) {
	for _, tc := range []struct {
		domain, op, content string
		ok                  bool
	}{
		{"d", "o", "c", true},
		{"d", "o", "", true},
		{"d", "o", "with spaces\tand tabs", true},
		{"d", "o", "line\nbreak", false},
		{"d", "o", "trailing\n", false},
		{"", "o", "c", false},
		{"d", "", "c", false},
		{"d d", "o", "c", false},
		{"d", "o\t", "c", false},
		{"d\n", "o", "c", false},
	} {
		err := checkEvent(tc.domain, tc.op, tc.content)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidEvent)) {
			t.Errorf("checkEvent(%q, %q, %q) = %v, want ok=%v", tc.domain, tc.op, tc.content, err, tc.ok)
		}
	}
}
