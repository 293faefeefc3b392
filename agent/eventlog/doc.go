// Package eventlog is the attestation agent's runtime event log (AAEL):
// ExtendRuntimeMeasurement records an event in a log file and extends its
// digest into a runtime measurement register, so a verifier can replay the
// log against the register in the evidence.
//
// # Entry format
//
// The log (default /run/attestation-agent/eventlog) is a sequence of
// TCG_PCR_EVENT2 entries, all integers little-endian, as upstream
// (guest-components attestation-agent/src/eventlog):
//
//	u32 target measurement register (CC MR index, see Extender.Register)
//	u32 event type, EV_EVENT_TAG = 0x6
//	u32 digest count = 1
//	u16 algorithm (0x000B SHA-256, 0x000C SHA-384, 0x000D SHA-512)
//	    digest of the event data
//	u32 event data size
//	    event data: a TCG_PCClientTaggedEvent
//	        u32 tagged event id 0x4141454c ("AAEL" read as a big-endian
//	            word; on disk the bytes are 4c 45 41 41)
//	        u32 tagged event data size
//	            "<domain> <operation> <content>"
//
// The digest is taken over the whole tagged event (id, size and text) with
// the register bank's algorithm, and that digest is what is extended.
// Upstream's SM3 (0x0012, Hygon CSV) is not implemented.
//
// # Crash safety
//
// An extend and a log append cannot be made atomic, so Extend keeps a
// write-ahead record, ".wal_event_entry" next to the log, in upstream's
// layout:
//
//	u64 big-endian offset of the entry in the log
//	the register value expected after the extend (digest-size bytes)
//	the event text "<domain> <operation> <content>"
//
// Extend writes it (to a temporary file renamed into place, so a torn
// record is never seen), extends the register, writes the entry at the
// offset and removes the record. Open, and every Extend before doing
// anything else, resolves a record left by a crash exactly as upstream
// does: read the register; if it already holds the expected value the
// extend happened, if extending the entry's digest onto it gives the
// expected value the extend did not happen and is done now, and anything
// else is a fatal inconsistency (the log is corrupted or another party
// extended the register). Then the entry is written at the recorded offset
// and the record removed. No extend is ever done twice.
//
// # Differences from upstream
//
//   - Upstream writes the target register of every entry from the
//     configured default PCR even when the caller names another one, so
//     such entries do not replay; here the entry names the register that
//     is extended. For the default PCR (the only one upstream's callers
//     use) the bytes are identical.
//   - When the PCR is not the default, the record's event text is followed
//     by "\n<pcr>" so recovery checks the right register (upstream's record
//     has no PCR and recovery always reads the default one). Upstream would
//     refuse such a record rather than misread it, since event text never
//     contains a newline.
//   - Domain and operation must be non-empty and free of white space, as
//     the AAEL specification requires; upstream only refuses a newline in
//     the content, which is refused here too (ErrInvalidEvent).
//   - A failed extend is resolved at once (the register is read back)
//     instead of leaving a record that a later restart would replay.
//   - The log file is locked (flock) while open, so two agents cannot
//     interleave entries.
//
// # Registers
//
// An Extender owns the platform mapping. TPMExtender extends the TPM's
// SHA-256 PCR of the same index (0-23) and records that index.
// TDXExtender records the CC MR index of upstream's TDX mapping (PCR 1 and
// 7 → 1; 2-6 → 2; 8-15 → 3; any other, including 0 and the default 17,
// → 4) and extends RTMR[CC MR − 1] by writing the SHA-384 digest to the
// kernel's sysfs attribute
// /sys/devices/virtual/misc/tdx_guest/measurements/rtmr<N>:sha384
// (Linux 6.16 and later).
package eventlog
