package snp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// ReportSize is the size of an SEV-SNP ATTESTATION_REPORT in its ABI form.
const ReportSize = 0x4A0

// signedSize is the part of the report the AMD-SP signs (all bytes before
// the signature).
const signedSize = 0x2A0

// Report is an SEV-SNP attestation report in the field layout of the sev
// crate's AttestationReport, which is what trustee's SNP verifier
// deserializes. Its JSON form is that crate's serde form: byte arrays are
// JSON arrays of numbers, TCB versions are objects, and the optional fields
// are null (or, for the version 5 mitigation vectors, absent) when the
// report version does not carry them.
type Report struct {
	Version         uint32    `json:"version"`
	GuestSVN        uint32    `json:"guest_svn"`
	Policy          uint64    `json:"policy"`
	FamilyID        [16]byte  `json:"family_id"`
	ImageID         [16]byte  `json:"image_id"`
	VMPL            uint32    `json:"vmpl"`
	SigAlgo         uint32    `json:"sig_algo"`
	CurrentTCB      TCB       `json:"current_tcb"`
	PlatInfo        uint64    `json:"plat_info"`
	KeyInfo         uint32    `json:"key_info"`
	ReportData      [64]byte  `json:"report_data"`
	Measurement     [48]byte  `json:"measurement"`
	HostData        [32]byte  `json:"host_data"`
	IDKeyDigest     [48]byte  `json:"id_key_digest"`
	AuthorKeyDigest [48]byte  `json:"author_key_digest"`
	ReportID        [32]byte  `json:"report_id"`
	ReportIDMA      [32]byte  `json:"report_id_ma"`
	ReportedTCB     TCB       `json:"reported_tcb"`
	CPUIDFamID      *uint8    `json:"cpuid_fam_id"`
	CPUIDModID      *uint8    `json:"cpuid_mod_id"`
	CPUIDStep       *uint8    `json:"cpuid_step"`
	ChipID          [64]byte  `json:"chip_id"`
	CommittedTCB    TCB       `json:"committed_tcb"`
	Current         FWVersion `json:"current"`
	Committed       FWVersion `json:"committed"`
	LaunchTCB       TCB       `json:"launch_tcb"`
	// LaunchMitVector and CurrentMitVector exist from report version 5 on.
	LaunchMitVector  *uint64   `json:"launch_mit_vector,omitempty"`
	CurrentMitVector *uint64   `json:"current_mit_vector,omitempty"`
	Signature        Signature `json:"signature"`
}

// TCB is a TCB version. FMC is present only on Turin and later
// processors, where the TCB layout differs from Milan and Genoa.
type TCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// FWVersion is a firmware version as the report carries it.
type FWVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// Signature is the report's ECDSA P-384 signature; R and S are
// little-endian and zero-padded to 72 bytes.
type Signature struct {
	R [72]byte `json:"r"`
	S [72]byte `json:"s"`
}

// generation is the processor generation that decides the TCB layout.
type generation int

const (
	genMilan generation = iota
	genGenoa
	genTurin
)

// generationOf returns the processor generation of a report the way the
// sev crate decides it: from CPUID family and model for version 3 and
// later, from the shape of CHIP_ID for version 2.
func generationOf(version uint32, fam, mod uint8, chipID []byte) (generation, error) {
	switch {
	case version < 2:
		return 0, fmt.Errorf("report version %d is not supported", version)
	case version == 2:
		if allZero(chipID) {
			return 0, errors.New("report version 2 with a masked CHIP_ID: processor generation unknown")
		}
		if allZero(chipID[8:]) {
			return genTurin, nil
		}
		return genGenoa, nil
	}
	switch fam {
	case 0x19:
		switch {
		case mod <= 0x0F:
			return genMilan, nil
		case mod >= 0x10 && mod <= 0x1F, mod >= 0xA0 && mod <= 0xAF:
			return genGenoa, nil
		}
	case 0x1A:
		if mod <= 0x11 {
			return genTurin, nil
		}
	}
	return 0, fmt.Errorf("CPUID family 0x%x model 0x%x is not a known SEV-SNP processor", fam, mod)
}

