// Package bot is the opsbot process: it loads the configuration, opens
// the state, wires flows, executors, the rate limiter and the transports,
// dispatches chat input to commands, delivers the notification outbox and
// fires timers. It is the one place that turns errors into chat replies.
package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"opsbot/bot/local"
	"opsbot/bot/slack"
	"opsbot/bot/wecom"
	"opsbot/commands"
	"opsbot/flows"
	"opsbot/integrations/cleanup"
	"opsbot/integrations/dns"
	"opsbot/integrations/gitlab"
	"opsbot/integrations/inventory"
	"opsbot/integrations/puppet"
	"opsbot/integrations/redis"
	"opsbot/integrations/script"
	"opsbot/integrations/servers"
	"opsbot/integrations/zookeeper"
	"opsbot/present"
	"opsbot/state"
	"opsbot/templates"
)

// Transport sends messages to people on one chat platform.
type Transport interface {
	// Platform is "local", "slack" or "wecom".
	Platform() string
	// Send delivers msg to the user known on this platform as userID.
	Send(ctx context.Context, userID string, msg templates.Message) error
}

// Listener is a transport with an inbound side (an HTTP endpoint, a
// socket): Start begins receiving and returns; Stop ends it and waits for
// the work in progress. The bot starts them in order and stops them in
// reverse.
type Listener interface {
	Start(ctx context.Context) error
	Stop()
}

// ProgressPoster is a transport that shows a step's progress in the
// ticket's thread.
type ProgressPoster interface {
	PostProgress(ctx context.Context, ticket string, msg templates.Message) error
}

// ChannelPoster is a transport that posts to named team channels (the
// infra channel's capacity warnings).
type ChannelPoster interface {
	PostChannel(ctx context.Context, channel string, msg templates.Message) error
}

// CardUpdater is a transport that can redraw the cards it posted for a
// ticket, so buttons that no longer apply disappear.
type CardUpdater interface {
	UpdateCards(ctx context.Context, ticket string, msg templates.Message) error
}

// Options builds a Bot.
type Options struct {
	Config *Config
	Log    *slog.Logger
	// Now is the clock; tests inject one.
	Now func() time.Time
	// Executors add to or replace the built-in ones (tests use this).
	Executors map[string]flows.Executor
	// Transports are started besides the local chat.
	Transports []Transport
	// TickEvery is how often timers are checked; 0 means 5s.
	TickEvery time.Duration
	// ShutdownGrace is how long a stopping bot lets running actions
	// finish before stopping them; 0 means 30s.
	ShutdownGrace time.Duration
}

// Bot is a running opsbot.
type Bot struct {
	cfg   *Config
	log   *slog.Logger
	now   func() time.Time
	store *state.Store
	// etcd is the client of the etcd backend (nil on bbolt); replica is
	// this process among those sharing the state.
	etcd    *clientv3.Client
	replica *state.Replica
	// metrics and the ops listener (ops.listen).
	metrics *metrics
	opsAddr string
	opsSrv  *http.Server
	apiAddr string
	apiSrv  *http.Server
	// feedList are the webhooks and the audit stream.
	feedList []*feed
	servers  *servers.Executor
	// readiness's last answer, and when.
	readyMu   sync.Mutex
	readyAt   time.Time
	readyLast map[string]string
	dir       *flows.Directory
	engine    *flows.Engine
	present   *present.Presenter
	runner    *flows.Runner
	reg       *commands.Registry
	limiter   Limiter
	redis     *goredis.Client
	redact    *Redactor
	zk        map[string]*zookeeper.Store
	inv       *inventory.Inventory
	cleanup   *cleanup.Executor
	// trans are the chat transports; listeners those of them started.
	trans     []Transport
	listeners []Listener
	audit     *auditWriter
	tick      time.Duration
	grace     time.Duration

	// deliverMu keeps two deliveries of the same outbox entry apart.
	deliverMu sync.Mutex

	refusals *refusals
	// flowRoles are the roles each flow names: their holders may read its
	// tickets.
	flowRoles map[string][]string
	// importing holds the one inventory import allowed at a time.
	importing  chan struct{}
	lastBackup atomic.Int64

	srv      *http.Server
	httpStop context.CancelFunc
	addr     string
	wg       sync.WaitGroup
	stopOnce sync.Once
	cancel   context.CancelFunc
}

