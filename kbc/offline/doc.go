// Package offline owns the offline file-system KBC (upstream's
// offline_fs_kbc): it serves resources from JSON files baked into the guest
// image instead of asking a KBS. It is only as confidential as the guest
// file system (e.g. IBM Secure Execution, where the image is encrypted).
//
// Each file is a JSON object mapping a resource path "repo/type/tag" to the
// resource's standard (padded) base64 encoding:
//
//	{"default/key/key_id1": "REXwTCcCFObQdE9ZfL0a/iZtucCwBIo36/L0aL5l7UA="}
//
// The files are read in order (keys file, resources file, extra files); an
// entry in a later file replaces one of the same path in an earlier file.
//
// Loading follows upstream's confidential-data-hub
// (kms/src/plugins/kbs/offline_fs.rs), which builds a new offline_fs_kbc for
// every request: GetResource reads every file on each call, so edits take
// effect without a restart. As upstream, a file that does not exist is
// skipped, and a file that is not a JSON object of strings, or holds a
// value that is not base64, fails every request until fixed. Unlike
// upstream, which skips a file it cannot read for any reason with a
// warning, any read error other than "does not exist" (permissions, a
// directory, a file over MaxFileSize) fails the request: skipping it could
// silently serve an older value the unreadable file was meant to replace.
package offline
