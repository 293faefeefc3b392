package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	cfs "github.com/containerd/continuity/fs"
	"github.com/moby/sys/user"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxUserFile bounds how much of /etc/passwd or /etc/group is read.
const maxUserFile = 8 << 20

// maxID is the largest uid or gid accepted, runc's limit.
const maxID = math.MaxInt32

// userDB is what the image's /etc/passwd and /etc/group say; a missing
// file reads as empty.
type userDB struct {
	passwd, group     []byte
	noPasswd, noGroup bool
}

func loadUserDB(rootfs string) (*userDB, error) {
	db := &userDB{}
	var err error
	if db.passwd, err = readInRoot(rootfs, "/etc/passwd"); errors.Is(err, fs.ErrNotExist) {
		db.noPasswd = true
	} else if err != nil {
		return nil, err
	}
	if db.group, err = readInRoot(rootfs, "/etc/group"); errors.Is(err, fs.ErrNotExist) {
		db.noGroup = true
	} else if err != nil {
		return nil, err
	}
	return db, nil
}

func (db *userDB) users(match func(user.User) bool) ([]user.User, error) {
	us, err := user.ParsePasswdFilter(bytes.NewReader(db.passwd), match)
	if err != nil {
		return nil, fmt.Errorf("parse /etc/passwd: %w", err)
	}
	return us, nil
}

func (db *userDB) groups(match func(user.Group) bool) ([]user.Group, error) {
	gs, err := user.ParseGroupFilter(bytes.NewReader(db.group), match)
	if err != nil {
		return nil, fmt.Errorf("parse /etc/group: %w", err)
	}
	return gs, nil
}

// resolveUser turns the image config's User ("", "uid", "uid:gid",
// "name", "name:group" and the mixed forms) into process.user, with
// containerd's semantics: a numeric uid missing from /etc/passwd runs with
// gid 0, a name that is missing is an error, a numeric gid is taken as is.
// AdditionalGids lists the primary gid, then the groups whose member list
// names the user.
func resolveUser(rootfs, spec string) (specs.User, error) {
	u, err := lookupUser(rootfs, spec)
	if err != nil {
		return specs.User{}, fmt.Errorf("user %q: %w", spec, err)
	}
	return u, nil
}

func lookupUser(rootfs, spec string) (specs.User, error) {
	db, err := loadUserDB(rootfs)
	if err != nil {
		return specs.User{}, err
	}
	uidStr, gidStr, hasGroup := strings.Cut(spec, ":")
	if strings.Contains(gidStr, ":") || (hasGroup && (uidStr == "" || gidStr == "")) {
		return specs.User{}, errors.New("want user, user:group, uid or uid:gid")
	}
	var (
		u        specs.User
		username string
	)
	switch {
	case uidStr == "":
		username = "root"
	case isNumeric(uidStr):
		uid, err := parseID(uidStr)
		if err != nil {
			return specs.User{}, fmt.Errorf("uid: %w", err)
		}
		u.UID = uid
		us, err := db.users(func(e user.User) bool { return e.Uid == int(uid) })
		if err != nil {
			return specs.User{}, err
		}
		if len(us) > 0 {
			if us[0].Gid < 0 || us[0].Gid > maxID {
				return specs.User{}, fmt.Errorf("/etc/passwd entry %q has gid %d out of range", us[0].Name, us[0].Gid)
			}
			u.GID, username = uint32(us[0].Gid), us[0].Name
		}
	default:
		us, err := db.users(func(e user.User) bool { return e.Name == uidStr })
		if err != nil {
			return specs.User{}, err
		}
		if len(us) == 0 {
			return specs.User{}, fmt.Errorf("unknown user %q%s", uidStr, missing(db.noPasswd, "/etc/passwd"))
		}
		if us[0].Uid < 0 || us[0].Uid > maxID || us[0].Gid < 0 || us[0].Gid > maxID {
			return specs.User{}, fmt.Errorf("/etc/passwd entry %q has uid %d gid %d out of range", us[0].Name, us[0].Uid, us[0].Gid)
		}
		u.UID, u.GID, username = uint32(us[0].Uid), uint32(us[0].Gid), uidStr
	}

	switch {
	case !hasGroup:
	case isNumeric(gidStr):
		gid, err := parseID(gidStr)
		if err != nil {
			return specs.User{}, fmt.Errorf("gid: %w", err)
		}
		u.GID = gid
	default:
		gs, err := db.groups(func(g user.Group) bool { return g.Name == gidStr })
		if err != nil {
			return specs.User{}, err
		}
		if len(gs) == 0 {
			return specs.User{}, fmt.Errorf("unknown group %q%s", gidStr, missing(db.noGroup, "/etc/group"))
		}
		if gs[0].Gid < 0 || gs[0].Gid > maxID {
			return specs.User{}, fmt.Errorf("/etc/group entry %q has gid %d out of range", gs[0].Name, gs[0].Gid)
		}
		u.GID = uint32(gs[0].Gid)
	}

	u.AdditionalGids = []uint32{u.GID}
	if username != "" {
		gs, err := db.groups(func(g user.Group) bool { return slices.Contains(g.List, username) })
		if err != nil {
			return specs.User{}, err
		}
		for _, g := range gs {
			if g.Gid >= 0 && g.Gid <= maxID && !slices.Contains(u.AdditionalGids, uint32(g.Gid)) {
				u.AdditionalGids = append(u.AdditionalGids, uint32(g.Gid))
			}
		}
	}
	return u, nil
}

func missing(absent bool, file string) string {
	if absent {
		return " (the image has no " + file + ")"
	}
	return " (not in the image's " + file + ")"
}

func isNumeric(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, fmt.Errorf("%q is out of range (0-%d)", s, maxID)
	}
	return uint32(n), nil
}

// readInRoot reads the regular file name of the container root file
// system rootfs. Symbolic links are resolved as the container would see
// them (absolute targets and ".." stop at rootfs), so nothing outside
// rootfs is ever opened; the open itself goes through os.Root and refuses
// a final symbolic link, and FIFOs or devices are refused without blocking.
func readInRoot(rootfs, name string) ([]byte, error) {
	resolved, err := cfs.RootPath(rootfs, name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s in %s: %w", name, rootfs, err)
	}
	rel, err := filepath.Rel(rootfs, resolved)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("resolve %s in %s: resolved outside the root", name, rootfs)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer root.Close()
	f, err := root.OpenFile(rel, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file (%s)", name, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxUserFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxUserFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, maxUserFile)
	}
	return b, nil
}
