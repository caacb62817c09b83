package cleanup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// match reports whether a file (path relative to the root, with "/")
// matches one of the target's globs.
func (t Target) match(rel string) bool {
	for _, g := range t.Globs {
		name := rel
		if !strings.Contains(g, "/") {
			name = path.Base(rel)
		}
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

type logFile struct {
	rel   string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

// logFiles lists the regular files under the target's root that match its
// globs and age. The walk happens inside an os.Root: symbolic links are
// neither followed nor deleted, and nothing outside the root is reached.
func logFiles(t Target, now time.Time) (*os.Root, []logFile, error) {
	root, err := os.OpenRoot(t.Root)
	if err != nil {
		return nil, nil, err
	}
	var out []logFile
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() { // symlinks, sockets, devices: left alone
			return nil
		}
		if !t.match(p) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if t.OlderThan > 0 && now.Sub(info.ModTime()) < t.OlderThan {
			return nil
		}
		out = append(out, logFile{rel: p, size: info.Size(), mode: info.Mode().Perm(), mtime: info.ModTime()})
		return nil
	})
	if err != nil {
		root.Close()
		return nil, nil, err
	}
	return root, out, nil
}

// byDir groups files into counts per directory.
func byDir(t Target, files []logFile) []Count {
	m := map[string]*Count{}
	for _, f := range files {
		dir := path.Dir(f.rel)
		c := m[dir]
		if c == nil {
			what := t.Root
			if dir != "." {
				what = filepath.Join(t.Root, dir)
			}
			c = &Count{What: what}
			m[dir] = c
		}
		c.N++
		c.Bytes += f.size
	}
	out := make([]Count, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].What < out[j].What })
	return out
}

// logsBackend is the Executor's log-file side, with the clock for the age
// filter.
type logsBackend struct{ now time.Time }

func (b logsBackend) count(_ context.Context, t Target) ([]Count, error) {
	root, files, err := logFiles(t, b.now)
	if err != nil {
		return nil, err
	}
	root.Close()
	return byDir(t, files), nil
}

func (b logsBackend) wipe(_ context.Context, t Target) ([]Count, error) {
	root, files, err := logFiles(t, b.now)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var gone []logFile
	for _, f := range files {
		if err := root.Remove(f.rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return byDir(t, gone), fmt.Errorf("remove %s: %w", f.rel, err)
		}
		gone = append(gone, f)
	}
	return byDir(t, gone), nil
}

// backup archives the matching files as <dir>/logs.tar.gz, with their
// paths relative to the root, modes and times.
func (b logsBackend) backup(_ context.Context, t Target, dir string) (int64, error) {
	root, files, err := logFiles(t, b.now)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	var n int64
	err = writeBackup(filepath.Join(dir, "logs.tar.gz"), func(w io.Writer) error {
		zw := gzip.NewWriter(w)
		tw := tar.NewWriter(zw)
		for _, f := range files {
			if err := archive(tw, root, f); err != nil {
				return err
			}
			n++
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return zw.Close()
	})
	return n, err
}

func archive(tw *tar.Writer, root *os.Root, f logFile) error {
	src, err := root.Open(f.rel)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := tw.WriteHeader(&tar.Header{Name: f.rel, Mode: int64(f.mode), Size: f.size, ModTime: f.mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, src, f.size); err != nil {
		return fmt.Errorf("archive %s: %w", f.rel, err)
	}
	return nil
}

// restore puts archived files back under the root; a file that exists
// again is kept as it is.
func (logsBackend) restore(_ context.Context, t Target, dir string) (int64, error) {
	f, err := os.Open(filepath.Join(dir, "logs.tar.gz"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(t.Root)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	tr := tar.NewReader(zr)
	var n int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if d := path.Dir(hdr.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return n, err
			}
		}
		w, err := root.OpenFile(hdr.Name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fs.FileMode(hdr.Mode).Perm())
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		_, err = io.Copy(w, tr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, err
		}
		if err := root.Chtimes(hdr.Name, hdr.ModTime, hdr.ModTime); err != nil {
			return n, err
		}
		n++
	}
}
