package snp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// GUIDs of the certificate table entries the GHCB specification defines,
// and the names the sev crate's CertType gives them in JSON.
const (
	GUIDEmpty = "00000000-0000-0000-0000-000000000000"
	GUIDARK   = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
	GUIDASK   = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
	GUIDVCEK  = "63da758d-e664-4564-adc5-f4b93be8accd"
	GUIDVLEK  = "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
	GUIDCRL   = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"
)

// guidExtraPlatformInfo is an entry go-sev-guest's quote providers append
// to the host's table when it has no VCEK; it does not come from the
// hardware, so the evidence leaves it out.
const guidExtraPlatformInfo = "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"

// certTypes pairs the GUIDs with the sev crate's CertType names.
func certTypes() [][2]string {
	return [][2]string{
		{GUIDEmpty, "Empty"},
		{GUIDARK, "ARK"},
		{GUIDASK, "ASK"},
		{GUIDVCEK, "VCEK"},
		{GUIDVLEK, "VLEK"},
		{GUIDCRL, "CRL"},
	}
}

// certTableEntrySize is the size of one header entry of the table.
const certTableEntrySize = 24

// CertEntry is one entry of the certificate table the host hands the
// guest with an extended report. In JSON it is the sev crate's
// CertTableEntry: {"cert_type": "VCEK", "data": [48, 130, ...]}, where
// cert_type is "Empty", "ARK", "ASK", "VCEK", "VLEK", "CRL" or
// {"OTHER": "<guid>"} for any other GUID.
type CertEntry struct {
	GUID uuid.UUID
	Data []byte
}

// Type returns the sev crate's name of e's type, or "OTHER".
func (e CertEntry) Type() string {
	guid := e.GUID.String()
	for _, t := range certTypes() {
		if t[0] == guid {
			return t[1]
		}
	}
	return "OTHER"
}

type certEntryJSON struct {
	CertType json.RawMessage `json:"cert_type"`
	Data     numbers         `json:"data"`
}

// MarshalJSON writes e in the sev crate's serde form.
func (e CertEntry) MarshalJSON() ([]byte, error) {
	var typ any = e.Type()
	if typ == "OTHER" {
		typ = map[string]string{"OTHER": e.GUID.String()}
	}
	t, err := json.Marshal(typ)
	if err != nil {
		return nil, err
	}
	data := e.Data
	if data == nil {
		data = []byte{}
	}
	return json.Marshal(certEntryJSON{CertType: t, Data: data})
}

// UnmarshalJSON reads the sev crate's serde form.
func (e *CertEntry) UnmarshalJSON(b []byte) error {
	var j certEntryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("cert_chain entry: %w", err)
	}
	if j.CertType == nil || j.Data == nil {
		return errors.New("cert_chain entry needs cert_type and data")
	}
	var name string
	if err := json.Unmarshal(j.CertType, &name); err == nil {
		for _, t := range certTypes() {
			if t[1] == name {
				e.GUID = uuid.MustParse(t[0])
				e.Data = j.Data
				return nil
			}
		}
		return fmt.Errorf("cert_chain entry: unknown cert_type %q", name)
	}
	var other struct {
		Other *string `json:"OTHER"`
	}
	if err := json.Unmarshal(j.CertType, &other); err != nil || other.Other == nil {
		return fmt.Errorf("cert_chain entry: cert_type %s is neither a name nor {\"OTHER\": guid}", j.CertType)
	}
	guid, err := uuid.Parse(*other.Other)
	if err != nil {
		return fmt.Errorf("cert_chain entry: OTHER guid: %w", err)
	}
	e.GUID = guid
	e.Data = j.Data
	return nil
}

// ParseCertTable parses the certificate table of an extended report:
// 24-byte entries {GUID, offset, length} ended by an all-zero entry, then
// the certificates the offsets (relative to the table start) point at. An
// empty table has no entries.
func ParseCertTable(table []byte) ([]CertEntry, error) {
	type rawEntry struct {
		CertEntry
		off uint32
	}
	var entries []rawEntry
	for i := 0; ; i++ {
		hdr := i * certTableEntrySize
		if hdr+certTableEntrySize > len(table) {
			if len(table) == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("parse SNP cert table: entry %d runs past the %d-byte table (no terminator)", i, len(table))
		}
		var guid uuid.UUID
		copy(guid[:], table[hdr:hdr+16])
		off := binary.LittleEndian.Uint32(table[hdr+16:])
		n := binary.LittleEndian.Uint32(table[hdr+20:])
		if off == 0 && n == 0 && guid == uuid.Nil {
			headerEnd := uint64(hdr + certTableEntrySize)
			for j, e := range entries {
				// Offsets are checked against the header now that its end is known.
				if uint64(e.off) < headerEnd {
					return nil, fmt.Errorf("parse SNP cert table: entry %d (%s) points into the table header", j, e.GUID)
				}
			}
			out := make([]CertEntry, len(entries))
			for j, e := range entries {
				out[j] = e.CertEntry
			}
			return out, nil
		}
		if uint64(off)+uint64(n) > uint64(len(table)) {
			return nil, fmt.Errorf("parse SNP cert table: entry %d (%s) spans bytes %d..%d of a %d-byte table", i, guid, off, uint64(off)+uint64(n), len(table))
		}
		entries = append(entries, rawEntry{CertEntry{GUID: guid, Data: bytes.Clone(table[off : off+n])}, off})
	}
}

// MarshalCertTable encodes entries as a certificate table, the inverse of
// ParseCertTable.
func MarshalCertTable(entries []CertEntry) []byte {
	if len(entries) == 0 {
		return nil
	}
	header := (len(entries) + 1) * certTableEntrySize
	size := header
	for _, e := range entries {
		size += len(e.Data)
	}
	out := make([]byte, size)
	at := header
	for i, e := range entries {
		h := out[i*certTableEntrySize:]
		copy(h, e.GUID[:])
		binary.LittleEndian.PutUint32(h[16:], uint32(at))
		binary.LittleEndian.PutUint32(h[20:], uint32(len(e.Data)))
		at += copy(out[at:], e.Data)
	}
	return out
}
