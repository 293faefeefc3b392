package images

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const (
	// BusyboxBinary is where Debian's busybox-static installs busybox.
	BusyboxBinary = "/bin/busybox"
	// busyboxHint is the command that installs BusyboxBinary.
	busyboxHint = "apt-get install -y busybox-static"
)

// BusyboxEntries returns a small but realistic root filesystem: Debian's
// static busybox as /bin/busybox with a symlink per applet (sh, ls, cat,
// echo, ...), /etc/passwd and /etc/group (root, nobody, and guest with
// uid/gid 1000 and home /home/guest), and the usual top-level directories
// (/tmp sticky, /root private).
func BusyboxEntries(t testing.TB) []Entry {
	t.Helper()
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		t.Fatalf("read busybox (install it with: %s): %v", busyboxHint, err)
	}
	if err := checkStatic(BusyboxBinary); err != nil {
		t.Fatalf("busybox: %v; install the static build with: %s", err, busyboxHint)
	}
	out, err := exec.Command(BusyboxBinary, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	es := []Entry{
		Dir("bin"), Dir("dev"), Dir("etc"), Dir("home"),
		Dir("home/guest").WithMode(0o750).WithOwner(1000, 1000),
		Dir("proc"), Dir("root").WithMode(0o700), Dir("sys"),
		Dir("tmp").WithMode(0o1777), Dir("usr"), Dir("var"), Dir("var/tmp").WithMode(0o1777),
		{Name: "bin/busybox", Kind: KindFile, Mode: 0o755, Content: bin},
	}
	for _, a := range applets {
		if a != "busybox" && !strings.Contains(a, "/") {
			es = append(es, Symlink("bin/"+a, "busybox"))
		}
	}
	return append(es,
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"guest:x:1000:1000:guest:/home/guest:/bin/sh\n"),
		File("etc/group", "root:x:0:\nnobody:x:65534:\nguest:x:1000:\n"),
		File("etc/hostname", "busybox\n"),
		File("etc/os-release", "NAME=\"guestd test busybox\"\nID=busybox\n"),
	)
}

// Busybox returns a single-layer (gzip) linux/amd64 image of
// BusyboxEntries whose command is /bin/sh, with PATH set.
func Busybox(t testing.TB) Image {
	t.Helper()
	return Image{
		Layers: []Layer{NewLayer(t, Gzip, BusyboxEntries(t)...)},
		Config: Config{
			Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"/bin/sh"},
		},
	}
}

// checkStatic fails unless path is an ELF executable without a program
// interpreter (so it runs in a rootfs without a libc).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("open ELF %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}
