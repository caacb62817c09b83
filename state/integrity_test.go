package state_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"opsbot/state"
)

// seeded writes a state file with a few tickets and audit entries, closed.
func seeded(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		create(t, s, "golive", "alice", []string{"techlead"})
	}
	s.Close()
	return path
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// Finding 6: a zero-length file started empty, flipped bytes served
// silently, a damaged meta page gave internal errors every second. Each
// damaged file is refused with a CorruptError naming it, and left as it is.
func TestDamagedStateIsRefusedAndLeftAlone(t *testing.T) {
	damage := map[string]func(t *testing.T, path string){
		"zero length": func(t *testing.T, path string) { os.Truncate(path, 0) },
		"truncated": func(t *testing.T, path string) {
			// Cut into the pages in use (the file may have unused room at its end).
			sum, err := state.Verify(path)
			if err != nil {
				t.Fatal(err)
			}
			os.Truncate(path, sum.Bytes-4096)
		},
		"shorter than the meta pages":  func(t *testing.T, path string) { os.Truncate(path, 5000) },
		"flipped bytes in a meta page": func(t *testing.T, path string) { flip(t, path, 4096+40) },
		"flipped bytes in both meta pages": func(t *testing.T, path string) {
			flip(t, path, 40)
			flip(t, path, 4096+40)
		},
		"flipped bytes in a ticket record": func(t *testing.T, path string) {
			// Every copy: copy-on-write leaves old ones in free pages,
			// which a reader never visits.
			data, _ := os.ReadFile(path)
			n := 0
			for off := 0; ; n++ {
				i := bytes.Index(data[off:], []byte(`"requester":"alice"`))
				if i < 0 {
					break
				}
				flip(t, path, int64(off+i)) // the opening quote of a key
				off += i + 1
			}
			if n == 0 {
				t.Fatal("no ticket record in the file")
			}
		},
		"flipped bytes in a page header": func(t *testing.T, path string) {
			// Every page holding a ticket record: copy-on-write leaves old
			// copies in free pages, which a reader never visits.
			data, _ := os.ReadFile(path)
			seen := map[int]bool{}
			for off := 0; ; {
				i := bytes.Index(data[off:], []byte(`"requester":"alice"`))
				if i < 0 {
					break
				}
				page := (off + i) / 4096
				if !seen[page] {
					seen[page] = true
					flip(t, path, int64(page*4096+8)) // the page's flags
				}
				off += i + 1
			}
		},
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			path := seeded(t)
			fn(t, path)
			before := sum(t, path)
			s, err := state.Open(state.Options{Path: path})
			if err == nil {
				s.Close()
				t.Fatal("a damaged state file was opened")
			}
			var ce *state.CorruptError
			if !errors.As(err, &ce) || ce.Path != path || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v does not name the damaged file", err)
			}
			if _, err := state.Verify(path); err == nil {
				t.Fatal("Verify passed a damaged file")
			}
			if sum(t, path) != before {
				t.Fatal("the damaged file was changed")
			}
		})
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0xA5
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Backups: never over an existing file, a symlink or the state file; the
// temporary file is new and private; a backup verifies and restores to
// the same tickets.
func TestBackupIsExclusiveVerifiedAndRestores(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	s, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		create(t, s, "golive", "alice", nil)
	}
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	link := filepath.Join(dir, "link.db")
	os.Symlink(victim, link)
	existing := filepath.Join(dir, "existing.db")
	os.WriteFile(existing, []byte("an old backup"), 0o644)
	for name, dest := range map[string]string{"a symlink": link, "an existing file": existing, "the state file": path,
		"the state file through a symlinked dir": filepath.Join(symlinkDir(t, dir), "s.db")} {
		if _, err := s.Backup(dest); err == nil {
			t.Errorf("backup to %s succeeded", name)
		}
	}
	if data, _ := os.ReadFile(victim); string(data) != "keep me" {
		t.Fatal("a backup wrote through a symlink")
	}
	if data, _ := os.ReadFile(existing); string(data) != "an old backup" {
		t.Fatal("a backup overwrote an existing file")
	}
	// A pre-created "<dest>.tmp" symlink (the old temporary name) gets nothing.
	dest := filepath.Join(dir, "good.db")
	trap := filepath.Join(dir, "stolen")
	os.Symlink(trap, dest+".tmp")
	n, err := s.Backup(dest)
	if err != nil || n == 0 {
		t.Fatalf("backup: %d %v", n, err)
	}
	if _, err := os.Stat(trap); err == nil {
		t.Fatal("the backup went through a pre-created temporary file")
	}
	if st, _ := os.Stat(dest); st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v, want 0600", st.Mode().Perm())
	}
	want := tickets(t, s)
	// More tickets after the backup; the restore brings back exactly the
	// five of the backup.
	create(t, s, "golive", "bob", nil)
	s.Close()
	if sum, err := state.Verify(dest); err != nil || sum.Tickets != 5 {
		t.Fatalf("verify: %+v %v", sum, err)
	}
	aside, _, err := state.Restore(dest, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(aside); err != nil {
		t.Fatalf("the replaced file was not kept: %v", err)
	}
	r, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := tickets(t, r); got != want {
		t.Fatalf("restored tickets:\n%s\nwant\n%s", got, want)
	}
	// A restore while the file is open (a running bot) is refused.
	if _, _, err := state.Restore(dest, path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("restore over an open state: %v", err)
	}
}

func symlinkDir(t *testing.T, dir string) string {
	l := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(dir, l); err != nil {
		t.Fatal(err)
	}
	return l
}

