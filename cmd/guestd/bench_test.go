package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkStartup measures guestd serve from exec until both ttRPC
// sockets accept connections (sample TEE, no KBS, REST on), and reports
// the idle resident set size once it serves.
func BenchmarkStartup(b *testing.B) {
	dir, err := os.MkdirTemp("", "gdb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, nil, 0o644)
	cdhConf := filepath.Join(dir, "cdh.toml")
	aaSock, cdhSock := filepath.Join(dir, "aa.sock"), filepath.Join(dir, "cdh.sock")
	os.WriteFile(cdhConf, []byte(fmt.Sprintf("socket = %q\n[kbc]\nname = \"offline_fs_kbc\"\n[image]\nwork_dir = %q\n",
		"unix://"+cdhSock, filepath.Join(dir, "work"))), 0o600)
	var rssKiB int
	for b.Loop() {
		os.Remove(aaSock)
		os.Remove(cdhSock)
		cmd := exec.Command(guestdBin, "serve", "--config=", "--cdh-config", cdhConf, "--cmdline", cmdline, "--tee", "sample",
			"--attestation_sock", "unix://"+aaSock, "--rest", "127.0.0.1:0")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !accepts(aaSock) || !accepts(cdhSock) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				b.Fatal("guestd did not open its sockets")
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		time.Sleep(200 * time.Millisecond) // let it settle, then read its RSS
		rssKiB = vmRSS(b, cmd.Process.Pid)
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		b.StartTimer()
	}
	b.ReportMetric(float64(rssKiB)/1024, "idle-RSS-MiB")
}

func accepts(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func vmRSS(b *testing.B, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
