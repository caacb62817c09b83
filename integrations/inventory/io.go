package inventory

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"opsbot/state"
)

// Envs are the environments of clusters and stores.
var Envs = []string{"sit", "uat", "pt", "prod", "dev", "hd"}

// Columns of the CSV files.
var (
	ClusterColumns = []string{"name", "env", "location", "size", "capacity", "domain", "ingress_ip", "rancher_id", "k8s_id",
		"lb_id", "k8s_ips", "ob_ips", "ob_vip", "ob_user", "tags", "status"}
	StoreColumns  = []string{"id", "name", "market", "province", "do", "ownership", "nodes", "open", "env", "cluster"}
	ServerColumns = []string{"hostname", "ip", "role", "env", "store"}
)

// Document is the JSON form of an inventory.
type Document struct {
	Clusters []state.Cluster    `json:"clusters"`
	Stores   []state.StoreInfo  `json:"stores"`
	Servers  []state.ServerInfo `json:"servers,omitempty"`
}

// Rejected is a row an import refused, with why.
type Rejected struct {
	Row    string // "clusters.csv:3" or "stores[7]"
	Reason string
}

// Report says what an import did.
type Report struct {
	Clusters, Stores int // written (new or changed)
	Servers          int
	Unchanged        int
	Rejected         []Rejected
	DryRun           bool
	ClusterN, StoreN int // rows read
}

// String is the report for people.
func (r Report) String() string {
	var b strings.Builder
	verb := "imported"
	if r.DryRun {
		verb = "would import"
	}
	servers := ""
	if r.Servers > 0 {
		servers = fmt.Sprintf(", %d server(s)", r.Servers)
	}
	fmt.Fprintf(&b, "%s %d cluster(s) and %d store(s)%s; %d unchanged; %d rejected\n", verb, r.Clusters, r.Stores, servers, r.Unchanged, len(r.Rejected))
	for _, x := range r.Rejected {
		fmt.Fprintf(&b, "  rejected %s: %s\n", x.Row, x.Reason)
	}
	return b.String()
}

// ReadCSV reads a clusters or stores CSV file (told apart by the header).
func ReadCSV(r io.Reader, name string) (Document, []Rejected, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	rows, err := cr.ReadAll()
	if err != nil {
		return Document{}, nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(rows) == 0 {
		return Document{}, nil, fmt.Errorf("%s: empty file", name)
	}
	head := map[string]int{}
	for i, h := range rows[0] {
		head[strings.ToLower(strings.TrimSpace(h))] = i
	}
	var doc Document
	var bad []Rejected
	_, isStores := head["ownership"]
	_, isClusters := head["location"]
	_, isServers := head["hostname"]
	if isServers && !isStores && !isClusters {
		for _, row := range rows[1:] {
			get := func(col string) string { return cell(head, row, col) }
			doc.Servers = append(doc.Servers, state.ServerInfo{Hostname: get("hostname"), IP: get("ip"), Role: get("role"), Env: get("env"), Store: get("store")})
		}
		return doc, nil, nil
	}
	if isStores == isClusters {
		return doc, nil, fmt.Errorf("%s: header must be the clusters columns (%s), the stores columns (%s) or the servers columns (%s)", name,
			strings.Join(ClusterColumns, ","), strings.Join(StoreColumns, ","), strings.Join(ServerColumns, ","))
	}
	for i, row := range rows[1:] {
		where := fmt.Sprintf("%s:%d", name, i+2)
		get := func(col string) string { return cell(head, row, col) }
		if isClusters {
			c := state.Cluster{Name: get("name"), Env: get("env"), Location: get("location"), Size: get("size"), Domain: get("domain"),
				IngressIP: get("ingress_ip"), RancherID: get("rancher_id"), K8sID: get("k8s_id"), LBID: get("lb_id"),
				K8sIPs: list(get("k8s_ips")), OBIPs: list(get("ob_ips")), OBVIP: get("ob_vip"), OBUser: get("ob_user"),
				Tags: list(get("tags")), Status: get("status")}
			if v := get("capacity"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					bad = append(bad, Rejected{where, fmt.Sprintf("capacity %q is not a whole number", v)})
					continue
				}
				c.Capacity = n
			}
			doc.Clusters = append(doc.Clusters, c)
			continue
		}
		s := state.StoreInfo{ID: get("id"), Name: get("name"), Market: get("market"), Province: get("province"), DO: get("do"),
			Ownership: get("ownership"), Env: get("env"), Cluster: get("cluster")}
		if v := get("nodes"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				bad = append(bad, Rejected{where, fmt.Sprintf("nodes %q is not a whole number", v)})
				continue
			}
			s.Nodes = n
		}
		switch strings.ToLower(get("open")) {
		case "true", "yes", "1", "open", "营业":
			s.Open = true
		case "false", "no", "0", "closed", "", "关闭":
		default:
			bad = append(bad, Rejected{where, fmt.Sprintf("open %q: use true or false", get("open"))})
			continue
		}
		doc.Stores = append(doc.Stores, s)
	}
	return doc, bad, nil
}

