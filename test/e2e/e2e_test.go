//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/test/guest"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/swtpm"
)

const readyTimeout = 2 * time.Minute

func TestMain(m *testing.M) {
	guest.RelayMain()
	os.Exit(m.Run())
}

// vmClients are the host's gRPC clients of one guest's guestd, over
// hostfwd → the in-guest bridge → AF_VSOCK.
type vmClients struct {
	aa    aapb.AttestationAgentServiceClient
	pull  cdhpb.ImagePullServiceClient
	mount cdhpb.SecureMountServiceClient
	res   cdhpb.GetResourceServiceClient
}

func dial(t *testing.T, vm *guest.VM) vmClients {
	t.Helper()
	conn := func(port int) *grpc.ClientConn {
		c, err := grpc.NewClient(vm.Addr(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	aa, cdh := conn(guest.AAPort), conn(guest.CDHPort)
	return vmClients{
		aa:    aapb.NewAttestationAgentServiceClient(aa),
		pull:  cdhpb.NewImagePullServiceClient(cdh),
		mount: cdhpb.NewSecureMountServiceClient(cdh),
		res:   cdhpb.NewGetResourceServiceClient(cdh),
	}
}

// boot starts a guest for w with extra kernel parameters and disks (after
// the initdata disk, so they are /dev/vdb, /dev/vdc, ...) and waits for it.
func (w *world) boot(t *testing.T, name string, params []string, disks ...string) (*guest.VM, vmClients) {
	t.Helper()
	opts := guest.Options{
		Append:    append(w.cmdline(), params...),
		Forwards:  w.forwards(),
		HostPorts: []int{guest.AAPort, guest.CDHPort},
		TPM:       swtpm.StartForQEMU(t, w.tpmState).Ctrl,
		Disks:     append([]string{guest.InitdataDisk(t, t.TempDir(), w.initdata())}, disks...),
		RelayLog:  w.relayLog,
	}
	vm := guest.Boot(t, name, opts)
	ready := vm.WaitReady(readyTimeout)
	up := strings.TrimSpace(vm.MustSh(t, 10*time.Second, "cut -d' ' -f1 /proc/uptime"))
	t.Logf("TIMING %s: QEMU start to READY %.1f s (guest uptime at first probe %s s)", name, ready.Seconds(), up)
	return vm, dial(t, vm)
}

// pull runs PullImage into a fresh bundle dir and returns the digest, the
// bundle and the call's duration.
func pull(ctx context.Context, t *testing.T, vm *guest.VM, c vmClients, image, bundle string) (string, time.Duration, error) {
	t.Helper()
	vm.MustSh(t, 10*time.Second, "mkdir -p "+bundle)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	resp, err := c.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: image, BundlePath: bundle})
	d := time.Since(start)
	if err != nil {
		return "", d, err
	}
	return resp.GetManifestDigest(), d, nil
}

// run runs the bundle with runc in the guest and returns its output.
// (Debian 12's crun 1.8.1 refuses the current runtime-spec version that
// the bundle's config.json carries: "unknown version specified".)
func run(t *testing.T, vm *guest.VM, bundle, id string) string {
	t.Helper()
	start := time.Now()
	out := vm.MustSh(t, 60*time.Second, fmt.Sprintf("runc run --bundle %s %s </dev/null 2>&1", bundle, id))
	t.Logf("TIMING runc run %s: %.2f s", id, time.Since(start).Seconds())
	return out
}

// noMount fails if anything is mounted at or under dir in the guest.
func noMount(t *testing.T, vm *guest.VM, dir string) {
	t.Helper()
	out := vm.MustSh(t, 10*time.Second, "cat /proc/self/mountinfo")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			t.Errorf("%s is mounted after a refused pull: %s", f[4], l)
		}
	}
	if r, _ := vm.Sh(context.Background(), 10*time.Second, "test -e "+dir+"/config.json"); r.Exit == 0 {
		t.Errorf("%s/config.json exists after a refused pull", dir)
	}
}

