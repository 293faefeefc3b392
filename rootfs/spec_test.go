package rootfs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
)

const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
app:x:1000:1000::/home/app:/bin/sh
svc:x:1001:100::/srv:/sbin/nologin
`
	testGroup = `root:x:0:
wheel:x:10:app
users:x:100:app,svc
app:x:1000:
docker:x:999:svc
`
)

// newBundle makes a bundle whose rootfs holds files (path -> content) and
// symlinks (path -> target).
func newBundle(t *testing.T, files, links map[string]string) string {
	t.Helper()
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, RootfsDir)
	must(t, os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755))
	for p, c := range files {
		p = filepath.Join(rootfs, p)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(c), 0o644))
	}
	for p, target := range links {
		p = filepath.Join(rootfs, p)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.Symlink(target, p))
	}
	return bundle
}

func imageWith(c ocispec.ImageConfig) ocispec.Image {
	return ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, Config: c}
}

func TestSpecArgs(t *testing.T) {
	bundle := newBundle(t, nil, nil)
	cases := []struct {
		name       string
		entrypoint []string
		cmd        []string
		override   []string
		want       []string
	}{
		{"entrypoint only", []string{"/bin/app", "-v"}, nil, nil, []string{"/bin/app", "-v"}},
		{"cmd only", nil, []string{"sh", "-c", "echo hi"}, nil, []string{"sh", "-c", "echo hi"}},
		{"both", []string{"/entry"}, []string{"--flag"}, nil, []string{"/entry", "--flag"}},
		{"neither: the runtime supplies the command", nil, nil, nil, nil},
		{"override replaces cmd, keeps entrypoint", []string{"/entry"}, []string{"--flag"}, []string{"--other"}, []string{"/entry", "--other"}},
		{"override without entrypoint", nil, []string{"sh"}, []string{"bash"}, []string{"bash"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := imageWith(ocispec.ImageConfig{Entrypoint: tc.entrypoint, Cmd: tc.cmd})
			s, err := SpecFromImage(bundle, img, SpecOptions{Args: tc.override})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Args, tc.want) {
				t.Errorf("args %q, want %q", s.Process.Args, tc.want)
			}
			if len(tc.entrypoint) > 0 && len(s.Process.Args) > 0 && &s.Process.Args[0] == &img.Config.Entrypoint[0] {
				t.Error("args alias the image's Entrypoint")
			}
		})
	}
}

func TestSpecEnv(t *testing.T) {
	bundle := newBundle(t, nil, nil)
	cases := []struct {
		name      string
		image, in []string
		want      []string
	}{
		{"none gets the default PATH", nil, nil, []string{DefaultPath}},
		{"image PATH kept", []string{"PATH=/opt/bin", "A=1"}, nil, []string{"PATH=/opt/bin", "A=1"}},
		{"PATH added when missing", []string{"A=1"}, nil, []string{"A=1", DefaultPath}},
		{"override and append", []string{"A=1", "PATH=/x"}, []string{"A=2", "B=3"}, []string{"A=2", "PATH=/x", "B=3"}},
		{"bare key unsets", []string{"A=1", "B=2", "PATH=/x"}, []string{"A"}, []string{"B=2", "PATH=/x"}},
		{"unsetting PATH restores the default", []string{"PATH=/x"}, []string{"PATH"}, []string{DefaultPath}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := SpecFromImage(bundle, imageWith(ocispec.ImageConfig{Env: tc.image}), SpecOptions{Env: tc.in})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Env, tc.want) {
				t.Errorf("env %q, want %q", s.Process.Env, tc.want)
			}
		})
	}
}

func TestSpecCwd(t *testing.T) {
	bundle := newBundle(t, nil, nil)
	for wd, want := range map[string]string{"": "/", "/app": "/app", "/app/": "/app", "app/data": "/app/data", "/a/../b": "/b"} {
		s, err := SpecFromImage(bundle, imageWith(ocispec.ImageConfig{WorkingDir: wd}), SpecOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Process.Cwd != want {
			t.Errorf("WorkingDir %q: cwd %q, want %q", wd, s.Process.Cwd, want)
		}
	}
}

func TestSpecUser(t *testing.T) {
	host := filepath.Join(t.TempDir(), "passwd")
	must(t, os.WriteFile(host, []byte("evil:x:666:666::/:/bin/sh\n"), 0o644))
	hostGroup := filepath.Join(filepath.Dir(host), "group")
	must(t, os.WriteFile(hostGroup, []byte("evilgrp:x:666:app\n"), 0o644))

	db := map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup}
	full := newBundle(t, db, nil)
	noPasswd := newBundle(t, nil, nil)
	// /etc/passwd and /etc/group point at host files by absolute path; in
	// the container that path does not exist.
	outAbs := newBundle(t, nil, map[string]string{"etc/passwd": host, "etc/group": hostGroup})
	// The same, but the container has its own file at that path.
	outAbsShadowed := newBundle(t, map[string]string{host: "evil:x:777:778::/:/bin/sh\n"}, map[string]string{"etc/passwd": host})
	// A relative link that climbs above the rootfs.
	outRel := newBundle(t, nil, map[string]string{"etc/passwd": strings.Repeat("../", 20) + strings.TrimPrefix(host, "/")})
	// /etc is a symlink to a host directory.
	etcOut := t.TempDir()
	must(t, os.WriteFile(filepath.Join(etcOut, "passwd"), []byte("evil:x:666:666::/:/bin/sh\n"), 0o644))
	etcLink := newBundle(t, nil, nil)
	must(t, os.Remove(filepath.Join(etcLink, RootfsDir, "etc")))
	must(t, os.Symlink(etcOut, filepath.Join(etcLink, RootfsDir, "etc")))
	// Links that stay inside the rootfs are followed.
	inside := newBundle(t, map[string]string{"usr/lib/passwd": testPasswd, "usr/lib/group": testGroup},
		map[string]string{"etc/passwd": "/usr/lib/passwd", "etc/group": "../usr/lib/group"})
	fifoPasswd := newBundle(t, nil, nil)
	must(t, syscall.Mkfifo(filepath.Join(fifoPasswd, RootfsDir, "etc/passwd"), 0o644))

	cases := []struct {
		name, bundle, user string
		uid, gid           uint32
		gids               []uint32
		err                string
	}{
		{"empty is root", full, "", 0, 0, []uint32{0}, ""},
		{"uid", full, "1000", 1000, 1000, []uint32{1000, 10, 100}, ""},
		{"uid not in passwd", full, "4242", 4242, 0, []uint32{0}, ""},
		{"uid:gid", full, "1000:5", 1000, 5, []uint32{5, 10, 100}, ""},
		{"name", full, "app", 1000, 1000, []uint32{1000, 10, 100}, ""},
		{"name:group", full, "app:wheel", 1000, 10, []uint32{10, 100}, ""},
		{"uid:group", full, "1001:users", 1001, 100, []uint32{100, 999}, ""},
		{"name:gid", full, "svc:7", 1001, 7, []uint32{7, 100, 999}, ""},
		{"unknown user", full, "nobody", 0, 0, nil, `unknown user "nobody"`},
		{"unknown group", full, "app:nogroup", 0, 0, nil, `unknown group "nogroup"`},
		{"three parts", full, "1:2:3", 0, 0, nil, "want user"},
		{"empty group", full, "app:", 0, 0, nil, "want user"},
		{"empty user", full, ":5", 0, 0, nil, "want user"},
		{"uid out of range", full, "2147483648", 0, 0, nil, "out of range"},
		{"gid out of range", full, "1:99999999999", 0, 0, nil, "out of range"},
		{"no passwd: uid", noPasswd, "1000", 1000, 0, []uint32{0}, ""},
		{"no passwd: uid:gid", noPasswd, "1000:1000", 1000, 1000, []uint32{1000}, ""},
		{"no passwd: name", noPasswd, "app", 0, 0, nil, "the image has no /etc/passwd"},
		{"passwd links to a host file", outAbs, "evil", 0, 0, nil, `unknown user "evil"`},
		{"group links to a host file", outAbs, "0:evilgrp", 0, 0, nil, `unknown group "evilgrp"`},
		{"host path resolved in the rootfs", outAbsShadowed, "evil", 777, 778, []uint32{778}, ""},
		{"passwd links above the rootfs", outRel, "evil", 0, 0, nil, `unknown user "evil"`},
		{"etc links to a host directory", etcLink, "evil", 0, 0, nil, `unknown user "evil"`},
		{"links inside the rootfs", inside, "app", 1000, 1000, []uint32{1000, 10, 100}, ""},
		{"passwd is a FIFO", fifoPasswd, "app", 0, 0, nil, "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := SpecFromImage(tc.bundle, imageWith(ocispec.ImageConfig{User: tc.user}), SpecOptions{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("SpecFromImage: %v; want an error containing %q", err, tc.err)
				}
				if tc.user != "" && !strings.Contains(err.Error(), tc.user) {
					t.Errorf("error %q does not name the user %q", err, tc.user)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.gids) {
				t.Errorf("user %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, tc.uid, tc.gid, tc.gids)
			}
		})
	}
}

func TestSpecAnnotations(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	img := ocispec.Image{
		Created:  &created,
		Author:   "someone",
		Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Config: ocispec.ImageConfig{
			StopSignal:   "SIGTERM",
			ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
			Labels:       map[string]string{"org.opencontainers.image.architecture": "label wins", "x": "y"},
		},
	}
	s, err := SpecFromImage(newBundle(t, nil, nil), img, SpecOptions{Hostname: "box"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"org.opencontainers.image.os":           "linux",
		"org.opencontainers.image.architecture": "label wins",
		"org.opencontainers.image.variant":      "v8",
		"org.opencontainers.image.author":       "someone",
		"org.opencontainers.image.created":      "2026-01-02T03:04:05Z",
		"org.opencontainers.image.stopSignal":   "SIGTERM",
		"org.opencontainers.image.exposedPorts": "53/udp,8080/tcp",
		"x":                                     "y",
	}
	for k, v := range want {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	if len(s.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", s.Annotations, want)
	}
	if s.Hostname != "box" {
		t.Errorf("hostname %q", s.Hostname)
	}
}

func TestSpecRefusesOtherOS(t *testing.T) {
	img := imageWith(ocispec.ImageConfig{})
	img.OS = "windows"
	if _, err := SpecFromImage(newBundle(t, nil, nil), img, SpecOptions{}); err == nil {
		t.Fatal("SpecFromImage accepted a windows image")
	}
}

func TestWriteSpec(t *testing.T) {
	bundle := newBundle(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup}, nil)
	cfg := filepath.Join(bundle, SpecFile)
	must(t, os.WriteFile(cfg, []byte("stale"), 0o600))
	img := imageWith(ocispec.ImageConfig{User: "app", Entrypoint: []string{"/bin/app"}, WorkingDir: "/srv", Env: []string{"A=1"}})
	if err := WriteSpec(bundle, img, SpecOptions{}); err != nil {
		t.Fatalf("WriteSpec: %v", err)
	}

	fi, err := os.Stat(cfg)
	must(t, err)
	if fi.Mode() != 0o644 {
		t.Errorf("config.json mode %v, want 0644", fi.Mode())
	}
	b, err := os.ReadFile(cfg)
	must(t, err)
	var s specs.Spec
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("config.json is not a runtime spec: %v", err)
	}
	if s.Version != specs.Version || s.Root == nil || s.Root.Path != "rootfs" || s.Root.Readonly {
		t.Errorf("version %q root %+v", s.Version, s.Root)
	}
	p := s.Process
	if p == nil || !slices.Equal(p.Args, []string{"/bin/app"}) || p.Cwd != "/srv" || p.User.UID != 1000 ||
		!slices.Equal(p.Env, []string{"A=1", DefaultPath}) || !p.NoNewPrivileges {
		t.Errorf("process %+v", p)
	}
	if p.Capabilities == nil || !slices.Contains(p.Capabilities.Bounding, "CAP_NET_BIND_SERVICE") || slices.Contains(p.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("capabilities %+v", p.Capabilities)
	}
	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	if want := []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}; !slices.Equal(dests, want) {
		t.Errorf("mounts %v, want %v", dests, want)
	}
	var nss []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		nss = append(nss, n.Type)
	}
	for _, n := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace} {
		if !slices.Contains(nss, n) {
			t.Errorf("namespace %s missing from %v", n, nss)
		}
	}
	if len(s.Linux.MaskedPaths) == 0 || len(s.Linux.ReadonlyPaths) == 0 {
		t.Error("no masked or read-only paths")
	}
	names, _ := os.ReadDir(bundle)
	for _, n := range names {
		if n.Name() != SpecFile && n.Name() != RootfsDir {
			t.Errorf("bundle holds %s after WriteSpec", n.Name())
		}
	}
}

func TestWriteSpecUnknownUser(t *testing.T) {
	bundle := newBundle(t, map[string]string{"etc/passwd": testPasswd}, nil)
	err := WriteSpec(bundle, imageWith(ocispec.ImageConfig{User: "ghost"}), SpecOptions{})
	if err == nil || !strings.Contains(err.Error(), `"ghost"`) {
		t.Fatalf("WriteSpec: %v; want an error naming ghost", err)
	}
	names, _ := os.ReadDir(bundle)
	if len(names) != 1 {
		t.Errorf("bundle holds %v after a failed WriteSpec", names)
	}
}

func TestWriteSpecMissingBundle(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "absent")
	if err := WriteSpec(bundle, imageWith(ocispec.ImageConfig{User: "0"}), SpecOptions{}); err == nil {
		t.Fatal("WriteSpec into a missing bundle succeeded")
	}
}
