// Package swtpm runs a real software TPM 2.0 (the swtpm emulator) for tests.
//
// It owns the lifecycle of one swtpm process per call to Start: the state
// directory, the unix sockets for the TPM command and control channels, and
// stopping the process when the test ends. Tests need the swtpm binary
// (Debian: apt-get install swtpm swtpm-tools); without it they fail, never
// skip.
package swtpm