// ProductLine returns the processor product line of the report, "Milan",
// "Genoa" or "Turin", decided as the sev crate (and so trustee) decides it:
// from the CPUID family and model for version 3 and later.
func (r *Report) ProductLine() (string, error) {
	var fam, mod uint8
	if r.CPUIDFamID != nil && r.CPUIDModID != nil {
		fam, mod = *r.CPUIDFamID, *r.CPUIDModID
	}
	g, err := generationOf(r.Version, fam, mod, r.ChipID[:])
	if err != nil {
		return "", err
	}
	return [...]string{genMilan: "Milan", genGenoa: "Genoa", genTurin: "Turin"}[g], nil
}

func decodeTCB(b []byte, g generation) TCB {
	if g == genTurin {
		fmc := b[0]
		return TCB{FMC: &fmc, Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
	}
	return TCB{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
}

func encodeTCB(dst []byte, t TCB, g generation, name string) error {
	if g == genTurin {
		if t.FMC == nil {
			return fmt.Errorf("%s: fmc is null but the processor is Turin, whose TCB has an FMC field", name)
		}
		dst[0], dst[1], dst[2], dst[3], dst[7] = *t.FMC, t.Bootloader, t.TEE, t.SNP, t.Microcode
		return nil
	}
	if t.FMC != nil {
		return fmt.Errorf("%s: fmc is set but the processor's TCB has no FMC field", name)
	}
	dst[0], dst[1], dst[6], dst[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
	return nil
}

// ReportFromABI decodes the first ReportSize bytes of raw, an
// ATTESTATION_REPORT as the firmware returns it. Reserved bytes are not
// kept: use Lossless to check that none are set.
func ReportFromABI(raw []byte) (*Report, error) {
	if len(raw) < ReportSize {
		return nil, fmt.Errorf("decode SNP report: %d bytes, want %d", len(raw), ReportSize)
	}
	raw = raw[:ReportSize]
	le := binary.LittleEndian
	r := &Report{Version: le.Uint32(raw[0x00:])}
	v3 := r.Version >= 3
	g, err := generationOf(r.Version, raw[0x188], raw[0x189], raw[0x1A0:0x1E0])
	if err != nil {
		return nil, fmt.Errorf("decode SNP report: %w", err)
	}
	r.GuestSVN = le.Uint32(raw[0x04:])
	r.Policy = le.Uint64(raw[0x08:])
	copy(r.FamilyID[:], raw[0x10:])
	copy(r.ImageID[:], raw[0x20:])
	r.VMPL = le.Uint32(raw[0x30:])
	r.SigAlgo = le.Uint32(raw[0x34:])
	r.CurrentTCB = decodeTCB(raw[0x38:0x40], g)
	r.PlatInfo = le.Uint64(raw[0x40:])
	r.KeyInfo = le.Uint32(raw[0x48:])
	copy(r.ReportData[:], raw[0x50:])
	copy(r.Measurement[:], raw[0x90:])
	copy(r.HostData[:], raw[0xC0:])
	copy(r.IDKeyDigest[:], raw[0xE0:])
	copy(r.AuthorKeyDigest[:], raw[0x110:])
	copy(r.ReportID[:], raw[0x140:])
	copy(r.ReportIDMA[:], raw[0x160:])
	r.ReportedTCB = decodeTCB(raw[0x180:0x188], g)
	if v3 {
		fam, mod, step := raw[0x188], raw[0x189], raw[0x18A]
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = &fam, &mod, &step
	}
	copy(r.ChipID[:], raw[0x1A0:])
	r.CommittedTCB = decodeTCB(raw[0x1E0:0x1E8], g)
	r.Current = FWVersion{Build: raw[0x1E8], Minor: raw[0x1E9], Major: raw[0x1EA]}
	r.Committed = FWVersion{Build: raw[0x1EC], Minor: raw[0x1ED], Major: raw[0x1EE]}
	r.LaunchTCB = decodeTCB(raw[0x1F0:0x1F8], g)
	if r.Version >= 5 {
		lmv, cmv := le.Uint64(raw[0x1F8:]), le.Uint64(raw[0x200:])
		r.LaunchMitVector, r.CurrentMitVector = &lmv, &cmv
	}
	copy(r.Signature.R[:], raw[signedSize:])
	copy(r.Signature.S[:], raw[signedSize+72:])
	return r, nil
}

// ABI encodes r as an ATTESTATION_REPORT, reserved bytes zero. This is
// the byte string the AMD-SP signed if r came from a genuine report.
func (r *Report) ABI() ([]byte, error) {
	var fam, mod uint8
	if r.Version >= 3 {
		if r.CPUIDFamID == nil || r.CPUIDModID == nil || r.CPUIDStep == nil {
			return nil, fmt.Errorf("encode SNP report: version %d needs cpuid_fam_id, cpuid_mod_id and cpuid_step", r.Version)
		}
		fam, mod = *r.CPUIDFamID, *r.CPUIDModID
	}
	g, err := generationOf(r.Version, fam, mod, r.ChipID[:])
	if err != nil {
		return nil, fmt.Errorf("encode SNP report: %w", err)
	}
	le := binary.LittleEndian
	raw := make([]byte, ReportSize)
	le.PutUint32(raw[0x00:], r.Version)
	le.PutUint32(raw[0x04:], r.GuestSVN)
	le.PutUint64(raw[0x08:], r.Policy)
	copy(raw[0x10:], r.FamilyID[:])
	copy(raw[0x20:], r.ImageID[:])
	le.PutUint32(raw[0x30:], r.VMPL)
	le.PutUint32(raw[0x34:], r.SigAlgo)
	for _, f := range []struct {
		off  int
		tcb  TCB
		name string
	}{
		{0x38, r.CurrentTCB, "current_tcb"},
		{0x180, r.ReportedTCB, "reported_tcb"},
		{0x1E0, r.CommittedTCB, "committed_tcb"},
		{0x1F0, r.LaunchTCB, "launch_tcb"},
	} {
		if err := encodeTCB(raw[f.off:f.off+8], f.tcb, g, f.name); err != nil {
			return nil, fmt.Errorf("encode SNP report: %w", err)
		}
	}
	le.PutUint64(raw[0x40:], r.PlatInfo)
	le.PutUint32(raw[0x48:], r.KeyInfo)
	copy(raw[0x50:], r.ReportData[:])
	copy(raw[0x90:], r.Measurement[:])
	copy(raw[0xC0:], r.HostData[:])
	copy(raw[0xE0:], r.IDKeyDigest[:])
	copy(raw[0x110:], r.AuthorKeyDigest[:])
	copy(raw[0x140:], r.ReportID[:])
	copy(raw[0x160:], r.ReportIDMA[:])
	if r.Version >= 3 {
		raw[0x188], raw[0x189], raw[0x18A] = fam, mod, *r.CPUIDStep
	} else if r.CPUIDFamID != nil || r.CPUIDModID != nil || r.CPUIDStep != nil {
		return nil, fmt.Errorf("encode SNP report: version %d has no CPUID fields", r.Version)
	}
	copy(raw[0x1A0:], r.ChipID[:])
	raw[0x1E8], raw[0x1E9], raw[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	raw[0x1EC], raw[0x1ED], raw[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	if r.Version >= 5 {
		if r.LaunchMitVector != nil {
			le.PutUint64(raw[0x1F8:], *r.LaunchMitVector)
		}
		if r.CurrentMitVector != nil {
			le.PutUint64(raw[0x200:], *r.CurrentMitVector)
		}
	} else if r.LaunchMitVector != nil || r.CurrentMitVector != nil {
		return nil, fmt.Errorf("encode SNP report: version %d has no mitigation vectors", r.Version)
	}
	copy(raw[signedSize:], r.Signature.R[:])
	copy(raw[signedSize+72:], r.Signature.S[:])
	return raw, nil
}

// Lossless reports whether raw (an ATTESTATION_REPORT) survives the trip
// through Report unchanged, i.e. whether its JSON form still carries every
// signed byte. It fails for reports with non-zero reserved bytes.
func Lossless(raw []byte) error {
	_, err := decodeLossless(raw)
	return err
}

// decodeLossless decodes raw and checks that encoding the result gives
// raw's report bytes back.
func decodeLossless(raw []byte) (*Report, error) {
	r, err := ReportFromABI(raw)
	if err != nil {
		return nil, err
	}
	again, err := r.ABI()
	if err != nil {
		return nil, err
	}
	for i := range again {
		if again[i] != raw[i] {
			return nil, fmt.Errorf("SNP report byte 0x%x is 0x%02x, a reserved or unknown field the JSON form cannot carry", i, raw[i])
		}
	}
	return r, nil
}

// reportJSON mirrors Report for decoding, with byte arrays as
// variable-length number arrays so that their lengths can be checked.
type reportJSON struct {
	Version          *uint32    `json:"version"`
	GuestSVN         *uint32    `json:"guest_svn"`
	Policy           *uint64    `json:"policy"`
	FamilyID         numbers    `json:"family_id"`
	ImageID          numbers    `json:"image_id"`
	VMPL             *uint32    `json:"vmpl"`
	SigAlgo          *uint32    `json:"sig_algo"`
	CurrentTCB       *TCB       `json:"current_tcb"`
	PlatInfo         *uint64    `json:"plat_info"`
	KeyInfo          *uint32    `json:"key_info"`
	ReportData       numbers    `json:"report_data"`
	Measurement      numbers    `json:"measurement"`
	HostData         numbers    `json:"host_data"`
	IDKeyDigest      numbers    `json:"id_key_digest"`
	AuthorKeyDigest  numbers    `json:"author_key_digest"`
	ReportID         numbers    `json:"report_id"`
	ReportIDMA       numbers    `json:"report_id_ma"`
	ReportedTCB      *TCB       `json:"reported_tcb"`
	CPUIDFamID       *uint8     `json:"cpuid_fam_id"`
	CPUIDModID       *uint8     `json:"cpuid_mod_id"`
	CPUIDStep        *uint8     `json:"cpuid_step"`
	ChipID           numbers    `json:"chip_id"`
	CommittedTCB     *TCB       `json:"committed_tcb"`
	Current          *FWVersion `json:"current"`
	Committed        *FWVersion `json:"committed"`
	LaunchTCB        *TCB       `json:"launch_tcb"`
	LaunchMitVector  *uint64    `json:"launch_mit_vector"`
	CurrentMitVector *uint64    `json:"current_mit_vector"`
	Signature        *struct {
		R numbers `json:"r"`
		S numbers `json:"s"`
	} `json:"signature"`
}

// UnmarshalJSON decodes the sev crate's serde form strictly: every
// non-optional field must be present and every byte array must have its
// exact length.
func (r *Report) UnmarshalJSON(data []byte) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return errors.New("attestation_report is null")
	}
	var j reportJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("attestation_report: %w", err)
	}
	var missing []string
	need := func(ok bool, name string) {
		if !ok {
			missing = append(missing, name)
		}
	}
	need(j.Version != nil, "version")
	need(j.GuestSVN != nil, "guest_svn")
	need(j.Policy != nil, "policy")
	need(j.VMPL != nil, "vmpl")
	need(j.SigAlgo != nil, "sig_algo")
	need(j.CurrentTCB != nil, "current_tcb")
	need(j.PlatInfo != nil, "plat_info")
	need(j.KeyInfo != nil, "key_info")
	need(j.ReportedTCB != nil, "reported_tcb")
	need(j.CommittedTCB != nil, "committed_tcb")
	need(j.Current != nil, "current")
	need(j.Committed != nil, "committed")
	need(j.LaunchTCB != nil, "launch_tcb")
	need(j.Signature != nil, "signature")
	if len(missing) > 0 {
		return fmt.Errorf("attestation_report: missing fields %v", missing)
	}
	out := Report{
		Version: *j.Version, GuestSVN: *j.GuestSVN, Policy: *j.Policy, VMPL: *j.VMPL,
		SigAlgo: *j.SigAlgo, CurrentTCB: *j.CurrentTCB, PlatInfo: *j.PlatInfo, KeyInfo: *j.KeyInfo,
		ReportedTCB: *j.ReportedTCB, CPUIDFamID: j.CPUIDFamID, CPUIDModID: j.CPUIDModID,
		CPUIDStep: j.CPUIDStep, CommittedTCB: *j.CommittedTCB, Current: *j.Current,
		Committed: *j.Committed, LaunchTCB: *j.LaunchTCB, LaunchMitVector: j.LaunchMitVector,
		CurrentMitVector: j.CurrentMitVector,
	}
	for _, f := range []struct {
		dst  []byte
		src  numbers
		name string
	}{
		{out.FamilyID[:], j.FamilyID, "family_id"},
		{out.ImageID[:], j.ImageID, "image_id"},
		{out.ReportData[:], j.ReportData, "report_data"},
		{out.Measurement[:], j.Measurement, "measurement"},
		{out.HostData[:], j.HostData, "host_data"},
		{out.IDKeyDigest[:], j.IDKeyDigest, "id_key_digest"},
		{out.AuthorKeyDigest[:], j.AuthorKeyDigest, "author_key_digest"},
		{out.ReportID[:], j.ReportID, "report_id"},
		{out.ReportIDMA[:], j.ReportIDMA, "report_id_ma"},
		{out.ChipID[:], j.ChipID, "chip_id"},
		{out.Signature.R[:], j.Signature.R, "signature.r"},
		{out.Signature.S[:], j.Signature.S, "signature.s"},
	} {
		if f.src == nil {
			return fmt.Errorf("attestation_report: missing field %s", f.name)
		}
		if len(f.src) != len(f.dst) {
			return fmt.Errorf("attestation_report: %s has %d bytes, want %d", f.name, len(f.src), len(f.dst))
		}
		copy(f.dst, f.src)
	}
	*r = out
	return nil
}

// UnmarshalJSON requires bootloader, tee, snp and microcode; fmc may be
// absent or null (the serde form of a Rust Option).
func (t *TCB) UnmarshalJSON(data []byte) error {
	var j struct {
		FMC        *uint8 `json:"fmc"`
		Bootloader *uint8 `json:"bootloader"`
		TEE        *uint8 `json:"tee"`
		SNP        *uint8 `json:"snp"`
		Microcode  *uint8 `json:"microcode"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Bootloader == nil || j.TEE == nil || j.SNP == nil || j.Microcode == nil {
		return errors.New("TCB version needs bootloader, tee, snp and microcode")
	}
	*t = TCB{FMC: j.FMC, Bootloader: *j.Bootloader, TEE: *j.TEE, SNP: *j.SNP, Microcode: *j.Microcode}
	return nil
}

// UnmarshalJSON requires major, minor and build.
func (v *FWVersion) UnmarshalJSON(data []byte) error {
	var j struct {
		Major *uint8 `json:"major"`
		Minor *uint8 `json:"minor"`
		Build *uint8 `json:"build"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	if j.Major == nil || j.Minor == nil || j.Build == nil {
		return errors.New("firmware version needs major, minor and build")
	}
	*v = FWVersion{Major: *j.Major, Minor: *j.Minor, Build: *j.Build}
	return nil
}

// numbers is a byte string in JSON as an array of numbers 0..255, the
// serde form of a Rust byte array or Vec<u8>.
type numbers []byte

// MarshalJSON writes n as an array of numbers (never null).
func (n numbers) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(4 * len(n))
	b.WriteByte('[')
	for i, v := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", v)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an array of numbers 0..255. It rejects the base64
// string form encoding/json would otherwise accept for []byte, and null.
func (n *numbers) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '[' {
		return errors.New("byte array is not a JSON array of numbers")
	}
	var v []uint8
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if v == nil {
		v = []byte{}
	}
	*n = v
	return nil
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
