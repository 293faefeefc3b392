package kbs

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// segmentRE is the rule every segment of a resource path obeys (trustee's
// ResourceDesc): no leading ".", so no segment is "." or "..".
var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]*$`)

// resourcePath checks the segments after /resource/: exactly repo, type and
// tag, each matching segmentRE.
func resourcePath(segments []string) (string, error) {
	p := strings.Join(segments, "/")
	if len(segments) != 3 {
		return "", fmt.Errorf("illegal resource path %q: want <repository>/<type>/<tag>", p)
	}
	for _, s := range segments {
		if !segmentRE.MatchString(s) {
			return "", fmt.Errorf("illegal resource path %q: segment %q does not match %s", p, s, segmentRE)
		}
	}
	return p, nil
}

// sessionToken returns the attestation token of the request's session, if
// it has a live, attested one.
func (s *Server) sessionToken(r *http.Request) (string, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", false
	}
	sess, err := s.sessions.get(c.Value, s.cfg.Now())
	if err != nil || sess.token == "" {
		return "", false
	}
	return sess.token, true
}

// resource handles the token-authorised resource requests (GET, and PUT,
// which trustee takes this way too and then refuses), in trustee's order:
// token (session first, then Bearer), token verification, policy, resource,
// TEE key, JWE.
func (s *Server) resource(w http.ResponseWriter, r *http.Request, segments []string, query map[string]string) *kbsError {
	kerr := s.doResource(w, r, segments, query)
	if kerr != nil {
		s.stats.resourceFailed.Add(1)
		return kerr
	}
	s.stats.resourceGets.Add(1)
	return nil
}

func (s *Server) doResource(w http.ResponseWriter, r *http.Request, segments []string, query map[string]string) *kbsError {
	token, ok := s.sessionToken(r)
	if !ok {
		if token, ok = bearer(r); !ok {
			return errTokenNotFound()
		}
	}
	claims, err := s.key.verify(token, s.cfg.Now())
	if err != nil {
		return errTokenVerifier(err)
	}
	in := PolicyInput{Tee: tokenTee(claims), Resource: strings.Join(segments, "/"), Query: query}
	if !s.Policy().Allow(in) {
		s.stats.denied.Add(1)
		return errPolicyDeny()
	}
	if r.Method != http.MethodGet {
		return errPluginInternal(fmt.Errorf("illegal HTTP method %s: the resource plugin takes GET, POST and DELETE", r.Method))
	}
	p, err := resourcePath(segments)
	if err != nil {
		return errPluginInternal(err)
	}
	data, err := s.readResource(p)
	if err != nil {
		return errPluginInternal(err)
	}
	key, err := teePubKey(claims)
	if err != nil {
		return errTokenVerifier(err)
	}
	sealed, err := Seal(key, data)
	if err != nil {
		return errJwe(err)
	}
	return writeJSON(w, sealed, nil)
}

// adminResource handles POST (write) and DELETE of a resource: admin
// authentication first, then the path, as trustee's resource plugin.
func (s *Server) adminResource(w http.ResponseWriter, r *http.Request, body []byte, segments []string) *kbsError {
	if err := s.checkAdmin(r); err != nil {
		s.stats.adminFailed.Add(1)
		return errAdminPlugin(err)
	}
	p, err := resourcePath(segments)
	if err != nil {
		return errPluginInternal(err)
	}
	if r.Method == http.MethodPost {
		if err := s.writeResource(p, body); err != nil {
			return errPluginInternal(err)
		}
		s.stats.adminWrites.Add(1)
		s.log.Info("resource written", "resource", p, "bytes", len(body))
	} else {
		if err := s.deleteResource(p); err != nil {
			return errPluginInternal(err)
		}
		s.stats.adminDeletes.Add(1)
		s.log.Info("resource deleted", "resource", p)
	}
	// trustee answers plugin writes with an empty text/xml body.
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) file(p string) (string, error) {
	if s.cfg.RepoDir == "" {
		return "", fmt.Errorf("resource %s: no resource repository is configured", p)
	}
	return filepath.Join(s.cfg.RepoDir, filepath.FromSlash(p)), nil
}

func (s *Server) readResource(p string) ([]byte, error) {
	name, err := s.file(p)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("resource not found: %s", p)
	}
	if err != nil {
		return nil, fmt.Errorf("read resource %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("resource not found: %s (not a regular file)", p)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read resource %s: %w", p, err)
	}
	return data, nil
}

// writeResource stores a resource atomically: a 0600 temporary file in the
// same directory (its name starts with ".", which no resource name can),
// synced, then renamed over the resource.
func (s *Server) writeResource(p string, data []byte) (err error) {
	name, err := s.file(p)
	if err != nil {
		return err
	}
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write resource %s: %w", p, err)
	}
	return nil
}

func (s *Server) deleteResource(p string) error {
	name, err := s.file(p)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("resource not found: %s", p)
	}
	if err != nil {
		return fmt.Errorf("delete resource %s: %w", p, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("resource not found: %s (a directory)", p)
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("delete resource %s: %w", p, err)
	}
	return nil
}
