// Package zookeeper keeps the game version records the version service
// reads from ZooKeeper, and decides what a client is offered.
//
// Layout, per ensemble, under the configured root (default /opsbot/games):
//
//	/<root>/<platform>              data: {"status":"active"|"stopped"}
//	/<root>/<platform>/versions/v<000000001146>   one record per version (JSON), never overwritten
//	/<root>/<platform>/pointers     data: {"prod":1146,"gray":1148,"review":0}
//
// Records are append-only children (ZooKeeper caps a node at 1 MB, so no
// growing list). The pointers change with a versioned set inside a Multi
// that also creates the new record, so two publishers cannot lose each
// other's record or pointer change. History is read in version order.
package zookeeper

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Record is one published version.
type Record struct {
	Version      int       `json:"version"`
	Kind         string    `json:"kind"`         // base, update, gray, review
	ReleaseType  string    `json:"release_type"` // online or offline
	MinUpdatable int       `json:"min_updatable"`
	Compatible   []int     `json:"compatible"`
	Force        bool      `json:"force"`
	URL          string    `json:"url"`
	Platform     string    `json:"platform"`
	Who          string    `json:"who"`
	When         time.Time `json:"when"`
}

// Pointers say which version each server hands out; 0 is none.
type Pointers struct {
	Prod   int `json:"prod"`
	Gray   int `json:"gray,omitempty"`
	Review int `json:"review,omitempty"`
}

// Client is what a game client sends: its section (2 = it chose the gray
// server) and its installed gray and production versions (0 = none).
type Client struct {
	Section     int
	GrayVersion int
	ProdVersion int
}

// The sections a client request names: the production server, the gray
// server, or none (the request lacked it; answered as production, saying so).
const (
	SectionUnknown = 0
	SectionProd    = 1
	SectionGray    = 2
)

// Online filters the records whose release type is online.
func Online(recs []Record) []Record {
	var out []Record
	for _, r := range recs {
		if r.ReleaseType == "online" {
			out = append(out, r)
		}
	}
	return out
}

// SortRecords orders records by version number (not by creation).
func SortRecords(recs []Record) {
	sort.Slice(recs, func(i, j int) bool { return recs[i].Version < recs[j].Version })
}

// Compatible computes the versions that can update to version: every
// version in the history from min up, and version itself.
func Compatible(recs []Record, min, version int) []int {
	out := []int{}
	for _, r := range recs {
		if r.Version >= min && r.Version < version {
			out = append(out, r.Version)
		}
	}
	out = append(out, version)
	slices.Sort(out)
	return slices.Compact(out)
}