func tickets(t *testing.T, s *state.Store) string {
	t.Helper()
	page, err := s.List(context.Background(), state.Index{Kind: "all"}, nil, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, tk := range page.Tickets {
		b.WriteString(tk.ID + " " + tk.Requester + " " + tk.Stage + "\n")
	}
	return b.String()
}

// Finding 7, the index half: a key that shares a name's prefix but is not
// "<name>\x00<8 bytes>" (alice\x00zz's entries, written before names were
// checked) ended the scan; alice's tickets came back empty.
func TestIndexScanSkipsMalformedKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		create(t, s, "golive", "alice", nil)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"idx_requester", "audit_user"} {
			tx.Bucket([]byte(b)).Put([]byte("alice\x00zz\x00\x00\x00\x00\x00\x00\x00\x00\x09"), nil)
		}
		return nil
	})
	db.Close()
	s, err = state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	page, err := s.List(context.Background(), state.Index{Kind: "requester", Keys: []string{"alice"}}, nil, 0, 10)
	if err != nil || len(page.Tickets) != 3 {
		t.Fatalf("alice's tickets: %d %v", len(page.Tickets), err)
	}
	if _, err := s.PutUser(context.Background(), state.User{Name: "alice\x00zz"}); err == nil {
		t.Fatal("a user name with a NUL was stored")
	}
}

// Recorded chat input is sealed: the raw file (freed pages included) and
// a backup never hold it in clear; with the same key it is replayed after
// a restart, with another it is reported, not used.
func TestInboundIsSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	key := []byte("0123456789abcdef0123456789abcdef")
	s, err := state.Open(state.Options{Path: path, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	secret := "/ops new golive db_password=Hunter2Hunter2"
	ctx := context.Background()
	id, _, err := s.AddInbound(ctx, state.Inbound{Platform: "slack", Kind: "slash", Payload: []byte(secret)}, "sig-1", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := s.AddInbound(ctx, state.Inbound{Platform: "slack", Kind: "slash", Payload: []byte(secret)}, "sig-1", time.Now(), time.Hour); !dup {
		t.Fatal("a replayed delivery was recorded again")
	}
	backup := filepath.Join(dir, "b.db")
	if _, err := s.Backup(backup); err != nil {
		t.Fatal(err)
	}
	s.DoneInbound(ctx, id)
	s.Close()
	for _, f := range []string{path, backup} {
		if data, _ := os.ReadFile(f); bytes.Contains(data, []byte("Hunter2")) {
			t.Fatalf("%s holds the input in clear", f)
		}
	}
	r, _ := state.Open(state.Options{Path: backup, Key: key})
	in, _ := r.PendingInbound(ctx, "slack")
	r.Close()
	if len(in) != 1 || string(in[0].Payload) != secret {
		t.Fatalf("the same key does not open it: %+v", in)
	}
	r, _ = state.Open(state.Options{Path: backup, Key: []byte("another key, another key, another")})
	in, _ = r.PendingInbound(ctx, "slack")
	r.Close()
	if len(in) != 1 || in[0].Err == nil || in[0].Payload != nil {
		t.Fatalf("another key opened it: %+v", in)
	}
}

// Audit retention deletes old entries with their index entries, in
// batches, and keeps the rest.
func TestPruneAudit(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := 0; i < 25; i++ {
			s.Audit(ctx, state.AuditEntry{At: old.Add(time.Duration(i) * time.Hour), User: "alice", Ticket: "T-1", Action: "command"})
		}
		s.Audit(ctx, state.AuditEntry{At: old.AddDate(2, 0, 0), User: "alice", Ticket: "T-1", Action: "recent"})
		total := 0
		for {
			n, err := s.PruneAudit(ctx, old.AddDate(1, 0, 0), 10)
			if err != nil {
				t.Fatal(err)
			}
			total += n
			if n < 10 {
				break
			}
		}
		if total != 25 {
			t.Fatalf("pruned %d, want 25", total)
		}
		for _, q := range []state.AuditQuery{{}, {User: "alice"}, {Ticket: "T-1"}} {
			e, _, _ := s.AuditLog(ctx, q, 0, 100)
			if len(e) != 1 || e[0].Action != "recent" {
				t.Fatalf("%+v: %+v", q, e)
			}
		}
	})
}

func TestNormName(t *testing.T) {
	for in, want := range map[string]string{
		" @Alice ": "alice", "ＡＬＩＣＥ": "alice", "@ａｌｉｃｅ": "alice", "Straße": "strasse", "ΣΊΣΥΦΟΣ": "σίσυφοσ", "dave": "dave",
	} {
		if got := state.NormName(in); got != want {
			t.Errorf("NormName(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "a\x00b", "a\nb", "bob\u202e", "zero\u200bwidth"} {
		if state.CheckName("user", bad) == nil {
			t.Errorf("CheckName(%q) passed", bad)
		}
	}
}

// Input recorded by a build that stored payloads in clear (before they
// were sealed) is still handled after the upgrade, not dropped.
func TestInboundRecordedBeforeSealingIsStillHandled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What the earlier build wrote: the payload as JSON bytes, no seal.
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("inbound")).Put([]byte{0, 0, 0, 0, 0, 0, 0, 1},
			[]byte(`{"id":1,"platform":"slack","kind":"slash_form","payload":"dGV4dD1uZXcrZ29saXZl","at":"2026-05-09T10:00:00Z"}`))
	})
	db.Close()
	s, err = state.Open(state.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in, err := s.PendingInbound(context.Background(), "slack")
	if err != nil || len(in) != 1 || in[0].Err != nil || string(in[0].Payload) != "text=new+golive" {
		t.Fatalf("legacy input: %+v %v", in, err)
	}
}
