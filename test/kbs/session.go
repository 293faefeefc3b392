package kbs

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/guestd/guestd/kbc/protocol"
)

// SessionCookie is the name of the RCAR session cookie.
const SessionCookie = "kbs-session-id"

// maxSessions bounds the live sessions of one Server; /auth fails beyond it.
const maxSessions = 1 << 16

// nonceSize is the size of a challenge nonce in bytes.
const nonceSize = 32

// session is one RCAR handshake: Authed until /attest succeeds, then
// Attested (token set). Its expiry is fixed at /auth.
type session struct {
	id      string
	tee     string
	nonce   string
	hash    protocol.HashAlgorithm
	expires time.Time
	token   string // "" while Authed
}

func (s *session) expired(now time.Time) bool { return s.expires.Before(now) }

func (s *session) cookie() *http.Cookie {
	return &http.Cookie{Name: SessionCookie, Value: s.id, Expires: s.expires}
}

// sessions is the session store. Expired sessions are dropped when looked
// up and swept on every new session, so no goroutine is needed.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessionID() (string, error) {
	u, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("session id: %w", err)
	}
	return hex.EncodeToString(u[:]), nil // uuid "simple" form
}

func newNonce() (string, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// add stores a new session after sweeping the expired ones.
func (st *sessions) add(s *session, now time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.m == nil {
		st.m = map[string]*session{}
	}
	for id, old := range st.m {
		if old.expired(now) {
			delete(st.m, id)
		}
	}
	if len(st.m) >= maxSessions {
		return errors.New("too many live sessions")
	}
	st.m[s.id] = s
	return nil
}

var (
	errSessionNotFound = errors.New("session not found")
	errSessionExpired  = errors.New("session expired")
)

// get returns a copy of a live session.
func (st *sessions) get(id string, now time.Time) (session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[id]
	if !ok {
		return session{}, errSessionNotFound
	}
	if s.expired(now) {
		delete(st.m, id)
		return session{}, errSessionExpired
	}
	return *s, nil
}

// attest records the token of a live session and returns the session as
// stored: if another request attested it first, that token wins.
func (st *sessions) attest(id, token string, now time.Time) (session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[id]
	if !ok {
		return session{}, errSessionNotFound
	}
	if s.expired(now) {
		delete(st.m, id)
		return session{}, errSessionExpired
	}
	if s.token == "" {
		s.token = token
	}
	return *s, nil
}

func (st *sessions) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}
