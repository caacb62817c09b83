package inventory_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"opsbot/integrations/inventory"
	"opsbot/state"
)

func fuzzInventory(f *testing.F) *inventory.Inventory {
	st, err := state.Open(state.Options{Path: filepath.Join(f.TempDir(), "s.db")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	inv, err := inventory.New(context.Background(), st, inventory.Rules{Sizes: map[string]int{"3+3": 256, "5+3": 512, "9+6": 1024}, WarnAt: 0.8})
	if err != nil {
		f.Fatal(err)
	}
	return inv
}

// checkReport holds for every import: each row is written, unchanged or
// rejected with its row and reason, exactly once.
func checkReport(t *testing.T, doc inventory.Document, pre []inventory.Rejected, rep inventory.Report) {
	for _, r := range rep.Rejected {
		if r.Row == "" || r.Reason == "" {
			t.Fatalf("a rejection without its row or reason: %+v", r)
		}
	}
	if got, want := rep.Clusters+rep.Stores+rep.Unchanged+len(rep.Rejected), len(doc.Clusters)+len(doc.Stores)+len(pre); got != want {
		t.Fatalf("%d rows accounted for, %d given: %s", got, want, rep)
	}
}

// FuzzImportCSV reads fuzzed CSV (clusters or stores) and dry-runs it.
func FuzzImportCSV(f *testing.F) {
	f.Add([]byte("name,env,location,size,capacity\nuat-a,uat,Putuo,3+3,10\n"))
	f.Add([]byte("id,name,market,province,do,ownership,nodes,open,env,cluster\nS-1,store 1,sh,SH,do-1,direct,2,true,uat,uat-a\nS-2,\"x\ny\",,,,CL,x,maybe,prod,\n"))
	f.Add([]byte("id\n\"unterminated"))
	inv := fuzzInventory(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, rej, err := inventory.ReadCSV(bytes.NewReader(data), "fuzz.csv")
		if err != nil {
			return
		}
		rep, err := inv.Import(context.Background(), doc, rej, true)
		if err != nil {
			t.Fatalf("a dry run failed: %v", err)
		}
		checkReport(t, doc, rej, rep)
	})
}

// FuzzImportJSON decodes a fuzzed JSON document as the admin API does and
// dry-runs it.
func FuzzImportJSON(f *testing.F) {
	f.Add([]byte(`{"clusters":[{"name":"uat-a","env":"uat","location":"Putuo","size":"3+3","capacity":10}],"stores":[{"id":"S-1","cluster":"uat-a","ownership":"DL","env":"uat"}]}`))
	f.Add([]byte(`{"stores":[{"id":"","nodes":-1}]}`))
	inv := fuzzInventory(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var doc inventory.Document
		if json.Unmarshal(data, &doc) != nil {
			return
		}
		rep, err := inv.Import(context.Background(), doc, nil, true)
		if err != nil {
			t.Fatalf("a dry run failed: %v", err)
		}
		checkReport(t, doc, nil, rep)
	})
}
