package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if err != nil || string(got) != "two" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("content %q mode %v err %v", got, fi.Mode(), err)
	}
	// A failure (the target is a directory) leaves no temporary file.
	if err := WriteFile(dir, []byte("x"), 0o600); err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d entries after a failed write, want 1", len(entries))
	}
}
