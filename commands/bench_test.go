package commands_test

import (
	"testing"

	"opsbot/commands"
)

func BenchmarkParse(b *testing.B) {
	r := commands.Default()
	for i := 0; i < b.N; i++ {
		if _, err := r.Parse(`/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" impact="checkout 5 min"`); err != nil {
			b.Fatal(err)
		}
	}
}
