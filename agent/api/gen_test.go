package api_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/guestd/guestd/agent/api/keyproviderpb"
)

// pinnedProtoc is the protoc the committed code was generated with (Debian
// 12's protobuf-compiler); it appears in the generated headers.
const pinnedProtoc = "libprotoc 3.21.12"

// protocVersion returns protoc's version. A missing protoc fails the test:
// `make test` installs it (make deps), so its absence is a setup error, not
// a reason to leave the generated code unchecked.
func protocVersion(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: run make deps (apt-get install protobuf-compiler)")
	}
	out, err := exec.Command("protoc", "--version").Output()
	if err != nil {
		t.Fatalf("protoc --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// repoRoot is the repository root: this package is agent/api.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// protocVersionLine matches the protoc version in protoc-gen-go's and
// protoc-gen-go-grpc's headers.
var protocVersionLine = regexp.MustCompile(`(?m)^(//\s+(?:-\s+)?protoc\s+)v\S+$`)

// TestGeneratedCodeIsFresh regenerates agent/api into a temp dir with
// test/scripts/proto-tools.sh (what `make proto` runs; it installs the
// pinned plugins into .cache/bin if missing) and requires the committed
// *.pb.go files to be byte-for-byte what it produces, with no missing or
// stale files.
func TestGeneratedCodeIsFresh(t *testing.T) {
	version := protocVersion(t)
	root := repoRoot(t)
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(root, "test/scripts/proto-tools.sh"), "gen", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("proto-tools.sh gen: %v\n%s", err, b)
	}

	committed := pbFiles(t, filepath.Join(root, "agent/api"))
	generated := pbFiles(t, filepath.Join(out, "agent/api"))
	if !slices.Equal(committed, generated) {
		t.Fatalf("generated files differ from the committed ones (run make proto):\ncommitted: %v\ngenerated: %v", committed, generated)
	}
	if len(generated) == 0 {
		t.Fatal("the generator produced nothing")
	}
	for _, rel := range generated {
		want, err := os.ReadFile(filepath.Join(out, "agent/api", rel))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, "agent/api", rel))
		if err != nil {
			t.Fatal(err)
		}
		if version != pinnedProtoc {
			// Another protoc changes only the header's version line for
			// these proto3 files; compare the rest.
			t.Logf("protoc is %q, not %q: ignoring the protoc version in headers", version, pinnedProtoc)
			want = protocVersionLine.ReplaceAll(want, []byte("${1}vX"))
			got = protocVersionLine.ReplaceAll(got, []byte("${1}vX"))
		}
		if !bytes.Equal(got, want) {
			t.Errorf("agent/api/%s is stale (run make proto): %s", rel, firstDiff(got, want))
		}
	}
}

// pbFiles lists the *.pb.go files under dir, relative to it.
func pbFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".pb.go") {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: committed %q, generator %q", i+1, gl, wl)
		}
	}
	return "no line differs"
}

// TestKeyproviderProtoMatchesOcicrypt compiles guestd's keyprovider.proto
// (from which only ttRPC stubs are generated) and checks it describes the
// same wire API as ocicrypt's descriptor, whose message types those stubs
// use: same package, service, methods, and field names, numbers and types;
// message names may differ only in case (ocicrypt's keyProvider… against
// CoCo's KeyProvider…), as they never reach the wire.
func TestKeyproviderProtoMatchesOcicrypt(t *testing.T) {
	protocVersion(t)
	root := repoRoot(t)
	set := filepath.Join(t.TempDir(), "kp.pb")
	cmd := exec.Command("protoc", "-I", root, "--descriptor_set_out="+set, "agent/api/proto/keyprovider.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(set)
	if err != nil {
		t.Fatal(err)
	}
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &fds); err != nil {
		t.Fatal(err)
	}
	ours, err := protodesc.NewFile(fds.File[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	theirs := (&keyproviderpb.KeyProviderKeyWrapProtocolInput{}).ProtoReflect().Descriptor().ParentFile()

	if ours.Package() != theirs.Package() {
		t.Errorf("package %s, ocicrypt %s", ours.Package(), theirs.Package())
	}
	if got, want := services(ours), services(theirs); got != want {
		t.Errorf("services:\n%s\nocicrypt:\n%s", got, want)
	}
	if ours.Messages().Len() != theirs.Messages().Len() {
		t.Fatalf("%d messages, ocicrypt %d", ours.Messages().Len(), theirs.Messages().Len())
	}
	for i := 0; i < ours.Messages().Len(); i++ {
		o, w := ours.Messages().Get(i), theirs.Messages().Get(i)
		if !strings.EqualFold(string(o.Name()), string(w.Name())) {
			t.Errorf("message %s, ocicrypt %s", o.Name(), w.Name())
		}
		if got, want := fields(o), fields(w); got != want {
			t.Errorf("%s fields %s, ocicrypt %s", o.Name(), got, want)
		}
	}
	if !strings.HasPrefix(string(ours.Messages().Get(0).Name()), "KeyProvider") {
		t.Errorf("guestd's proto should use CoCo's message names, got %s", ours.Messages().Get(0).Name())
	}
}

// services renders a file's services with case-folded message names.
func services(fd protoreflect.FileDescriptor) string {
	var b strings.Builder
	for i := 0; i < fd.Services().Len(); i++ {
		sd := fd.Services().Get(i)
		for j := 0; j < sd.Methods().Len(); j++ {
			md := sd.Methods().Get(j)
			fmt.Fprintf(&b, "/%s/%s(%s) %s\n", sd.FullName(), md.Name(),
				strings.ToLower(string(md.Input().FullName())), strings.ToLower(string(md.Output().FullName())))
		}
	}
	return b.String()
}

func fields(md protoreflect.MessageDescriptor) string {
	var s []string
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		s = append(s, fmt.Sprintf("%s=%d:%s", fd.Name(), fd.Number(), fieldType(fd)))
	}
	return strings.Join(s, ",")
}
