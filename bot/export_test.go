package bot

import (
	"context"
	"net/http"
)

// DiskProblem is diskProblem, for the tests.
var DiskProblem = diskProblem

// APIHandler is the API's handler, for the fuzzer.
func (b *Bot) APIHandler() http.Handler { return b.apiHandler() }

// CreateAPIToken makes a token on the bot's state and returns its secret.
func (b *Bot) CreateAPIToken(name, user string, scopes ...string) (string, error) {
	out, err := createToken(context.Background(), b.store, tokenRequest{Name: name, User: user, Scopes: scopes}, "test", b.now())
	return out.Token, err
}
