package bot_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"opsbot/bot"
)

// docs/openapi.yaml is a valid OpenAPI 3 document; every route in it is
// served and every served route is in it; and what the bot answers
// (created, read, listed, waited, cancelled, refused) matches its schemas.
func TestOpenAPIMatchesTheAPI(t *testing.T) {
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	var inDoc []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inDoc = append(inDoc, method+" "+path)
		}
	}
	served := bot.APIRoutes()
	slices.Sort(inDoc)
	slices.Sort(served)
	if !slices.Equal(inDoc, served) {
		t.Fatalf("docs/openapi.yaml has\n%s\nthe bot serves\n%s", strings.Join(inDoc, "\n"), strings.Join(served, "\n"))
	}

	// Real answers against the schemas.
	k, _ := slackKit(t, "http", `api: {listen: "127.0.0.1:0"}`)
	cli := cliKit(t, k)
	_, tok, _ := cli("token", "create", "--name", "ci", "--as", "alice", "--scopes", "tickets:create,tickets:read,tickets:cancel")
	tok = strings.TrimSpace(tok)
	base := "http://" + k.Bot.APIAddr()
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	check := func(method, path, body, token string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body == "" {
			req, _ = http.NewRequest(method, base+path, nil)
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s %s is not in docs/openapi.yaml: %v", method, path, err)
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if body != "" {
			if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
				t.Fatalf("%s %s: the request does not match the document: %v", method, path, err)
			}
			req.Body = io.NopCloser(strings.NewReader(body))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, raw)
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(raw)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
			t.Fatalf("%s %s: the answer does not match the document: %v\n%s", method, path, err, raw)
		}
	}
	create := `{"flow": "golive", "fields": {"service": "payments", "version": "v1.4.2", "rollback_app": "redeploy v1.4.1"}}`
	check("POST", "/api/v1/tickets", create, tok, 201)
	check("POST", "/api/v1/tickets", `{"flow": "golive", "fields": {"service": "payments"}}`, tok, 400)
	check("GET", "/api/v1/tickets/T-1", "", tok, 200)
	check("GET", "/api/v1/tickets/T-9", "", tok, 404)
	check("GET", "/api/v1/tickets?flow=golive&limit=5", "", tok, 200)
	check("GET", "/api/v1/tickets/T-1/wait?timeout=100ms", "", tok, 200)
	check("GET", "/api/v1/tickets/T-1", "", "opsbot_not-a-token-at-all-000000000000000000000", 401)
	check("POST", "/api/v1/tickets/T-1/approve", `{"comment": "ok"}`, tok, 403)
	check("POST", "/api/v1/tickets/T-1/cancel", `{"comment": "superseded"}`, tok, 200)
	check("POST", "/api/v1/tickets/T-1/cancel", `{}`, tok, 409)
}
