package state

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

const openTimeout = time.Second

// ErrExists means a backup or restore target already exists: opsbot never
// writes over a file it did not create.
var ErrExists = errors.New("file already exists")

// createExclusive creates a new file, refusing an existing one and a
// symlink in its place (O_EXCL|O_NOFOLLOW), readable by the owner only.
func createExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrExists)
	}
	return f, err
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// samePath reports whether a and b name the same file, or would once a
// file is created at b (b's directory resolved through symlinks).
func samePath(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rd, err2 := filepath.EvalSymlinks(filepath.Dir(b))
	if err1 != nil || err2 != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return ra == filepath.Join(rd, filepath.Base(b))
}

// Backup writes a consistent copy of the whole state to path while the
// bot keeps running and returns its size. path must not exist (nor be a
// symlink) and must not be the state file; the copy is written to a new
// temporary file beside it (O_EXCL|O_NOFOLLOW, mode 0600), synced,
// verified with the same check as Open, and only then linked to path,
// which fails rather than replace a file that appeared meanwhile.
func (s *Store) Backup(path string) (int64, error) {
	return WriteBackup(path, s.Path(), func(w io.Writer) error {
		_, err := s.WriteTo(w)
		return err
	})
}

// WriteBackup writes a backup to path through write, with the guarantees
// of Store.Backup; live is the state file it must not be.
func WriteBackup(path, live string, write func(w io.Writer) error) (int64, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	if samePath(live, abs) {
		return 0, fmt.Errorf("backup: %s is the live state file; pick a new file", abs)
	}
	if _, err := os.Lstat(abs); err == nil {
		return 0, fmt.Errorf("backup: %s: %w; pick a new file name", abs, ErrExists)
	}
	tmp := abs + ".tmp-" + randomSuffix()
	f, err := createExclusive(tmp)
	if err != nil {
		return 0, fmt.Errorf("backup: create %s: %w", tmp, err)
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = Verify(tmp)
	}
	if err == nil {
		err = os.Link(tmp, abs)
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("%s: %w", abs, ErrExists)
		}
	}
	os.Remove(tmp)
	if err != nil {
		return 0, fmt.Errorf("backup to %s: %w", abs, err)
	}
	syncDir(filepath.Dir(abs))
	st, err := os.Stat(abs)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Restore replaces the state file at dst with the backup src. src must
// pass Verify; no process may hold dst (a running bot does). The file it
// replaces, damaged or not, is kept beside it as dst.replaced-<time> and
// returned, so a restore never destroys anything.
func Restore(src, dst string) (aside string, sum Summary, err error) {
	sum, err = Verify(src)
	if err != nil {
		return "", sum, fmt.Errorf("restore from %s: %w", src, err)
	}
	if samePath(dst, src) {
		return "", sum, fmt.Errorf("restore: %s is the state file itself", src)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", sum, err
	}
	// Hold the state file's lock while replacing it, as bbolt would.
	if lf, err := os.OpenFile(dst, os.O_RDWR|syscall.O_NOFOLLOW, 0); err == nil {
		defer lf.Close()
		if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return "", sum, fmt.Errorf("restore: %s is in use (is the bot running? stop it first): %w", dst, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", sum, fmt.Errorf("restore: open %s: %w", dst, err)
	}
	tmp := dst + ".restore-" + randomSuffix()
	if err := copyFile(src, tmp); err != nil {
		return "", sum, fmt.Errorf("restore: copy %s: %w", src, err)
	}
	if _, err := Verify(tmp); err != nil {
		os.Remove(tmp)
		return "", sum, fmt.Errorf("restore: the copy does not verify: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		aside = dst + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Link(dst, aside); err != nil {
			os.Remove(tmp)
			return "", sum, fmt.Errorf("restore: keep the current file as %s: %w", aside, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return aside, sum, fmt.Errorf("restore: %w", err)
	}
	syncDir(filepath.Dir(dst))
	sum.Path = dst
	return aside, sum, nil
}

// openError turns bbolt's open errors into what a person can act on.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open %s: the file is locked by another process (is the bot running?): %w", path, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return corrupt(path, "%v", err)
	}
	return fmt.Errorf("open %s: %w", path, err)
}