func TestE2E(t *testing.T) {
	w := newWorld(t)
	setupDone := len(w.reg.Output())
	// Every call into the guest is bounded.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vm, c := w.boot(t, "main", nil)

	t.Run("unencrypted", func(t *testing.T) {
		start := time.Now()
		tok, err := c.aa.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"})
		if err != nil {
			t.Fatalf("GetToken: %v", err)
		}
		t.Logf("TIMING attestation (GetToken, TPM evidence, first call): %.2f s", time.Since(start).Seconds())
		if parts := strings.Split(string(tok.GetToken()), "."); len(parts) != 3 {
			t.Fatalf("GetToken returned %q, not a JWT", tok.GetToken())
		}
		tee, err := c.aa.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
		if err != nil || tee.GetTee() != "tpm" {
			t.Fatalf("GetTeeType = %q, %v; want tpm (swtpm), not the sample attester", tee.GetTee(), err)
		}
		ev, err := c.aa.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: []byte("e2e")})
		if err != nil {
			t.Fatalf("GetEvidence: %v", err)
		}
		var evidence map[string]json.RawMessage
		if err := json.Unmarshal(ev.GetEvidence(), &evidence); err != nil || evidence["tpm_quote"] == nil || evidence["ak_public"] == nil {
			t.Fatalf("evidence is not TPM evidence (%v): %.200s", err, ev.GetEvidence())
		}
		if st := w.kbs.Server.Stats(); st.Attest < 1 {
			t.Fatalf("the KBS verified no evidence: %+v", st)
		}

		bundle := "/run/kata-containers/e2e-busybox"
		dgst, d, err := pull(ctx, t, vm, c, w.name("e2e/busybox"), bundle)
		if err != nil {
			t.Fatalf("PullImage: %v", err)
		}
		t.Logf("TIMING pull unencrypted busybox: %.2f s", d.Seconds())
		if want := w.ref(t, "e2e/busybox").Digest.String(); dgst != want {
			t.Fatalf("PullImage digest %s, want %s", dgst, want)
		}
		out := run(t, vm, bundle, "busybox")
		if !strings.Contains(out, "hello from the unencrypted image") || !strings.Contains(out, "uid=0") {
			t.Fatalf("container output:\n%s", out)
		}

		// A workload's view: kata's api-server-rest on the guest's
		// loopback, in front of the AA and the CDH sockets.
		rest := vm.MustSh(t, 30*time.Second, "wget -qO- 'http://127.0.0.1:8006/aa/token?token_type=kbs'; echo; "+
			"wget -qO- http://127.0.0.1:8006/cdh/resource/default/cosign-key/1")
		if !strings.Contains(rest, `"token"`) || strings.Contains(rest, "PRIVATE KEY") || !strings.Contains(rest, "BEGIN PUBLIC KEY") {
			t.Fatalf("REST API in the guest returned:\n%s", rest)
		}
	})

	t.Run("encrypted", func(t *testing.T) {
		before := w.kbs.Server.Stats()
		bundle := "/run/kata-containers/e2e-seed"
		dgst, d, err := pull(ctx, t, vm, c, w.name("e2e/seed"), bundle)
		if err != nil {
			t.Fatalf("PullImage: %v", err)
		}
		t.Logf("TIMING pull encrypted signed seed image (policy, cosign key, KEK from the KBS): %.2f s", d.Seconds())
		if want := w.ref(t, "e2e/seed").Digest.String(); dgst != want {
			t.Fatalf("PullImage digest %s, want %s", dgst, want)
		}
		after := w.kbs.Server.Stats()
		if got := after.ResourceGets - before.ResourceGets; got < 3 {
			t.Fatalf("the KBS released %d resources for the pull; want the policy, the cosign key and the KEK", got)
		}
		out := run(t, vm, bundle, "seed")
		if !strings.Contains(out, "seed workload running") || !strings.Contains(out, w.canarySum) {
			t.Fatalf("container output does not show the decrypted canary (sha256 %s):\n%s", w.canarySum, out)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct{ repo, want string }{
			{"e2e/other", "signature"},
			{"e2e/unsigned", "signature"},
		} {
			bundle := "/run/kata-containers/e2e-refused-" + strings.TrimPrefix(tc.repo, "e2e/")
			_, _, err := pull(ctx, t, vm, c, w.name(tc.repo), bundle)
			if err == nil {
				t.Fatalf("PullImage of %s succeeded; the policy should refuse it", tc.repo)
			}
			if !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("PullImage of %s: %v; want the policy reason (%q)", tc.repo, err, tc.want)
			}
			t.Logf("%s refused: %v", tc.repo, err)
			noMount(t, vm, bundle)
		}
		// The KBS's policy turns to deny: the next pull cannot fetch the
		// security policy and fails naming the KBS.
		w.kbs.Server.SetPolicy(testkbs.DenyAll())
		defer w.kbs.Server.SetPolicy(testkbs.AllowAll())
		bundle := "/run/kata-containers/e2e-refused-kbs"
		_, _, err := pull(ctx, t, vm, c, w.name("e2e/seed"), bundle)
		if err == nil {
			t.Fatal("PullImage succeeded with the KBS denying every resource")
		}
		if msg := strings.ToLower(err.Error()); !strings.Contains(msg, "kbs") || !strings.Contains(msg, "polic") {
			t.Errorf("PullImage with the KBS denying: %v; want the KBS's policy reason", err)
		}
		t.Logf("KBS deny: %v (code %s)", err, status.Code(err))
		noMount(t, vm, bundle)
	})

	t.Run("securemount", func(t *testing.T) {
		// Two scratch volumes on loop devices, random keys (ephemeral:
		// the LUKS2 header stays in guest memory), with and without
		// dm-integrity.
		for _, tc := range []struct {
			name, integrity, want string
		}{
			{"scratch", "false", "cipher:  aes-xts-plain64"},
			{"scratch-integrity", "true", "e2e-scratch-integrity_dif"}, // dm-integrity below dm-crypt
		} {
			img := "/run/" + tc.name + ".img"
			loop := strings.TrimSpace(vm.MustSh(t, 30*time.Second, "dd if=/dev/zero of="+img+" bs=1M count=32 2>/dev/null && losetup -f --show "+img))
			mp := "/run/secure-" + tc.name
			start := time.Now()
			_, err := c.mount.SecureMount(ctx, &cdhpb.SecureMountRequest{
				VolumeType: "block-device",
				Options: map[string]string{"devicePath": loop, "sourceType": "empty", "encryptionType": "luks2",
					"targetType": "fileSystem", "filesystemType": "ext4", "mapperName": "e2e-" + tc.name, "dataIntegrity": tc.integrity},
				MountPoint: mp,
			})
			if err != nil {
				t.Fatalf("SecureMount %s on %s: %v", tc.name, loop, err)
			}
			t.Logf("TIMING SecureMount %s (32 MiB, integrity %s): %.2f s", tc.name, tc.integrity, time.Since(start).Seconds())
			marker := "plaintext-marker-" + tc.name
			out := vm.MustSh(t, 30*time.Second, "cryptsetup status e2e-"+tc.name+"; ls /dev/mapper; grep ' "+mp+" ' /proc/mounts; echo "+marker+" >"+mp+"/f && sync && cat "+mp+"/f")
			for _, want := range []string{tc.want, "/dev/mapper/e2e-" + tc.name + " " + mp + " ext4", marker} {
				if !strings.Contains(out, want) {
					t.Fatalf("after SecureMount %s, missing %q in:\n%s", tc.name, want, out)
				}
			}
			// Neither the plaintext nor a LUKS header reaches the backing
			// file: the header of an ephemeral volume lives in guest memory.
			r, err := vm.Sh(ctx, 30*time.Second, "echo 3 >/proc/sys/vm/drop_caches; grep -c -a -F -e "+marker+" -e LUKS "+img)
			if err != nil || strings.TrimSpace(r.Stdout) != "0" {
				t.Fatalf("backing file %s holds the plaintext or a header: %v %s", img, err, r)
			}
		}
		// The same device twice is refused.
		_, err := c.mount.SecureMount(ctx, &cdhpb.SecureMountRequest{VolumeType: "block-device",
			Options:    map[string]string{"devicePath": "/dev/loop0", "sourceType": "empty", "encryptionType": "luks2", "targetType": "fileSystem"},
			MountPoint: "/run/secure-again"})
		if status.Code(err) != codes.AlreadyExists && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("SecureMount of a device in use: %v; want AlreadyExists", err)
		}
	})

	guestTimings(t, vm)
	vm.Poweroff()

	t.Run("restart", func(t *testing.T) {
		disk := guest.NewDisk(t, t.TempDir(), "work.img", 256<<20)
		mount := func(c vmClients, source string) {
			t.Helper()
			_, err := c.mount.SecureMount(ctx, &cdhpb.SecureMountRequest{
				VolumeType: "block-device",
				Options: map[string]string{"devicePath": "/dev/vdb", "sourceType": source, "encryptionType": "luks2",
					"key": "kbs:///default/storage-key/1", "targetType": "fileSystem", "filesystemType": "ext4", "mapperName": "image-work"},
				MountPoint: "/run/kata-containers/image",
			})
			if err != nil {
				t.Fatalf("SecureMount (%s) of the image work disk: %v", source, err)
			}
		}
		// First boot: the image work dir on an encrypted disk keyed from
		// the KBS; the big layer is slowed down and the VM killed halfway.
		vm1, c1 := w.boot(t, "restart-1", nil, disk)
		mount(c1, "empty")
		w.proxy.throttle(w.bigLayer.String(), 4<<20)
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, _, err := pull(pctx, t, vm1, c1, w.name("e2e/big"), "/run/kata-containers/e2e-big")
			errc <- err
		}()
		deadline := time.Now().Add(3 * time.Minute)
		for w.proxy.served.Load() < 16<<20 {
			if time.Now().After(deadline) {
				t.Fatalf("the big layer did not start downloading (%d bytes served)", w.proxy.served.Load())
			}
			select {
			case err := <-errc:
				t.Fatalf("the pull ended before the VM was killed: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		t.Logf("killing the guest with %d MiB of the 48 MiB layer served", w.proxy.served.Load()>>20)
		vm1.Kill()
		if err := <-errc; err == nil {
			t.Fatal("the pull succeeded although the VM was killed")
		}
		w.proxy.throttle("", 0)

		// Second boot, same disk: the encrypted work dir opens with the
		// KBS key, and the pull completes.
		vm2, c2 := w.boot(t, "restart-2", nil, disk)
		mount(c2, "encrypted")
		bundle := "/run/kata-containers/e2e-big"
		dgst, d, err := pull(ctx, t, vm2, c2, w.name("e2e/big"), bundle)
		if err != nil {
			t.Fatalf("PullImage after the restart: %v", err)
		}
		t.Logf("TIMING pull of the 48 MiB image after the restart: %.2f s", d.Seconds())
		if want := w.ref(t, "e2e/big").Digest.String(); dgst != want {
			t.Fatalf("PullImage digest %s, want %s", dgst, want)
		}
		out := vm2.MustSh(t, 60*time.Second, "cryptsetup status image-work; grep ' /run/kata-containers/image ' /proc/mounts; find "+bundle+"/rootfs -type f -size +96000 -size -101000")
		for _, want := range []string{"type:    LUKS2", "/dev/mapper/image-work /run/kata-containers/image ext4", bundle + "/rootfs/"} {
			if !strings.Contains(out, want) {
				t.Fatalf("after the restart, missing %q in:\n%s", want, out)
			}
		}
		if hdr := diskMagic(t, disk); hdr != "LUKS\xba\xbe" {
			t.Fatalf("the work disk starts with %q, not a LUKS header", hdr)
		}
		guestTimings(t, vm2)
		vm2.Poweroff()
	})

	t.Run("unified", func(t *testing.T) {
		// The installed unit's way: kata starts none of its names, one
		// `guestd serve --config /etc/guestd/guestd.toml` serves
		// everything, and one KBS client serves the token and the pull.
		vm, c := w.boot(t, "unified", []string{"agent.guest_components_procs=none", "guestd.launch=unified"})
		procs := vm.MustSh(t, 10*time.Second, "ps -o args | grep -e guestd -e attestation-agent -e confidential-data-hub -e api-server-rest | grep -v -e grep -e guestprobe")
		if lines := strings.Split(strings.TrimSpace(procs), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "guestd serve --config /etc/guestd/guestd.toml") {
			t.Fatalf("want one guestd serve process, got:\n%s", procs)
		}
		before := w.kbs.Server.Stats()
		if _, err := c.aa.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"}); err != nil {
			t.Fatalf("GetToken: %v", err)
		}
		bundle := "/run/kata-containers/e2e-unified"
		if _, _, err := pull(ctx, t, vm, c, w.name("e2e/seed"), bundle); err != nil {
			t.Fatalf("PullImage: %v", err)
		}
		if out := run(t, vm, bundle, "unified"); !strings.Contains(out, w.canarySum) {
			t.Fatalf("container output does not show the decrypted canary:\n%s", out)
		}
		if n := w.kbs.Server.Stats().Attest - before.Attest; n != 1 {
			t.Fatalf("the token and the pull's policy, cosign key and KEK cost %d attestations, want 1", n)
		}
		guestTimings(t, vm)
		vm.Poweroff()
	})

	t.Run("host", func(t *testing.T) {
		// Every blob the guests pulled came through the forwarded route:
		// the registry served no blob during the guest phase that the
		// proxy (reachable only through the guest's relay) did not pass.
		guestGets := w.proxy.blobGets()
		// (The seed's busybox layer has the same diff_id as the unencrypted
		// image's, so the guest's layer store already holds it and only the
		// config and the canary layer are fetched.)
		var want []string
		for _, repo := range []string{"e2e/busybox", "e2e/big"} {
			want = append(want, w.manifestBlobs(t, repo)...)
		}
		seedBlobs := w.manifestBlobs(t, "e2e/seed")
		want = append(want, seedBlobs[0], seedBlobs[len(seedBlobs)-1])
		for _, b := range want {
			if !slices.Contains(guestGets, b) {
				t.Errorf("blob %s was never fetched through the guest's route", b)
			}
		}
		proxied := map[string]int{}
		for _, b := range guestGets {
			proxied[b]++
		}
		served := registryBlobGets(w.reg.Output()[setupDone:])
		n := 0
		for b, k := range served {
			n += k
			if k > proxied[b] {
				t.Errorf("the registry served blob %s %d times during the guest phase, the guest's route passed it %d times", b, k, proxied[b])
			}
		}
		if n == 0 {
			t.Error("the registry logged no blob GETs during the guest phase")
		}
		relays, _ := os.ReadFile(w.relayLog)
		if !strings.Contains(string(relays), fmt.Sprintf("%d %s", regGuestPort, w.proxy.addr)) {
			t.Errorf("no relay connection to the registry recorded:\n%s", relays)
		}
		// No decrypted layer content on the host: the canary is nowhere
		// under the test's dirs (registry storage, KBS repository, disks,
		// TPM state, serial logs).
		hits, files := findCanary(t, w.canary, w.root, guest.ArtifactDir())
		if len(hits) > 0 {
			t.Errorf("decrypted content found on the host: %v", hits)
		}
		t.Logf("searched %d host files for the canary: %d hits; %d blob GETs served, all through the guest's route", files, len(hits), n)
	})
}

