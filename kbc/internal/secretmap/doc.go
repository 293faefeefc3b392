// Package secretmap reads the file format the offline KBCs share: a JSON
// object mapping resource IDs ("repo/type/tag") to standard base64 values,
// as in upstream's offline_fs_kbc files and SEV launch secrets. Its errors
// never quote the input, which holds secrets.
package secretmap
