package securemount

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// LUKS2 parameters of the devices this package formats. See the package
// doc for why.
const (
	Cipher          = "aes-xts-plain64"
	KeyBits         = 512 // AES-256 in XTS mode (two 256-bit keys)
	SectorSize      = 4096
	PBKDF           = "pbkdf2"
	PBKDFHash       = "sha256"
	PBKDFIterations = 1000 // cryptsetup's minimum for pbkdf2
	Integrity       = "hmac-sha256"
	// HeaderSize is the size of a detached header file: cryptsetup's
	// default LUKS2 metadata and keyslots areas.
	HeaderSize = 16 << 20
)

// cs is a cryptsetup command.
func (m *Mounter) cs(args ...string) cmd {
	return cmd{name: m.cfg.Cryptsetup, args: args}
}

// formatCmd formats r.device as LUKS2 with the key on stdin; header, if
// set, is a detached header file.
func (m *Mounter) formatCmd(r *request, header string, key []byte) cmd {
	a := []string{"--batch-mode", "luksFormat", "--type", "luks2",
		"--cipher", Cipher, "--key-size", strconv.Itoa(KeyBits), "--sector-size", strconv.Itoa(SectorSize),
		"--pbkdf", PBKDF, "--hash", PBKDFHash, "--pbkdf-force-iterations", strconv.Itoa(PBKDFIterations),
		"--key-file=-"}
	if header != "" {
		a = append(a, "--header", header)
	}
	if r.integrity {
		a = append(a, "--integrity", Integrity, "--integrity-no-wipe")
	}
	c := m.cs(append(a, r.device)...)
	c.stdin = key
	return c
}

// openCmd opens r.device as r.mapper with the key on stdin.
func (m *Mounter) openCmd(r *request, header string, key []byte) cmd {
	a := []string{"--batch-mode", "open", "--type", "luks2", "--key-file=-"}
	if header != "" {
		a = append(a, "--header", header)
	}
	// An empty device formatted as a file system needs a writable
	// mapping for mkfs; "ro" then only applies to the mount.
	if r.readOnly && (r.source == sourceEncrypted || r.target == targetDevice) {
		a = append(a, "--readonly")
	}
	// An ephemeral volume does not outlive a crash, so dm-integrity's
	// journal (atomic data+tag writes across crashes) buys nothing.
	if r.integrity && r.ephemeral() {
		a = append(a, "--integrity-no-journal")
	}
	c := m.cs(append(a, r.device, r.mapper)...)
	c.stdin = key
	return c
}

// probe checks that a sourceType=encrypted device has a LUKS2 header
// this package accepts. It only reads.
func (m *Mounter) probe(ctx context.Context, r *request) error {
	if _, err := m.sys.run(ctx, m.cs("isLuks", "--type", "luks2", r.device)); err != nil {
		if exitCode(err) == 1 {
			return fmt.Errorf("%w: %s has no LUKS2 header", ErrNotLUKS2, r.device)
		}
		return fmt.Errorf("probe LUKS2 header of %s: %w", r.device, err)
	}
	out, err := m.sys.run(ctx, m.cs("luksDump", "--dump-json-metadata", r.device))
	if err != nil {
		return fmt.Errorf("read LUKS2 header of %s: %w", r.device, err)
	}
	if err := checkHeader(out, r.integrity); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotLUKS2, r.device, err)
	}
	return nil
}

// luks2Meta is the part of the LUKS2 JSON metadata checkHeader reads.
type luks2Meta struct {
	Segments map[string]struct {
		Type       string `json:"type"`
		Encryption string `json:"encryption"`
		Integrity  *struct {
			Type string `json:"type"`
		} `json:"integrity"`
	} `json:"segments"`
	Config struct {
		Requirements struct {
			Mandatory []string `json:"mandatory"`
		} `json:"requirements"`
	} `json:"config"`
}

// checkHeader guards against a header the host has tampered with: the
// LUKS2 metadata is not authenticated, so a plaintext ("linear") segment,
// a null or ECB cipher, or dropped integrity would still open with the
// right key. Every segment must be an encrypting crypt segment, with keyed
// integrity if wantIntegrity; no mandatory requirement (an unfinished
// reencryption) may be pending.
func checkHeader(js []byte, wantIntegrity bool) error {
	var h luks2Meta
	if err := json.Unmarshal(js, &h); err != nil {
		return fmt.Errorf("parse LUKS2 metadata: %w", err)
	}
	if len(h.Segments) == 0 {
		return fmt.Errorf("LUKS2 metadata has no segment")
	}
	if req := h.Config.Requirements.Mandatory; len(req) > 0 {
		return fmt.Errorf("LUKS2 header has mandatory requirements %q (e.g. an unfinished reencryption)", req)
	}
	ids := make([]string, 0, len(h.Segments))
	for id := range h.Segments {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := h.Segments[id]
		enc := strings.ToLower(s.Encryption)
		switch {
		case s.Type != "crypt":
			return fmt.Errorf("segment %s is of type %q, not an encrypting \"crypt\" segment", id, s.Type)
		case enc == "" || strings.Contains(enc, "null") || strings.Contains(enc, "ecb"):
			return fmt.Errorf("segment %s has cipher %q, which does not protect the data", id, s.Encryption)
		}
		if wantIntegrity {
			t := ""
			if s.Integrity != nil {
				t = s.Integrity.Type
			}
			if !strings.HasPrefix(t, "hmac(") && t != "poly1305" && t != "aead" {
				return fmt.Errorf("segment %s has no keyed integrity (got %q) but dataIntegrity is true", id, t)
			}
		}
	}
	return nil
}

