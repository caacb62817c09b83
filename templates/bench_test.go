package templates_test

import (
	"testing"

	"opsbot/templates"
)

func BenchmarkRenderTicketCard(b *testing.B) {
	v := ticket()
	for i := 0; i < b.N; i++ {
		if _, err := templates.Render("ticket", v); err != nil {
			b.Fatal(err)
		}
	}
}