// Live are the versions clients run now: production and gray.
func Live(p Pointers) []int {
	var out []int
	for _, v := range []int{p.Prod, p.Gray} {
		if v > 0 && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// Reach tells, for each live version below rec, whether it can update to
// rec; a publish must strand none of them.
func Reach(p Pointers, rec Record) (lines []string, stranded []int) {
	for _, v := range Live(p) {
		if v >= rec.Version {
			continue
		}
		if slices.Contains(rec.Compatible, v) {
			lines = append(lines, fmt.Sprintf("%d -> %d ✓", v, rec.Version))
		} else {
			lines = append(lines, fmt.Sprintf("%d -> %d ✗", v, rec.Version))
			stranded = append(stranded, v)
		}
	}
	return lines, stranded
}

// CheckRepublish refuses to publish a version that is already in the
// history with another package or other terms: the history keeps the
// first record of a version for good (it is append-only), so clients
// would keep getting the old package while the ticket said done. The same
// record again (a retry, or a gray version promoted to production, whose
// kind differs) is fine: only the pointers move.
func CheckRepublish(recs []Record, rec Record) error {
	for _, old := range recs {
		if old.Version != rec.Version {
			continue
		}
		var diff []string
		if old.URL != rec.URL {
			diff = append(diff, fmt.Sprintf("包地址 url %s (now %s)", old.URL, rec.URL))
		}
		if old.MinUpdatable != rec.MinUpdatable {
			diff = append(diff, fmt.Sprintf("最低可更新 min_updatable %d (now %d)", old.MinUpdatable, rec.MinUpdatable))
		}
		if old.ReleaseType != rec.ReleaseType {
			diff = append(diff, fmt.Sprintf("发布类型 release_type %s (now %s)", old.ReleaseType, rec.ReleaseType))
		}
		if old.Force != rec.Force {
			diff = append(diff, fmt.Sprintf("强更 force %t (now %t)", old.Force, rec.Force))
		}
		if len(diff) == 0 {
			return nil
		}
		next := rec.Version + 1
		for _, r := range recs {
			next = max(next, r.Version+1)
		}
		return fmt.Errorf("版本 %d 已发布过（%s，%s 于 %s），不能用不同的包或条款重发 · version %d was published before (%s, by %s at %s) with %s; "+
			"a version's record is kept for good, so a rebuilt package needs a new version number, e.g. version=%d",
			rec.Version, old.Kind, old.Who, old.When.UTC().Format("2006-01-02 15:04 MST"), rec.Version, old.Kind, old.Who,
			old.When.UTC().Format("2006-01-02 15:04 MST"), strings.Join(diff, ", "), next)
	}
	return nil
}

// CheckPublish refuses a record that would strand a live version (the real
// case: base 1146, gray 1148, minimum 1029, compatible list only 1148).
func CheckPublish(p Pointers, rec Record) error {
	_, stranded := Reach(p, rec)
	if len(stranded) == 0 {
		return nil
	}
	var why []string
	for _, v := range stranded {
		if v < rec.MinUpdatable {
			why = append(why, fmt.Sprintf("%d 低于最低可更新版本 %d · %d is below the minimum updatable version %d", v, rec.MinUpdatable, v, rec.MinUpdatable))
		} else {
			why = append(why, fmt.Sprintf("%d 不在兼容列表 %v 中 · %d is not in the compatible list %v", v, rec.Compatible, v, rec.Compatible))
		}
	}
	return fmt.Errorf("发布 %d 会让在线版本无法更新 · publishing %d would strand live versions: %s", rec.Version, rec.Version, strings.Join(why, "; "))
}

// Resolve answers what a client is offered now. A client keeps its gray
// and production installs apart, so each server is judged by its own
// install: a client that picks the gray server while gray runs is judged
// by its local gray version, and without a gray install it downloads the
// gray server's current version whole ("(ver:1)==>(gray_ver:2)"); the
// production server (and the gray server once gray has ended, which then
// serves production) is judged by the local production version. An update
// must be in the target record's compatible list. SectionUnknown is
// answered as production, and the answer says so.
func Resolve(p Pointers, recs []Record, c Client) (int, string) {
	note := ""
	if c.Section == SectionUnknown {
		note = "请求没有区服，按正式服回答 · the request names no section: answered for the production server. "
	}
	if c.Section == SectionGray && p.Gray > 0 {
		if c.GrayVersion == 0 {
			return p.Gray, fmt.Sprintf("%s本地没有灰度安装：下载灰度服当前版本 · no local gray install: download the gray server's current version (ver:%d)==>(gray_ver:%d)",
				note, c.ProdVersion, p.Gray)
		}
		return update(recs, c.GrayVersion, p.Gray, "gray", note)
	}
	return update(recs, c.ProdVersion, p.Prod, "prod", note)
}

// update answers whether an install may update to want.
func update(recs []Record, installed, want int, server, note string) (int, string) {
	if want == 0 || installed >= want {
		return 0, fmt.Sprintf("%s无需更新 up to date (local %s install %d, server %d)", note, server, installed, want)
	}
	var rec *Record
	for i := range recs {
		if recs[i].Version == want {
			rec = &recs[i]
		}
	}
	if rec == nil {
		return 0, fmt.Sprintf("%s没有版本 %d 的记录 · no record for %d", note, want, want)
	}
	if !slices.Contains(rec.Compatible, installed) {
		return 0, fmt.Sprintf("%s%d 不能更新到 %d · %d cannot update to %d (not in its compatible list %v)", note, installed, want, installed, want, rec.Compatible)
	}
	return want, fmt.Sprintf("%s%d -> %d (local %s install)", note, installed, want, server)
}