// mkfs makes r.fsType on dev, an empty device's fresh mapping. With
// dm-integrity (ext only) the blocks mke2fs reads before it writes them
// are zeroed first (their tags are valid only once written), and inode
// tables and the journal are initialised eagerly, as upstream does.
func (m *Mounter) mkfs(ctx context.Context, r *request, dev string) error {
	name := "mkfs." + r.fsType
	force := "-F"
	if r.fsType == "xfs" {
		force = "-f"
	}
	args := func(extra []string, opts []string) []string {
		a := append([]string{force}, extra...)
		a = append(a, opts...)
		return append(a, dev)
	}
	if !r.integrity {
		if err := m.step(ctx, cmd{name: name, args: args(nil, r.mkfsOpts)}); err != nil {
			return fmt.Errorf("make %s on %s: %w", r.fsType, dev, err)
		}
		return nil
	}
	if err := m.sys.zero(dev, []int64{0}, SectorSize); err != nil {
		return fmt.Errorf("zero the first block of %s: %w", dev, err)
	}
	dry := slices.DeleteFunc(slices.Clone(r.mkfsOpts), func(o string) bool { return o == "-q" })
	if err := ctx.Err(); err != nil {
		return err
	}
	out, err := m.sys.run(ctx, cmd{name: name, args: args([]string{"-n"}, dry)})
	if err != nil {
		return fmt.Errorf("plan %s on %s: %w", r.fsType, dev, err)
	}
	offs, err := superblockOffsets(string(out))
	if err != nil {
		return fmt.Errorf("plan %s on %s: %w", r.fsType, dev, err)
	}
	if len(offs) > 0 {
		if err := m.sys.zero(dev, offs, SectorSize); err != nil {
			return fmt.Errorf("zero the backup superblocks of %s: %w", dev, err)
		}
	}
	if err := m.step(ctx, cmd{name: name, args: args(nil, eagerInit(r.mkfsOpts))}); err != nil {
		return fmt.Errorf("make %s on %s: %w", r.fsType, dev, err)
	}
	return nil
}

// maxBackups bounds the superblock backups parsed from mke2fs.
const maxBackups = 4096

// superblockOffsets parses the output of "mke2fs -n": the byte offsets,
// rounded down to SectorSize, of the backup superblocks.
func superblockOffsets(out string) ([]int64, error) {
	var bs int64
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Creating filesystem with ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 3 || f[2] != "blocks" || !strings.HasSuffix(f[1], "k") {
			break
		}
		k, err := strconv.ParseInt(strings.TrimSuffix(f[1], "k"), 10, 64)
		if err == nil && k > 0 && k <= 64 {
			bs = k << 10
		}
		break
	}
	if bs == 0 {
		return nil, fmt.Errorf("mke2fs -n printed no \"Creating filesystem with N Xk blocks\" line: %q", out)
	}
	_, list, ok := strings.Cut(out, "Superblock backups stored on blocks:")
	if !ok {
		return nil, nil // a single block group: no backups
	}
	var offs []int64
	for line := range strings.Lines(list) {
		line = strings.TrimSpace(line)
		if line == "" {
			if len(offs) > 0 {
				break
			}
			continue
		}
		for f := range strings.FieldsFuncSeq(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("mke2fs -n: bad superblock backup block %q", f)
			}
			if len(offs) == maxBackups {
				return nil, fmt.Errorf("mke2fs -n: more than %d superblock backups", maxBackups)
			}
			offs = append(offs, n*bs/SectorSize*SectorSize)
		}
	}
	return slices.Compact(offs), nil
}

// eagerInit adds lazy_itable_init=0 and lazy_journal_init=0 to the last
// -E of mke2fs options (mke2fs keeps only the last), or adds a -E.
// checkLazyInit has refused other values already.
func eagerInit(opts []string) []string {
	out := slices.Clone(opts)
	last, joined := -1, false
	for i := 0; i < len(out); i++ {
		switch o := out[i]; {
		case o == "-E" && i+1 < len(out):
			last, joined = i+1, false
			i++
		case strings.HasPrefix(o, "-E") && len(o) > 2:
			last, joined = i, true
		}
	}
	var have string
	if last >= 0 {
		have = out[last]
		if joined {
			have = have[2:]
		}
	}
	var add []string
	for _, k := range []string{"lazy_itable_init", "lazy_journal_init"} {
		found := false
		for kv := range strings.SplitSeq(have, ",") {
			if name, _, _ := strings.Cut(kv, "="); name == k {
				found = true
			}
		}
		if !found {
			add = append(add, k+"=0")
		}
	}
	switch {
	case len(add) == 0:
	case last < 0:
		out = append(out, "-E", strings.Join(add, ","))
	default:
		out[last] += "," + strings.Join(add, ",")
	}
	return out
}