// cell is a row's value in the column named col ("" when absent).
func cell(head map[string]int, row []string, col string) string {
	if j, ok := head[col]; ok && j < len(row) {
		return strings.TrimSpace(row[j])
	}
	return ""
}

func list(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

// Import checks and writes a document in one transaction: valid rows are
// inserted or replaced (by cluster name and store id), unchanged ones
// skipped, bad ones reported with the reason. Importing the same file
// twice changes nothing the second time.
func (inv *Inventory) Import(ctx context.Context, doc Document, rejected []Rejected, dryRun bool) (Report, error) {
	rep := Report{Rejected: rejected, DryRun: dryRun}
	known := map[string]bool{}
	for _, c := range inv.Clusters() {
		known[c.Name] = true
	}
	now := time.Now().UTC()
	var cs []state.Cluster
	seen := map[string]bool{}
	for i, c := range doc.Clusters {
		where := fmt.Sprintf("clusters[%d] %s", i, c.Name)
		if why := inv.checkCluster(&c); why != "" {
			rep.Rejected = append(rep.Rejected, Rejected{where, why})
			continue
		}
		if seen[c.Name] {
			rep.Rejected = append(rep.Rejected, Rejected{where, "cluster " + c.Name + " appears twice"})
			continue
		}
		seen[c.Name] = true
		known[c.Name] = true
		if old, _, ok := inv.Cluster(c.Name); ok {
			c.Warned, c.Ticket = old.Warned, old.Ticket
			c.Updated = old.Updated
			if reflect.DeepEqual(old, c) {
				rep.Unchanged++
				continue
			}
		}
		c.Updated = now
		cs = append(cs, c)
	}
	var ss []state.StoreInfo
	seenS := map[string]bool{}
	for i, s := range doc.Stores {
		where := fmt.Sprintf("stores[%d] %s", i, s.ID)
		if why := checkStore(&s); why != "" {
			rep.Rejected = append(rep.Rejected, Rejected{where, why})
			continue
		}
		if s.Cluster != "" && !known[s.Cluster] {
			rep.Rejected = append(rep.Rejected, Rejected{where, "cluster " + s.Cluster + " is neither in the inventory nor in the import"})
			continue
		}
		if seenS[s.ID] {
			rep.Rejected = append(rep.Rejected, Rejected{where, "store " + s.ID + " appears twice"})
			continue
		}
		seenS[s.ID] = true
		if old, ok := inv.Store(s.ID); ok {
			s.Ticket, s.Updated = old.Ticket, old.Updated
			if reflect.DeepEqual(old, s) {
				rep.Unchanged++
				continue
			}
		}
		s.Updated = now
		ss = append(ss, s)
	}
	rep.Clusters, rep.Stores = len(cs), len(ss)
	var vs []state.ServerInfo
	seenV := map[string]bool{}
	for i, v := range doc.Servers {
		where := fmt.Sprintf("servers[%d] %s", i, v.Hostname)
		if why := CheckServer(&v); why != "" {
			rep.Rejected = append(rep.Rejected, Rejected{where, why})
			continue
		}
		if seenV[v.Hostname] {
			rep.Rejected = append(rep.Rejected, Rejected{where, "server " + v.Hostname + " appears twice"})
			continue
		}
		seenV[v.Hostname] = true
		if old, ok, err := inv.st.Server(ctx, v.Hostname); err != nil {
			return rep, err
		} else if ok {
			v.Ticket, v.Updated = old.Ticket, old.Updated
			if old == v {
				rep.Unchanged++
				continue
			}
		}
		v.Updated = now
		vs = append(vs, v)
	}
	rep.Servers = len(vs)
	if dryRun || (len(cs) == 0 && len(ss) == 0 && len(vs) == 0) {
		return rep, nil
	}
	if len(cs) > 0 || len(ss) > 0 {
		if err := inv.Put(ctx, cs, ss); err != nil {
			return rep, err
		}
	}
	return rep, inv.st.PutServers(ctx, vs)
}

// hostname is what a server's name may be.
var hostname = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// CheckServer says what is wrong with a server record, with an example.
func CheckServer(v *state.ServerInfo) string {
	v.Hostname = strings.ToLower(strings.TrimSpace(v.Hostname))
	switch {
	case !hostname.MatchString(v.Hostname) || len(v.Hostname) > 253:
		return fmt.Sprintf("hostname %q: lower-case letters, digits, '-' and '.', e.g. pos-01.s1001.store.example.com", v.Hostname)
	case net.ParseIP(v.IP) == nil:
		return fmt.Sprintf("ip %q is not an IP address, e.g. 10.20.3.4", v.IP)
	case !slices.Contains(Envs, v.Env):
		return fmt.Sprintf("env %q: one of %s", v.Env, strings.Join(Envs, ", "))
	case v.Role == "":
		return "role is empty (e.g. pos, nginx, db)"
	case v.Store == "":
		return "store is empty (the store id, e.g. S-1001)"
	}
	return ""
}

func (inv *Inventory) checkCluster(c *state.Cluster) string {
	switch {
	case c.Name == "" || !clusterName.MatchString(c.Name):
		return fmt.Sprintf("name %q: use lower-case letters, digits and '-', e.g. prod-sh-01", c.Name)
	case !slices.Contains(Envs, c.Env):
		return fmt.Sprintf("env %q: one of %s", c.Env, strings.Join(Envs, ", "))
	case !slices.Contains(append(slices.Clone(OwnDC), Cloud...), c.Location):
		return fmt.Sprintf("location %q: one of Putuo, Hedan, Ali, AWS", c.Location)
	case inv.rules.Sizes[c.Size] == 0 && c.Capacity == 0:
		return fmt.Sprintf("size %q: one of %s, or give a capacity", c.Size, strings.Join(sortedKeys(inv.rules.Sizes), ", "))
	}
	if c.Status == "" {
		c.Status = "active"
	}
	if c.Status != "active" && c.Status != "retired" {
		return fmt.Sprintf("status %q: active or retired", c.Status)
	}
	return ""
}

func checkStore(s *state.StoreInfo) string {
	switch {
	case s.ID == "":
		return "id is empty"
	case ownIndex(s.Ownership) < 0:
		return fmt.Sprintf("ownership %q: one of direct, DL, CL", s.Ownership)
	case !slices.Contains(Envs, s.Env):
		return fmt.Sprintf("env %q: one of %s", s.Env, strings.Join(Envs, ", "))
	case s.Market == "":
		return "market is empty"
	case s.DO == "":
		return "do (district owner) is empty"
	}
	s.Ownership = Ownerships[ownIndex(s.Ownership)]
	return ""
}

// Export writes the inventory as JSON, or as CSV: clusters then stores,
// each with its header, separated by an empty line when both go to one
// writer. format is "json", "clusters.csv" or "stores.csv".
func (inv *Inventory) Export(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		servers, err := inv.st.Servers(context.Background())
		if err != nil {
			return err
		}
		return enc.Encode(Document{Clusters: inv.Clusters(), Stores: inv.Stores(), Servers: servers})
	case "clusters.csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(ClusterColumns)
		for _, c := range inv.Clusters() {
			_ = cw.Write([]string{c.Name, c.Env, c.Location, c.Size, strconv.Itoa(c.Capacity), c.Domain, c.IngressIP, c.RancherID,
				c.K8sID, c.LBID, strings.Join(c.K8sIPs, ","), strings.Join(c.OBIPs, ","), c.OBVIP, c.OBUser, strings.Join(c.Tags, ","), c.Status})
		}
		cw.Flush()
		return cw.Error()
	case "stores.csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(StoreColumns)
		for _, s := range inv.Stores() {
			_ = cw.Write([]string{s.ID, s.Name, s.Market, s.Province, s.DO, s.Ownership, strconv.Itoa(s.Nodes), strconv.FormatBool(s.Open), s.Env, s.Cluster})
		}
		cw.Flush()
		return cw.Error()
	case "servers.csv":
		servers, err := inv.st.Servers(context.Background())
		if err != nil {
			return err
		}
		cw := csv.NewWriter(w)
		_ = cw.Write(ServerColumns)
		for _, v := range servers {
			_ = cw.Write([]string{v.Hostname, v.IP, v.Role, v.Env, v.Store})
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("unknown export format %q: json, clusters.csv, stores.csv or servers.csv", format)
}
