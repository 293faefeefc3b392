package rootfs

import (
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/guestd/guestd/internal/atomicfile"
)

// Bundle layout, as kata-agent expects it from PullImage.
const (
	SpecFile  = "config.json"
	RootfsDir = "rootfs"
)

// Annotations the image-spec conversion rules set from image config fields
// (image-spec conversion.md; image-spec's Go module has no constants for
// them).
const (
	annOS           = "org.opencontainers.image.os"
	annOSVersion    = "org.opencontainers.image.os.version"
	annOSFeatures   = "org.opencontainers.image.os.features"
	annArch         = "org.opencontainers.image.architecture"
	annVariant      = "org.opencontainers.image.variant"
	annAuthor       = "org.opencontainers.image.author"
	annStopSignal   = "org.opencontainers.image.stopSignal"
	annExposedPorts = "org.opencontainers.image.exposedPorts"
)

// DefaultPath is the PATH a process gets when the image sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SpecOptions adjusts the spec derived from the image config.
type SpecOptions struct {
	// Args, if not empty, replaces the image's Cmd; its Entrypoint is kept.
	Args []string
	// Env is applied over the image's Env: KEY=VALUE sets or replaces,
	// a bare KEY removes.
	Env []string
	// Hostname, if not empty, is the container's host name.
	Hostname string
}

// WriteSpec writes bundle/config.json, the OCI runtime spec SpecFromImage
// derives from img, atomically (temporary file and rename) with mode 0644.
func WriteSpec(bundle string, img ocispec.Image, opts SpecOptions) error {
	s, err := SpecFromImage(bundle, img, opts)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("write runtime spec for bundle %s: %w", bundle, err)
	}
	dst := filepath.Join(bundle, SpecFile)
	if err := atomicfile.WriteFile(dst, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	return nil
}

// SpecFromImage derives the OCI runtime spec of a container running img
// from the bundle directory bundle, whose rootfs subdirectory holds the
// image's root file system (read for the user and group databases).
//
//   - root.path is "rootfs", relative to the bundle.
//   - process.args is Entrypoint followed by Cmd (or opts.Args). An image
//     with neither gets no args: the runtime supplies the command (kata
//     takes the pod's), as with image-rs.
//   - process.env is the image's Env with opts.Env applied, plus
//     DefaultPath when no PATH is set.
//   - process.cwd is WorkingDir made absolute, or "/".
//   - process.user comes from the image's User, resolved against the
//     rootfs's /etc/passwd and /etc/group (see resolveUser); an unknown
//     user or group name is an error.
//   - annotations carry the image's os, architecture, variant, os.version,
//     os.features, author, created, stop signal and exposed ports under
//     their org.opencontainers.image.* keys, and its labels, which win.
//   - the rest is containerd's default Linux spec: namespaces, mounts,
//     capabilities, masked and read-only paths, no device access.
func SpecFromImage(bundle string, img ocispec.Image, opts SpecOptions) (*specs.Spec, error) {
	if img.OS != "" && img.OS != "linux" {
		return nil, fmt.Errorf("runtime spec for bundle %s: image OS %q is not linux", bundle, img.OS)
	}
	cfg := img.Config
	s := defaultSpec()
	s.Hostname = opts.Hostname

	cmd := cfg.Cmd
	if len(opts.Args) > 0 {
		cmd = opts.Args
	}
	if args := slices.Concat(cfg.Entrypoint, cmd); len(args) > 0 {
		s.Process.Args = args
	}

	env := mergeEnv(cfg.Env, opts.Env)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append(env, DefaultPath)
	}
	s.Process.Env = env

	s.Process.Cwd = path.Join("/", cfg.WorkingDir)

	u, err := resolveUser(filepath.Join(bundle, RootfsDir), cfg.User)
	if err != nil {
		return nil, fmt.Errorf("runtime spec for bundle %s: %w", bundle, err)
	}
	s.Process.User = u

	s.Annotations = annotations(img)
	return s, nil
}

// mergeEnv applies over to base: KEY=VALUE replaces KEY in place or is
// appended, a bare KEY deletes it.
func mergeEnv(base, over []string) []string {
	out := slices.Clone(base)
	for _, e := range over {
		k, _, set := strings.Cut(e, "=")
		i := slices.IndexFunc(out, func(o string) bool {
			ok, _, _ := strings.Cut(o, "=")
			return ok == k
		})
		switch {
		case set && i >= 0:
			out[i] = e
		case set:
			out = append(out, e)
		case i >= 0:
			out = slices.Delete(out, i, i+1)
		}
	}
	return out
}

func annotations(img ocispec.Image) map[string]string {
	a := map[string]string{}
	put := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	put(annOS, img.OS)
	put(annArch, img.Architecture)
	put(annVariant, img.Variant)
	put(annOSVersion, img.OSVersion)
	if len(img.OSFeatures) > 0 {
		put(annOSFeatures, strings.Join(img.OSFeatures, ","))
	}
	put(annAuthor, img.Author)
	if img.Created != nil {
		put(ocispec.AnnotationCreated, img.Created.UTC().Format(time.RFC3339Nano))
	}
	put(annStopSignal, img.Config.StopSignal)
	if len(img.Config.ExposedPorts) > 0 {
		ports := make([]string, 0, len(img.Config.ExposedPorts))
		for p := range img.Config.ExposedPorts {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		put(annExposedPorts, strings.Join(ports, ","))
	}
	for k, v := range img.Config.Labels {
		a[k] = v
	}
	return a
}

func defaultCaps() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
		"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// defaultSpec is containerd's default Linux spec (pkg/oci) without the
// cgroups path and host-dependent masked paths: kata-agent replaces most of
// it, but the file has to stand as a spec on its own.
func defaultSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: RootfsDir},
		Process: &specs.Process{
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  defaultCaps(),
				Effective: defaultCaps(),
				Permitted: defaultCaps(),
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore",
				"/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
}