// guestTimings logs what guestd itself measured inside the guest: the
// duration of every call that succeeded, from the daemons' logs.
func guestTimings(t *testing.T, vm *guest.VM) {
	t.Helper()
	out := vm.MustSh(t, 10*time.Second, "cat /run/log/aa.log /run/log/cdh.log /run/log/guestd.log 2>/dev/null | grep 'msg=ok' || true")
	for _, l := range strings.Split(out, "\n") {
		var rpc, dur, img string
		for _, f := range strings.Fields(l) {
			switch k, v, _ := strings.Cut(f, "="); k {
			case "rpc":
				rpc = v
			case "duration":
				dur = v
			case "image":
				img = v
			}
		}
		if rpc != "" && dur != "" && rpc != "GetTeeType" {
			t.Logf("TIMING in the guest: %s %s %s", rpc, img, dur)
		}
	}
}

// diskMagic returns the first six bytes of a disk image.
func diskMagic(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 6)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// registryBlobGets counts, per digest, the blob GETs docker-registry
// logged as served.
func registryBlobGets(log string) map[string]int {
	out := map[string]int{}
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "response completed") || !strings.Contains(l, "http.request.method=GET") {
			continue
		}
		_, uri, ok := strings.Cut(l, `http.request.uri="`)
		if !ok {
			continue
		}
		uri, _, _ = strings.Cut(uri, `"`)
		if _, d, ok := strings.Cut(uri, "/blobs/"); ok {
			out[d]++
		}
	}
	return out
}