// New opens the state and wires everything; it does not start serving.
// An unreachable Redis does not stop it: the limiter falls back and
// reconnects by itself.
func New(ctx context.Context, o Options) (*Bot, error) {
	cfg := o.Config
	b := &Bot{cfg: cfg, log: o.Log, now: o.Now, tick: o.TickEvery, grace: o.ShutdownGrace}
	if b.grace <= 0 {
		b.grace = 30 * time.Second
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.tick <= 0 {
		b.tick = 5 * time.Second
	}
	var secrets []string
	for _, e := range cfg.SecretsEnv {
		secrets = append(secrets, os.Getenv(e))
	}
	if cfg.Redis.PasswordEnv != "" {
		secrets = append(secrets, os.Getenv(cfg.Redis.PasswordEnv))
	}
	if cfg.Slack.Mode != "" {
		secrets = append(secrets, os.Getenv(cfg.Slack.BotTokenEnv), os.Getenv(cfg.Slack.SigningSecretEnv), os.Getenv(cfg.Slack.AppTokenEnv))
	}
	if cfg.GitLab.BaseURL != "" {
		secrets = append(secrets, os.Getenv(cfg.GitLab.TokenEnv))
	}
	if cfg.DNS.Enabled() {
		secrets = append(secrets, os.Getenv(cfg.DNS.KeySecretEnv))
	}
	// Webhook and audit stream signing secrets, the LDAP bind password.
	for _, w := range cfg.Webhooks {
		secrets = append(secrets, os.Getenv(w.SecretEnv))
	}
	if cfg.Audit.Stream.SecretEnv != "" {
		secrets = append(secrets, os.Getenv(cfg.Audit.Stream.SecretEnv))
	}
	if cfg.LDAP.PasswordEnv != "" {
		secrets = append(secrets, os.Getenv(cfg.LDAP.PasswordEnv))
	}
	if cfg.State.Etcd.PasswordEnv != "" {
		secrets = append(secrets, os.Getenv(cfg.State.Etcd.PasswordEnv))
	}
	for _, e := range cfg.Cleanup.Envs {
		secrets = append(secrets, os.Getenv(e.MongoURIEnv), os.Getenv(e.Redis.PasswordEnv))
	}
	for _, ch := range cfg.Channels {
		if ch.WeComRobotEnv != "" {
			secrets = append(secrets, os.Getenv(ch.WeComRobotEnv))
		}
	}
	if cfg.WeCom.Enabled {
		secrets = append(secrets, os.Getenv(cfg.WeCom.SecretEnv), os.Getenv(cfg.WeCom.TokenEnv), os.Getenv(cfg.WeCom.AESKeyEnv))
		for _, r := range cfg.WeCom.Robots {
			secrets = append(secrets, os.Getenv(r.KeyEnv))
		}
	}
	b.redact = NewRedactor(secrets...)
	b.log = slog.New(&redactingHandler{Handler: b.log.Handler(), r: b.redact})

	scripts := script.New(script.Config{Dir: cfg.Resolve(cfg.Scripts.Dir), OutputLimit: cfg.Scripts.OutputLimit,
		TransientExitCodes: cfg.Scripts.TransientExitCodes, Redact: b.redact.Redact})
	// The inventory executor gets its inventory once the state is open.
	invExec := &inventory.Executor{WarnChannel: cfg.Clusters.WarnChannel, Now: b.now,
		Hook: inventory.Hook{Script: cfg.Clusters.Apply.Script, URL: cfg.Clusters.Apply.URL, Scripts: scripts}}
	srvExec, err := newServers(cfg, scripts)
	if err != nil {
		return nil, err
	}
	execs := map[string]flows.Executor{"script": scripts, "inventory": invExec, "servers": srvExec}
	if d := cfg.DNS; d.Enabled() {
		execs["dns"] = dns.New(dns.Config{Server: d.Server, Zone: d.Zone, KeyName: d.KeyName, KeySecretEnv: d.KeySecretEnv,
			Algorithm: d.Algorithm, Resolver: d.Resolver, TTL: uint32(d.TTL), Script: d.Script, Scripts: scripts, Timeout: d.Timeout.D()})
	}
	if cfg.GitLab.BaseURL != "" {
		gl, err := gitlab.New(gitlab.Config{BaseURL: cfg.GitLab.BaseURL, Token: os.Getenv(cfg.GitLab.TokenEnv), Project: cfg.GitLab.Project,
			HTTPClient: &http.Client{Timeout: 30 * time.Second}})
		if err != nil {
			return nil, err
		}
		execs["puppet"] = puppet.New(puppet.Config{Client: gl, MaxConcurrent: cfg.GitLab.MaxConcurrent})
	}
	if len(cfg.ZooKeeper.Production) > 0 {
		b.zk = map[string]*zookeeper.Store{}
		for name, servers := range map[string][]string{"review": cfg.ZooKeeper.Review, "production": cfg.ZooKeeper.Production} {
			if len(servers) == 0 {
				continue
			}
			st, err := zookeeper.Open(zookeeper.Config{Name: name, Servers: servers, Root: cfg.ZooKeeper.Root, Log: b.log})
			if err != nil {
				return nil, err
			}
			b.zk[name] = st
		}
		execs["zookeeper"] = zookeeper.NewExecutor(zookeeper.ExecConfig{Ensembles: b.zk, CDN: cfg.ZooKeeper.CDN, Platforms: cfg.ZooKeeper.Platforms})
	}
	if len(cfg.Cleanup.Envs) > 0 {
		cx, err := newCleanup(b, cfg)
		if err != nil {
			return nil, err
		}
		b.cleanup = cx
		execs["cleanup"] = cx
	}
	for k, v := range o.Executors {
		execs[k] = v
	}
	names := make([]string, 0, len(execs))
	for k := range execs {
		names = append(names, k)
	}
	fl, err := cfg.AllFlows(names)
	if err != nil {
		return nil, err
	}
	for _, f := range fl {
		for i := range f.Stages {
			if f.Stages[i].Kind == flows.KindRelease {
				if f.Stages[i].Params == nil {
					f.Stages[i].Params = map[string]string{}
				}
				for zone, stores := range cfg.GitLab.ZoneStores {
					f.Stages[i].Params["stores."+zone] = strings.Join(stores, ",")
				}
			}
		}
	}
	store, cli, err := openStore(ctx, cfg, false)
	if err != nil {
		return nil, withRestoreHint(err, cfg)
	}
	b.store, b.etcd = store, cli
	b.replica = store.Replica(state.NewReplicaID(), cfg.State.Etcd.LeaseTTL.D(), b.log)
	if err := b.seedUsers(ctx); err != nil {
		b.closeState()
		return nil, err
	}
	if b.dir, err = flows.NewDirectory(ctx, store); err != nil {
		b.closeState()
		return nil, err
	}
	cl := cfg.Clusters
	rules := inventory.Rules{Sizes: cl.Sizes, WarnAt: cl.WarnAt, MaxDOShare: cl.MaxDOShare, MixTolerance: cl.MixTolerance, MixMinStores: cl.MixMinStores}
	if b.inv, err = inventory.New(ctx, store, rules); err != nil {
		b.closeState()
		return nil, err
	}
	invExec.Inv = b.inv
	srvExec.UseStore(store)
	b.servers = srvExec
	create := inventory.CreateRules{ProdName: regexp.MustCompile("^(?:" + cl.ProdNamePattern + ")$"), ProdNameExample: cl.ProdNameExample, Zone: cfg.DNS.Zone}
	switch {
	case cl.K8sLookup.URL != "":
		create.Lookup = inventory.HTTPLookup{URL: cl.K8sLookup.URL}
	case cl.K8sLookup.Script != "":
		create.Lookup = inventory.ScriptLookup{Script: cl.K8sLookup.Script, Scripts: scripts}
	}
	validators := map[string]flows.Validator{"cluster-create": b.inv.ValidateCreate(create), "cluster-change": b.inv.ValidateChange(),
		"puppet-cert-clean": srvExec.ValidateCertClean(), "server-group-change": srvExec.ValidateGroupChange(), "server-change": srvExec.ValidateServerChange()}
	if b.cleanup != nil {
		validators["cleanup"] = b.cleanup.Validator()
	}
	if zx, ok := execs["zookeeper"].(*zookeeper.Executor); ok {
		validators["game"] = zx
	}
	for _, f := range fl {
		if _, ok := validators[f.Validator]; f.Validator != "" && !ok {
			b.closeState()
			var names []string
			for k := range validators {
				names = append(names, k)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("flow %s: unknown validator %q (%s)", f.Name, f.Validator, strings.Join(names, ", "))
		}
	}
	if loc, err := cfg.Zone(); err == nil {
		templates.SetZone(loc)
	}
	b.present = present.New(fl, b.dir.Members)
	// Metrics are kept when something can read them (ops.listen).
	var observer flows.Observer
	if cfg.Ops.Listen != "" {
		b.metrics = newMetrics(b)
		observer = b.metrics
	}
	b.engine = flows.New(flows.Config{Store: store, Directory: b.dir, Flows: fl, Executors: execs, Now: b.now,
		Log: b.log, Redact: b.redact.Redact, Validators: validators, Presenter: b.present, Replicas: b.replica, Observer: observer,
		DutyWiden: cfg.Calendar.DutyWiden.D()})
	b.present.SetDelegates(b.engine.Delegate)
	if b.metrics != nil {
		b.metrics.reg.MustRegister(newWaitingCollector(b))
	}
	b.runner = b.engine.NewRunner()
	b.flowRoles = map[string][]string{}
	for _, f := range fl {
		b.flowRoles[f.Name] = f.Roles()
	}
	b.audit = newAuditWriter(store, func(err error) { b.log.Error("write audit entries", "err", err) })
	b.refusals = newRefusals(b.audit, b.log, b.now, cfg.Audit.RefusalWindow.D(), b.redact.Redact)
	b.feedList = b.feeds()
	if b.metrics != nil {
		b.refusals.count = func(platform, class string) { b.metrics.refused.WithLabelValues(platform, class).Inc() }
	}
	b.importing = make(chan struct{}, 1)
	b.reg = commands.Default()

	local := NewLocalLimiter(cfg.RateLimit.PerMinute, cfg.RateLimit.Burst)
	b.limiter = local
	if cfg.Redis.Addr != "" {
		redis.SetLogger(b.log)
		b.redis = redis.NewClient(redis.Options{Addr: cfg.Redis.Addr, Password: os.Getenv(cfg.Redis.PasswordEnv), DB: cfg.Redis.DB})
		b.limiter = redis.NewLimiter(b.redis, cfg.RateLimit.PerMinute, cfg.RateLimit.Burst, local, b.log)
	}
	if cfg.LocalEnabled() {
		b.trans = append(b.trans, newLocal(b))
	}
	b.trans = append(b.trans, o.Transports...)
	if cfg.Slack.Mode != "" {
		b.trans = append(b.trans, newSlack(b))
	}
	if cfg.WeCom.Enabled {
		b.trans = append(b.trans, newWeCom(b))
	}
	return b, nil
}

// seedUsers writes the configured users and grants their configured roles.
// Roles granted or revoked by command stay as they are, except that a role
// listed in the config is granted again at start-up.
func (b *Bot) seedUsers(ctx context.Context) error {
	for _, u := range b.cfg.Users {
		ids := map[string]string{"local": state.NormName(u.Name)}
		for p, id := range u.IDs {
			ids[p] = id
		}
		if _, err := b.store.PutUser(ctx, state.User{Name: u.Name, Display: u.Display, Email: u.Email, IDs: ids}); err != nil {
			return fmt.Errorf("config user %s: %w", u.Name, err)
		}
		for _, r := range u.Roles {
			if _, err := b.store.Grant(ctx, r, u.Name, state.AuditEntry{At: b.now(), User: "config",
				Action: "role grant", Args: state.NormName(r) + " " + state.NormName(u.Name), Result: "ok"}); err != nil {
				return err
			}
		}
	}
	return nil
}

// FlushAudit writes queued audit entries now, with the counts of
// refusals sampled so far.
func (b *Bot) FlushAudit(ctx context.Context) {
	b.refusals.Flush(ctx, true)
	b.audit.Flush(ctx)
}

// Engine returns the flow engine.
func (b *Bot) Engine() *flows.Engine { return b.engine }

// Store returns the state store.
func (b *Bot) Store() *state.Store { return b.store }

// Slack returns the Slack transport, or nil when it is off.
func (b *Bot) Slack() *slack.Transport { return transportOf[*slack.Transport](b) }

// WeCom returns the WeCom transport, or nil when it is off.
func (b *Bot) WeCom() *wecom.Transport { return transportOf[*wecom.Transport](b) }

// Local returns the local chat transport, or nil when it is off.
func (b *Bot) Local() *local.Transport { return transportOf[*local.Transport](b) }

// transportOf finds the running transport of type T, or T's zero value.
func transportOf[T Transport](b *Bot) T {
	for _, t := range b.trans {
		if x, ok := t.(T); ok {
			return x
		}
	}
	var zero T
	return zero
}

// Inventory returns the store-cluster inventory.
func (b *Bot) Inventory() *inventory.Inventory { return b.inv }

// Runner returns the job runner.
func (b *Bot) Runner() *flows.Runner { return b.runner }

// Limiter returns the command rate limiter.
func (b *Bot) Limiter() Limiter { return b.limiter }

// Addr is the address the local chat listens on, once started.
func (b *Bot) Addr() string { return b.addr }

// withRestoreHint adds to a damaged-state error the command that restores
// the newest backup.
func withRestoreHint(err error, cfg *Config) error {
	var ce *state.CorruptError
	if !errors.As(err, &ce) {
		return err
	}
	dir := cfg.Resolve(cfg.State.BackupDir)
	newest := newestBackup(dir)
	if newest == "" {
		return fmt.Errorf("%w\nno backup found in %s: restore one you keep elsewhere with `opsbot restore FILE`, "+
			"or move %s aside to start with an empty state", err, dir, ce.Path)
	}
	return fmt.Errorf("%w\nrestore the newest backup with: opsbot restore %s\n(the damaged file is kept beside it as %s.replaced-<time>)", err, newest, ce.Path)
}

// newestBackup is the most recently modified regular file in dir.
func newestBackup(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var best string
	var bestAt time.Time
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || strings.Contains(e.Name(), ".tmp-") {
			continue
		}
		if best == "" || info.ModTime().After(bestAt) {
			best, bestAt = filepath.Join(dir, e.Name()), info.ModTime()
		}
	}
	return best
}

// Card draws a ticket's card as it is now.
func (b *Bot) Card(t state.Ticket) templates.Message { return b.present.TicketCard(t) }

// closeState closes the store and, on etcd, its client.
func (b *Bot) closeState() {
	b.store.Close()
	if b.etcd != nil {
		b.etcd.Close()
	}
}
