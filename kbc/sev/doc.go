// Package sev owns the offline SEV KBC (upstream's offline_sev_kbc): keys
// the guest owner injected into an SEV or SEV-ES guest at launch
// (LAUNCH_SECRET), which the firmware places in the EFI secret area and the
// Linux efi_secret driver exposes as files named by GUID under
// <securityfs>/secrets/coco.
//
// The contract is the last one upstream shipped: confidential-containers/
// guest-components attestation-agent/kbc/src/offline_sev_kbc/mod.rs (last
// changed in f31b6f32, 2023-08-07) and attestation-agent/deps/sev, as they
// stood at 43084088 just before 880c384f (2025-11-10) deleted the KBC. The
// archived attestation-agent repository (554ca6e) has the same behaviour.
//
//   - The secret entry with GUID e6f5a162-d67f-4750-a67c-5d065f2a9910 holds
//     a JSON object mapping key IDs to standard base64 values
//     ({"default/key/key_id1": "cGFzc3Bo..."}). A key ID is the resource
//     URI's path, "repo/type/tag", as upstream looked keys up by
//     kid.resource_path().
//   - The secret is read once, when the KBC is created, and the file is then
//     unlinked, which makes efi_secret zero the secret in guest memory: it
//     cannot be read again this boot. The keys live in the KBC's memory.
//   - Upstream mounted securityfs on /sys/kernel/security, ran
//     "modprobe efi_secret" before reading and "modprobe -r efi_secret"
//     after. guestd does each step only when needed: it mounts securityfs
//     only if the secret area is missing and /sys/kernel/security is not
//     securityfs already (upstream mounted it unconditionally and gave up
//     if mount failed), loads efi_secret only if the area is still missing
//     (the EFI driver normally loads it on its own), and unloads it only if
//     it loaded it.
//   - Parse errors do not quote the secret (upstream redacted them too).
//   - Upstream panicked if the unlink or the unload failed; New fails
//     instead and discards the keys.
//
// Upstream's offline_sev_kbc only unwrapped image keys (decrypt_payload); it
// never served get_resource. GetResource here returns the decoded value for
// the URI's path, which is the same key that unwrapping used. The online
// variant (online_sev_kbc: GUID 1ee27366-0c87-43a6-af48-28543eaf7cb0 holding
// {"client_id","key"} for simple-kbs) was removed upstream on 2026-08-12
// (fa70c5d6) and is not implemented.
package sev
