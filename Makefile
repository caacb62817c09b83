# opsbot. `make help` lists the targets.
GO ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
.DEFAULT_GOAL := help

.PHONY: help run build deps test fuzz bench lint fmt golden diagram screenshots

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: build ## start the bot on the embedded example config: local chat on http://127.0.0.1:8080 (Ctrl-C stops it)
	@# The bot itself, not `go run`: Ctrl-C reaches it, it stops cleanly and
	@# exits 0, so make reports no error.
	@mkdir -p data/tdev-logs
	@exec ./opsbot run $(ARGS)

build: ## build ./opsbot
	$(GO) build -o opsbot .

FERRETDB := bin/ferretdb

# FerretDB v1.24 (MongoDB wire protocol over SQLite) for the data cleanup
# tests, built from the module proxy: its build needs version.txt, which
# the module zip lacks, so it is vendored and the file added.
$(FERRETDB): tools/ferretdb/go.mod tools/ferretdb/go.sum
	cd tools/ferretdb && $(GO) mod vendor && \
	  echo v1.24.0 > vendor/github.com/FerretDB/FerretDB/build/version/version.txt && \
	  $(GO) build -mod=vendor -trimpath -o ../../$(FERRETDB) github.com/FerretDB/FerretDB/cmd/ferretdb

# etcd, for the replicated store's tests: the server of the same release
# line as the client, built from the module proxy.
ETCD := bin/etcd
$(ETCD): tools/etcd/go.mod tools/etcd/go.sum
	cd tools/etcd && $(GO) build -trimpath -o ../../$(ETCD) go.etcd.io/etcd/server/v3

deps: $(FERRETDB) $(ETCD) ## install what the tests need: redis-server, git, zookeeper, bind9, chromium (with CJK and emoji fonts), prometheus (with promtool), puppetserver, slapd and ldap-utils from Debian's packages, FerretDB and etcd from the module proxy
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	[ -f /usr/share/java/zookeeper.jar ] || missing="$$missing zookeeper"; \
	[ -x /usr/sbin/named ] || missing="$$missing bind9"; \
	lean=""; \
	command -v chromium >/dev/null 2>&1 || lean="$$lean chromium"; \
	command -v prometheus >/dev/null 2>&1 || lean="$$lean prometheus"; \
	[ -f /usr/share/puppetserver/puppetserver.jar ] || lean="$$lean puppetserver"; \
	[ -x /usr/sbin/slapd ] || lean="$$lean slapd"; \
	command -v ldapsearch >/dev/null 2>&1 || lean="$$lean ldap-utils"; \
	[ -d /usr/share/fonts/truetype/wqy ] || lean="$$lean fonts-wqy-microhei"; \
	[ -d /usr/share/fonts/truetype/noto ] || lean="$$lean fonts-noto-color-emoji"; \
	if [ -n "$$missing$$lean" ]; then \
	  echo "installing$$missing$$lean (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq; \
	  [ -z "$$missing" ] || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  [ -z "$$lean" ] || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$lean >/dev/null; \
	fi

test: deps ## install test dependencies, then run every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

FUZZTIME ?= 10s

fuzz: ## run every fuzzer of untrusted input briefly (FUZZTIME=10s each)
	$(GO) test ./commands -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./commands -run '^$$' -fuzz '^FuzzEncodeRoundTrip$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot -run '^$$' -fuzz '^FuzzRedactorNeverLeaksConfiguredSecret$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot -run '^$$' -fuzz '^FuzzRedactorGeneratedSecrets$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot/slack -run '^$$' -fuzz '^FuzzSlackInbound$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot/wecom -run '^$$' -fuzz '^FuzzWeComCallback$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot/local -run '^$$' -fuzz '^FuzzLocalAPI$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)
	$(GO) test ./bot -run '^$$' -fuzz '^FuzzAPI$$' -fuzztime $(FUZZTIME)
	$(GO) test ./integrations/inventory -run '^$$' -fuzz '^FuzzImportCSV$$' -fuzztime $(FUZZTIME)
	$(GO) test ./integrations/inventory -run '^$$' -fuzz '^FuzzImportJSON$$' -fuzztime $(FUZZTIME)
	$(GO) test ./flows -run '^$$' -fuzz '^FuzzParseWeekly$$' -fuzztime $(FUZZTIME)

PROFILE_SHOW = ^opsbot/(bot|flows|state|present|templates|commands)\.|bbolt\.\(\*DB\)\.(Update|View)$$|bbolt\.fdatasync|net/http\.\(\*conn\)\.serve$$|encoding/json\.(Marshal|Unmarshal)$$|runtime\.gcBgMarkWorker$$

bench: deps ## Go benchmarks, then the load tool against 127.0.0.1 (record figures in docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./state ./flows ./commands ./templates
	$(GO) test -run '^$$' -bench Release40Zones -benchtime 1x ./integrations/puppet
	$(GO) test -run '^$$' -bench Propose -benchtime 5000x ./integrations/inventory
	$(GO) test -run '^$$' -bench RedisWipe1M -benchtime 1x ./integrations/cleanup
	$(GO) test -run '^$$' -bench Replicas -benchtime 1x ./bot
	$(GO) test -run '^$$' -bench MetricsCost -benchtime 1x ./bot
	$(GO) test -run '^$$' -bench WebhookCost -benchtime 1x ./bot
	$(GO) test -run '^$$' -bench CalendarCost -benchtime 1x ./bot
	$(GO) run ./cmd/opsbot-load -cpuprofile load.prof
	@echo "where the load run's CPU went (cumulative, opsbot and its store; full profile: go tool pprof load.prof):"
	@$(GO) tool pprof -top -cum -nodecount=30 -show '$(PROFILE_SHOW)' load.prof 2>/dev/null | tail -n +6

screenshots: deps ## drive the local chat page in Chromium through the README's go-live and write its main states to docs/screenshots
	OPSBOT_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run 'TestLocalPageInBrowser$$' ./bot/

lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

golden: ## rewrite the golden files of the templates, Slack blocks and WeCom cards (review the diff)
	$(GO) test ./templates ./bot/slack ./bot/wecom -update

diagram: ## render every flow as a Mermaid diagram into docs/flows.md
	$(GO) run . diagram > docs/flows.md
