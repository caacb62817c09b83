package bot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time_zone works on hosts without zone files

	"go.yaml.in/yaml/v3"

	"opsbot/flows"
	"opsbot/integrations/ldap"
	"opsbot/state"
)

// Config is opsbot's configuration file. Secrets are never written in it:
// fields ending in _env name the environment variable that holds them.
type Config struct {
	// Listen is the local chat and admin API address; loopback only.
	Listen string `yaml:"listen"`
	// TimeZone is the zone people read times in (an IANA name such as
	// Asia/Shanghai); empty means the host's.
	TimeZone string `yaml:"time_zone"`
	// Local is the local chat (a development transport).
	Local LocalConfig `yaml:"local"`
	// Ops is the listener for metrics and health.
	Ops OpsConfig `yaml:"ops"`
	// API is the listener other systems call (/api/v1/...) with tokens.
	API APIConfig `yaml:"api"`
	// Webhooks receive ticket events, signed, at least once, in order.
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// PuppetCA is the Puppet Server CA certificate cleans act on.
	PuppetCA PuppetCAConfig `yaml:"puppet_ca"`
	// LDAP holds the Puppet node classification group changes act on.
	LDAP ldap.Config `yaml:"ldap"`
	// Servers configures the store-server flows.
	Servers ServersConfig `yaml:"servers"`
	// Log is how the process logs.
	Log LogConfig `yaml:"log"`
	// Admin guards the operator endpoints (/admin/...).
	Admin AdminConfig `yaml:"admin"`
	// HTTP bounds every server's connections.
	HTTP      HTTPConfig      `yaml:"http"`
	State     StateConfig     `yaml:"state"`
	Redis     RedisConfig     `yaml:"redis"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	Audit     AuditConfig     `yaml:"audit"`
	Outbox    OutboxConfig    `yaml:"outbox"`
	Scripts   ScriptsConfig   `yaml:"scripts"`
	// SecretsEnv lists environment variables whose values are redacted
	// wherever they would appear (logs, audit, chat).
	SecretsEnv []string     `yaml:"secrets_env"`
	Users      []UserConfig `yaml:"users"`
	Slack      SlackConfig  `yaml:"slack"`
	WeCom      WeComConfig  `yaml:"wecom"`
	GitLab     GitLabConfig `yaml:"gitlab"`
	ZooKeeper  ZKConfig     `yaml:"zookeeper"`
	// Channels name team channels (e.g. "infra") on each platform.
	Channels map[string]ChannelConfig `yaml:"channels"`
	Clusters ClustersConfig           `yaml:"clusters"`
	DNS      DNSConfig                `yaml:"dns"`
	Cleanup  CleanupConfig            `yaml:"cleanup"`
	Calendar CalendarConfig           `yaml:"calendar"`
	// Flows add to or replace the built-in flows by name.
	Flows []*flows.Flow `yaml:"flows"`

	// dir is where relative paths are resolved from.
	dir string
}

// PuppetCAConfig reaches the Puppet Server CA with the bot's client
// certificate (allowed on /puppet-ca/v1/certificate_status by the CA's
// auth.conf). Off when url is empty.
type PuppetCAConfig struct {
	URL        string `yaml:"url"`
	CA         string `yaml:"ca"`
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	ServerName string `yaml:"server_name"`
}

// ServersConfig: Apply is called when a server change executes (an HTTP
// endpoint or a script, like clusters.apply).
type ServersConfig struct {
	Apply HookConfig `yaml:"apply"`
}

// StateConfig locates the bbolt file, its backups and its key.
type StateConfig struct {
	// Backend is where the state lives: bbolt (one file, one process;
	// the default) or etcd (several replicas).
	Backend     string         `yaml:"backend"`
	Etcd        EtcdConfig     `yaml:"etcd"`
	Path        string         `yaml:"path"`
	OpenTimeout flows.Duration `yaml:"open_timeout"`
	// BackupDir is the only directory backups requested over HTTP are
	// written to (default: backups/ beside the state file).
	BackupDir string `yaml:"backup_dir"`
	// KeyEnv names the environment variable holding the key that seals
	// chat input recorded before its ack; unset, a key file beside the
	// state file (<path>.key, mode 0600) is created and used.
	KeyEnv string `yaml:"key_env"`
}

// LogConfig: log.format text (key=value, the default) or json (one
// object a line, for a log shipper); log.level debug, info (default),
// warn or error.
type LogConfig struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

// Logger is the process's logger as configured, writing to w.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// OpsConfig is the ops listener: /metrics (Prometheus), /healthz and
// /readyz. It changes nothing and serves no secret, so it may listen
// beyond loopback (for the Prometheus server); empty: off.
type OpsConfig struct {
	Listen string `yaml:"listen"`
}

// EtcdConfig reaches the etcd cluster of the etcd backend.
type EtcdConfig struct {
	// Endpoints are the members' client URLs (https://10.0.0.1:2379).
	Endpoints []string `yaml:"endpoints"`
	// Prefix keeps this installation's keys apart from others on the
	// same cluster; it ends in "/".
	Prefix string `yaml:"prefix"`
	// CA, Cert and Key are PEM files: the CA that signed the members'
	// certificates, and this client's certificate and key (mutual TLS).
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Username authenticates with etcd's own users; its password is read
	// from the environment variable PasswordEnv.
	Username    string         `yaml:"username"`
	PasswordEnv string         `yaml:"password_env"`
	DialTimeout flows.Duration `yaml:"dial_timeout"`
	// LeaseTTL is how long a replica that died keeps its work before
	// another takes it over.
	LeaseTTL flows.Duration `yaml:"lease_ttl"`
}

// LocalConfig turns the local chat on or off. It has no login: anyone on
// the bot's host can act as anyone, so it is a development transport. It
// is on by default only when no chat platform is enabled.
type LocalConfig struct {
	Enabled *bool `yaml:"enabled"`
}

// AdminConfig guards /admin/... with a bearer token read from the
// environment variable TokenEnv; with the variable unset the endpoints
// are off.
type AdminConfig struct {
	TokenEnv string `yaml:"token_env"`
}

// HTTPConfig bounds every HTTP server: the whole request read, the answer
// written, an idle keep-alive connection.
type HTTPConfig struct {
	ReadTimeout  flows.Duration `yaml:"read_timeout"`
	WriteTimeout flows.Duration `yaml:"write_timeout"`
	IdleTimeout  flows.Duration `yaml:"idle_timeout"`
}

// RedisConfig connects the optional Redis used by the rate limiter.
type RedisConfig struct {
	Addr        string `yaml:"addr"`
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
}

// RateLimitConfig is the per-user command limit.
type RateLimitConfig struct {
	PerMinute int `yaml:"per_minute"`
	Burst     int `yaml:"burst"`
}

// AuditConfig bounds audit payloads and how long entries are kept.
type AuditConfig struct {
	MaxArgs int `yaml:"max_args"`
	// Retention is how long entries are kept (default 400d); older ones
	// are deleted in the background, a small batch at a time.
	Retention flows.Duration `yaml:"retention"`
	// RefusalWindow groups refusals of one kind from one source: the
	// first is written, the rest counted into one entry per window.
	RefusalWindow flows.Duration `yaml:"refusal_window"`
	// Stream sends every entry to a file and/or an HTTP endpoint.
	Stream AuditStreamConfig `yaml:"stream"`
}

// OutboxConfig paces notification retries.
type OutboxConfig struct {
	RetryMin flows.Duration `yaml:"retry_min"`
	RetryMax flows.Duration `yaml:"retry_max"`
}

// ScriptsConfig configures the script executor.
type ScriptsConfig struct {
	// Dir is where script commands are looked up; commands may not leave it.
	Dir                string `yaml:"dir"`
	OutputLimit        int    `yaml:"output_limit"`
	TransientExitCodes []int  `yaml:"transient_exit_codes"`
}

// SlackConfig turns the Slack transport on. Tokens come from the
// environment variables named here.
type SlackConfig struct {
	// Mode is "" (off), "http" (Slack calls Listen; needs a public URL)
	// or "socket" (Socket Mode; no public URL, suits intranets).
	Mode string `yaml:"mode"`
	// Listen is where HTTP mode serves /slack/commands, /slack/interactions
	// and /slack/events (put it behind your HTTPS proxy).
	Listen           string `yaml:"listen"`
	BotTokenEnv      string `yaml:"bot_token_env"`
	SigningSecretEnv string `yaml:"signing_secret_env"`
	AppTokenEnv      string `yaml:"app_token_env"`
	// APIURL overrides https://slack.com/api/ (a proxy, or tests).
	APIURL string `yaml:"api_url"`
	// PerChannelPerMinute paces messages per channel (Slack allows about
	// one a second); shared through Redis when Redis is configured.
	PerChannelPerMinute int `yaml:"per_channel_per_minute"`
}

// WeComConfig turns the WeCom (企业微信) self-built app transport on.
type WeComConfig struct {
	// Enabled starts the callback endpoint on Listen.
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	CorpID  string `yaml:"corp_id"`
	AgentID string `yaml:"agent_id"`
	// Environment variables holding the app secret, the callback Token and
	// the EncodingAESKey.
	SecretEnv string `yaml:"secret_env"`
	TokenEnv  string `yaml:"token_env"`
	AESKeyEnv string `yaml:"aes_key_env"`
	// PerUserPerMinute paces app messages to one member (WeCom drops the
	// ones over its limit of 30 a minute).
	PerUserPerMinute int `yaml:"per_user_per_minute"`
	// Robots post results and progress to group chats, per flow or per
	// the ticket's env field.
	Robots []WeComRobotConfig `yaml:"robots"`
}

// WeComRobotConfig is a group robot webhook; its key is a secret.
type WeComRobotConfig struct {
	Flow   string `yaml:"flow"`
	Env    string `yaml:"env"`
	KeyEnv string `yaml:"key_env"`
}

// GitLabConfig connects the Puppet batch release to a GitLab project; the
// puppet-release flow exists only when BaseURL is set.
type GitLabConfig struct {
	// BaseURL is the API root, e.g. https://gitlab.example.com/api/v4.
	BaseURL  string `yaml:"base_url"`
	TokenEnv string `yaml:"token_env"`
	// Project is the Puppet control repository, e.g. infra/puppet.
	Project string `yaml:"project"`
	// MaxConcurrent bounds the GitLab calls a batch makes at once.
	MaxConcurrent int `yaml:"max_concurrent"`
	// ZoneStores lists the stores behind each zone branch, for the card.
	ZoneStores map[string][]string `yaml:"zone_stores"`
}

// ZKConfig connects game publishing to the two ZooKeeper ensembles; the
// publishing flows exist when Production is set.
type ZKConfig struct {
	Review     []string `yaml:"review"`
	Production []string `yaml:"production"`
	// Root is the znode under which platforms live (default /opsbot/games).
	Root string `yaml:"root"`
	// CDN is the package URL layout the version service hands out, with
	// {platform} and {version}; publishes outside it are refused.
	CDN       string   `yaml:"cdn"`
	Platforms []string `yaml:"platforms"`
	// PlatformRoles may stop and start platforms (/ops platform; admins
	// always); default [publisher].
	PlatformRoles []string `yaml:"platform_roles"`
}

// ChannelConfig is one team channel: a Slack channel id and/or a WeCom
// group robot (its key in an environment variable). The local chat shows
// it as the inbox "#name".
type ChannelConfig struct {
	Slack         string `yaml:"slack"`
	WeComRobotEnv string `yaml:"wecom_robot_env"`
	// Mention is whom an announcement (a freeze set, its reminder and
	// end) mentions: "all" (the default: Slack <!channel>, the WeCom
	// robot's @all) or "none".
	Mention string `yaml:"mention"`
}

// CalendarConfig configures freezes, release milestones, absences and
// duty rotations.
type CalendarConfig struct {
	// Channel is the team channel told about freezes when a freeze or
	// milestone names none.
	Channel string `yaml:"channel"`
	// FreezeRoles may set and lift freezes and milestones (admins always
	// may); empty: cleanup.freeze_roles.
	FreezeRoles []string `yaml:"freeze_roles"`
	// RemindBefore is how long before a freeze starts the channel is
	// reminded (default 24h).
	RemindBefore flows.Duration `yaml:"remind_before"`
	// DutyWiden is when an approval told only to the person on duty goes
	// to the whole role, for stages without remind_every (default 30m).
	DutyWiden flows.Duration `yaml:"duty_widen"`
}

// ClustersConfig holds the store-cluster rules and hooks.
type ClustersConfig struct {
	// Sizes maps each size (SKU) to the stores it holds.
	Sizes map[string]int `yaml:"sizes"`
	// WarnAt is the utilization whose crossing warns WarnChannel.
	WarnAt      float64 `yaml:"warn_at"`
	WarnChannel string  `yaml:"warn_channel"`
	// Placement rules for prod (see README).
	MaxDOShare   float64 `yaml:"max_do_share"`
	MixTolerance float64 `yaml:"mix_tolerance"`
	MixMinStores int     `yaml:"mix_min_stores"`
	// ProdNamePattern is the naming rule of prod clusters.
	ProdNamePattern string `yaml:"prod_name_pattern"`
	ProdNameExample string `yaml:"prod_name_example"`
	// K8sLookup finds the node IPs of an Ali/AWS K8s cluster by id.
	K8sLookup HookConfig `yaml:"k8s_lookup"`
	// Apply is called when a cluster change executes.
	Apply HookConfig `yaml:"apply"`
}

// HookConfig is an HTTP endpoint or a script in the scripts directory.
type HookConfig struct {
	URL    string `yaml:"url"`
	Script string `yaml:"script"`
}

// DNSConfig is where cluster domains are filed: an RFC 2136 server with a
// TSIG key, or a script; the cluster-create flow exists when it is set.
type DNSConfig struct {
	Server       string         `yaml:"server"`
	Zone         string         `yaml:"zone"`
	KeyName      string         `yaml:"key_name"`
	KeySecretEnv string         `yaml:"key_secret_env"`
	Algorithm    string         `yaml:"algorithm"`
	Resolver     string         `yaml:"resolver"`
	TTL          int            `yaml:"ttl"`
	Script       string         `yaml:"script"`
	Timeout      flows.Duration `yaml:"timeout"`
}

// CleanupConfig configures data cleanup (清档); the cleanup flow exists
// when Envs is set.
type CleanupConfig struct {
	BackupDir       string  `yaml:"backup_dir"`
	ChangeThreshold float64 `yaml:"change_threshold"`
	RedisBatch      int     `yaml:"redis_batch"`
	// FreezeRoles may /ops freeze and /ops unfreeze (admins always may).
	FreezeRoles []string                    `yaml:"freeze_roles"`
	Protected   []ProtectedConfig           `yaml:"protected"`
	Envs        map[string]CleanupEnvConfig `yaml:"envs"`
}

// ProtectedConfig protects an environment, always or between two dates.
type ProtectedConfig struct {
	Env    string `yaml:"env"`
	Mode   string `yaml:"mode"` // refuse or two_approvers
	From   string `yaml:"from"`
	Until  string `yaml:"until"`
	Reason string `yaml:"reason"`
}

// CleanupEnvConfig is one environment's connections and targets.
type CleanupEnvConfig struct {
	Backup      bool                  `yaml:"backup"`
	MongoURIEnv string                `yaml:"mongo_uri_env"`
	Redis       CleanupRedisConfig    `yaml:"redis"`
	Targets     []CleanupTargetConfig `yaml:"targets"`
}

// CleanupRedisConfig reaches an environment's Redis.
type CleanupRedisConfig struct {
	Addr        string `yaml:"addr"`
	PasswordEnv string `yaml:"password_env"`
}

// CleanupTargetConfig is one named target: exactly one of mongo, redis
// and logs.
type CleanupTargetConfig struct {
	Name  string `yaml:"name"`
	Mongo *struct {
		Database    string   `yaml:"database"`
		Collections []string `yaml:"collections"`
	} `yaml:"mongo"`
	Redis *struct {
		DB       int      `yaml:"db"`
		Patterns []string `yaml:"patterns"`
	} `yaml:"redis"`
	Logs *struct {
		Root      string         `yaml:"root"`
		Globs     []string       `yaml:"globs"`
		OlderThan flows.Duration `yaml:"older_than"`
	} `yaml:"logs"`
}

// Enabled reports whether DNS filing is configured.
func (d DNSConfig) Enabled() bool { return d.Server != "" || d.Script != "" }

// Executors lists the executors this configuration provides.
func (c *Config) Executors() []string {
	out := []string{"script", "inventory", "servers"}
	if c.DNS.Enabled() {
		out = append(out, "dns")
	}
	if len(c.Cleanup.Envs) > 0 {
		out = append(out, "cleanup")
	}
	if c.GitLab.BaseURL != "" {
		out = append(out, "puppet")
	}
	if len(c.ZooKeeper.Production) > 0 {
		out = append(out, "zookeeper")
	}
	return out
}

// UserConfig declares a person, their chat ids and their initial roles.
type UserConfig struct {
	Name    string            `yaml:"name"`
	Display string            `yaml:"display"`
	Email   string            `yaml:"email"`
	Roles   []string          `yaml:"roles"`
	IDs     map[string]string `yaml:"ids"`
}

// ParseConfig decodes a configuration, refusing unknown keys, and fills in
// defaults. dir is where relative paths are resolved from.
func ParseConfig(data []byte, dir string) (*Config, error) {
	cfg := &Config{}
	// First every problem of the file, each by key path and line.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// A syntax error stops the parser; the other top-level sections
		// are read one by one, so their problems are told at once too.
		errs := checkSections(data)
		return nil, fmt.Errorf("config: %d problem(s):\n  %w", len(errs), joinLines(errs))
	}
	if len(doc.Content) > 0 {
		var errs []error
		checkTree(doc.Content[0], reflect.TypeFor[Config](), "", &errs)
		if len(errs) > 0 {
			return nil, fmt.Errorf("config: %d problem(s):\n  %w", len(errs), joinLines(errs))
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	cfg.dir = dir
	cfg.defaults()
	return cfg, nil
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, _ := filepath.Abs(filepath.Dir(path))
	return ParseConfig(data, abs)
}

func (c *Config) defaults() {
	orDefault(&c.Listen, "127.0.0.1:8080")
	orDefault(&c.State.Path, "data/opsbot.db")
	orDefault(&c.State.Backend, "bbolt")
	orDefault(&c.State.Etcd.Prefix, "opsbot/")
	orDefault(&c.State.Etcd.PasswordEnv, "OPSBOT_ETCD_PASSWORD")
	orPositive(&c.State.Etcd.DialTimeout, flows.Duration(5*time.Second))
	orPositive(&c.State.Etcd.LeaseTTL, flows.Duration(5*time.Second))
	orPositive(&c.State.OpenTimeout, flows.Duration(time.Second))
	orDefault(&c.State.BackupDir, filepath.Join(filepath.Dir(c.State.Path), "backups"))
	orDefault(&c.State.KeyEnv, "OPSBOT_STATE_KEY")
	orDefault(&c.Admin.TokenEnv, "OPSBOT_ADMIN_TOKEN")
	orPositive(&c.HTTP.ReadTimeout, flows.Duration(30*time.Second))
	orPositive(&c.HTTP.WriteTimeout, flows.Duration(60*time.Second))
	orPositive(&c.HTTP.IdleTimeout, flows.Duration(2*time.Minute))
	orPositive(&c.Audit.Retention, flows.Duration(400*24*time.Hour))
	orPositive(&c.Audit.RefusalWindow, flows.Duration(time.Minute))
	orPositive(&c.RateLimit.PerMinute, 60)
	orPositive(&c.RateLimit.Burst, 20)
	orPositive(&c.Audit.MaxArgs, 500)
	orPositive(&c.Outbox.RetryMin, flows.Duration(2*time.Second))
	orPositive(&c.Outbox.RetryMax, flows.Duration(10*time.Minute))
	orDefault(&c.Slack.Listen, "127.0.0.1:3000")
	orDefault(&c.Slack.BotTokenEnv, "OPSBOT_SLACK_BOT_TOKEN")
	orDefault(&c.Slack.SigningSecretEnv, "OPSBOT_SLACK_SIGNING_SECRET")
	orDefault(&c.Slack.AppTokenEnv, "OPSBOT_SLACK_APP_TOKEN")
	orPositive(&c.Slack.PerChannelPerMinute, 50) // Slack allows about 1/s per channel; stay under it
	if len(c.ZooKeeper.PlatformRoles) == 0 {
		c.ZooKeeper.PlatformRoles = []string{"publisher"}
	}
	orDefault(&c.WeCom.Listen, "127.0.0.1:3001")
	orDefault(&c.WeCom.SecretEnv, "OPSBOT_WECOM_SECRET")
	orDefault(&c.WeCom.TokenEnv, "OPSBOT_WECOM_TOKEN")
	orDefault(&c.WeCom.AESKeyEnv, "OPSBOT_WECOM_AES_KEY")
	orPositive(&c.WeCom.PerUserPerMinute, 20) // WeCom drops messages over 30/min per member
	orDefault(&c.GitLab.TokenEnv, "OPSBOT_GITLAB_TOKEN")
	orPositive(&c.GitLab.MaxConcurrent, 4)
	if len(c.Clusters.Sizes) == 0 {
		c.Clusters.Sizes = map[string]int{"3+3": 256, "5+3": 512, "9+6": 1024}
	}
	if c.Clusters.WarnAt <= 0 {
		c.Clusters.WarnAt = 0.8
	}
	orDefault(&c.Clusters.WarnChannel, "infra")
	orDefault(&c.Calendar.Channel, "team")
	if c.Calendar.RemindBefore <= 0 {
		c.Calendar.RemindBefore = flows.Duration(24 * time.Hour)
	}
	if c.Calendar.DutyWiden <= 0 {
		c.Calendar.DutyWiden = flows.Duration(30 * time.Minute)
	}
	if len(c.Calendar.FreezeRoles) == 0 {
		c.Calendar.FreezeRoles = c.Cleanup.FreezeRoles
	}
	if c.Clusters.MaxDOShare <= 0 {
		c.Clusters.MaxDOShare = 0.5
	}
	if c.Clusters.MixTolerance <= 0 {
		c.Clusters.MixTolerance = 0.15
	}
	orPositive(&c.Clusters.MixMinStores, 20)
	orDefault(&c.Clusters.ProdNamePattern, `prod-[a-z]+-[0-9]{2}`)
	orDefault(&c.Clusters.ProdNameExample, "prod-sh-01")
	orDefault(&c.DNS.KeySecretEnv, "OPSBOT_DNS_TSIG_SECRET")
	orDefault(&c.DNS.Algorithm, "hmac-sha256")
	orPositive(&c.DNS.TTL, 300)
	orPositive(&c.DNS.Timeout, flows.Duration(5*time.Second))
	if c.DNS.Resolver == "" {
		c.DNS.Resolver = c.DNS.Server
	}
	orDefault(&c.Cleanup.BackupDir, "data/cleanup-backups")
	if c.Cleanup.ChangeThreshold <= 0 {
		c.Cleanup.ChangeThreshold = 0.2
	}
	orPositive(&c.Cleanup.RedisBatch, 500)
	orDefault(&c.Scripts.Dir, "examples/scripts")
	orPositive(&c.Scripts.OutputLimit, 4000)
	if len(c.Scripts.TransientExitCodes) == 0 {
		c.Scripts.TransientExitCodes = []int{75} // EX_TEMPFAIL
	}
}

// orDefault sets an empty option to its default.
func orDefault(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

// orPositive sets a zero or negative option to its default.
func orPositive[T ~int | ~int64](p *T, v T) {
	if *p <= 0 {
		*p = v
	}
}

// LocalEnabled says whether the local chat serves: as configured, or by
// default only when no chat platform is enabled.
func (c *Config) LocalEnabled() bool {
	if c.Local.Enabled != nil {
		return *c.Local.Enabled
	}
	return c.Slack.Mode == "" && !c.WeCom.Enabled
}

// Warnings are settings that work but weaken what opsbot promises.
func (c *Config) Warnings() []string {
	var out []string
	if c.Local.Enabled != nil && *c.Local.Enabled && (c.Slack.Mode != "" || c.WeCom.Enabled) {
		out = append(out, "local.enabled is true while a chat platform is enabled: the local chat has no login, "+
			"so anyone on this host can act as any user, including approving tickets requested in Slack or WeCom; "+
			"remove local.enabled in production")
	}
	out = append(out, c.roleWarnings()...)
	if tok := os.Getenv(c.Admin.TokenEnv); tok != "" && len(tok) < 16 {
		out = append(out, fmt.Sprintf("%s is shorter than 16 characters: the admin endpoints stay off; use e.g. `openssl rand -hex 32`", c.Admin.TokenEnv))
	}
	return out
}

// Resolve makes a relative path relative to the config file.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Check validates the configuration and returns every problem found, each
// naming the option and what to write instead. executors lists the
// executor names available.
func (c *Config) Check(executors []string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := c.Zone(); err != nil {
		bad("time_zone: %q is not a time zone (e.g. Asia/Shanghai or UTC)", c.TimeZone)
	}
	// Every listen address names a real port.
	if f := c.Log.Format; f != "" && f != "text" && f != "json" {
		bad("log.format: %q: text (key=value lines) or json (one object a line)", f)
	}
	var lv slog.Level
	if c.Log.Level != "" && lv.UnmarshalText([]byte(c.Log.Level)) != nil {
		bad("log.level: %q: debug, info, warn or error", c.Log.Level)
	}
	if c.Ops.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Ops.Listen); err != nil {
			bad("ops.listen: %q is not host:port (e.g. 0.0.0.0:9464 for a Prometheus server elsewhere, or 127.0.0.1:9464)", c.Ops.Listen)
		}
	}
	for key, addr := range map[string]string{"listen": c.Listen, "slack.listen": c.Slack.Listen, "redis.addr": c.Redis.Addr, "ops.listen": c.Ops.Listen} {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				bad("%s: port %q is not a port number (0 to 65535, e.g. 127.0.0.1:8080)", key, port)
			}
		}
	}
	if host, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port (e.g. 127.0.0.1:8080)", c.Listen)
	} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		bad("listen: %q is not a loopback address; the local chat has no login, so keep it on 127.0.0.1", c.Listen)
	}
	errs = append(errs, c.checkState()...)
	errs = append(errs, c.checkFeeds()...)
	errs = append(errs, c.checkServers()...)
	if c.Redis.PasswordEnv != "" && os.Getenv(c.Redis.PasswordEnv) == "" {
		bad("redis.password_env: environment variable %s is not set", c.Redis.PasswordEnv)
	}
	if c.Redis.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Redis.Addr); err != nil {
			bad("redis.addr: %q is not host:port (e.g. 127.0.0.1:6379)", c.Redis.Addr)
		}
	}
	switch c.Slack.Mode {
	case "":
	case "http", "socket":
		need := []string{c.Slack.BotTokenEnv, c.Slack.SigningSecretEnv}
		if c.Slack.Mode == "socket" {
			need = []string{c.Slack.BotTokenEnv, c.Slack.AppTokenEnv}
		}
		for _, e := range need {
			if os.Getenv(e) == "" {
				bad("slack: environment variable %s is not set (slack.mode is %s)", e, c.Slack.Mode)
			}
		}
		if c.Slack.Mode == "http" {
			if _, _, err := net.SplitHostPort(c.Slack.Listen); err != nil {
				bad("slack.listen: %q is not host:port (e.g. 127.0.0.1:3000)", c.Slack.Listen)
			}
		}
	default:
		bad("slack.mode: %q: use http, socket, or leave it empty", c.Slack.Mode)
	}
	if c.WeCom.Enabled {
		if c.WeCom.CorpID == "" || c.WeCom.AgentID == "" {
			bad("wecom: corp_id and agent_id are required (企业ID and the app's AgentId)")
		}
		for _, e := range []string{c.WeCom.SecretEnv, c.WeCom.TokenEnv, c.WeCom.AESKeyEnv} {
			if os.Getenv(e) == "" {
				bad("wecom: environment variable %s is not set", e)
			}
		}
		if k := os.Getenv(c.WeCom.AESKeyEnv); k != "" && len(k) != 43 {
			bad("wecom: %s must hold the 43-character EncodingAESKey", c.WeCom.AESKeyEnv)
		}
		for i, r := range c.WeCom.Robots {
			if os.Getenv(r.KeyEnv) == "" {
				bad("wecom.robots[%d]: environment variable %q is not set", i, r.KeyEnv)
			}
		}
	}
	if c.GitLab.BaseURL != "" {
		if c.GitLab.Project == "" {
			bad("gitlab.project: the Puppet control repository, e.g. infra/puppet")
		}
		if os.Getenv(c.GitLab.TokenEnv) == "" {
			bad("gitlab: environment variable %s is not set (a token with the api scope)", c.GitLab.TokenEnv)
		}
	}
	for _, e := range c.SecretsEnv {
		if os.Getenv(e) == "" {
			bad("secrets_env: environment variable %s is not set", e)
		}
	}
	seen := map[string]bool{}
	ids := map[string]string{}
	for i, u := range c.Users {
		n := state.NormName(u.Name)
		if n == "" {
			bad("users[%d]: name is empty", i)
			continue
		}
		if seen[n] {
			bad("users[%d]: user %s is declared twice (names match case-insensitively)", i, n)
		}
		seen[n] = true
		for p, id := range u.IDs {
			if !slices.Contains([]string{"local", "slack", "wecom"}, p) {
				bad("users[%d] %s: ids: unknown platform %q (local, slack, wecom)", i, n, p)
			}
			if other, dup := ids[p+":"+id]; dup {
				bad("users[%d] %s: %s id %s already belongs to %s", i, n, p, id, other)
			}
			ids[p+":"+id] = n
		}
	}
	if fl, err := c.AllFlows(executors); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, c.checkApprovable(fl)...)
	}
	if st, err := os.Stat(c.Resolve(c.Scripts.Dir)); err != nil || !st.IsDir() {
		bad("scripts.dir: %s is not a directory", c.Resolve(c.Scripts.Dir))
	}
	errs = append(errs, c.checkClusters()...)
	errs = append(errs, c.checkCleanup()...)
	return errs
}

// ParseDay reads a date ("2026-05-09") or a date and time, in China
// Standard Time when no zone is given.
func ParseDay(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.ParseInLocation("2006-01-02", s, loc); err == nil {
		return t, nil
	}
	return flows.ParseDateTime(s)
}

// checkFeeds checks the API listener, the webhooks and the audit stream.
func (c *Config) checkFeeds() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.API.Listen != "" {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			bad("api.listen: %q is not host:port (e.g. 127.0.0.1:8090 behind an HTTPS proxy)", c.API.Listen)
		}
	}
	if u := c.API.PublicURL; u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		bad("api.public_url: %q is not a URL (e.g. https://opsbot.example.com)", u)
	}
	checkURL := func(what, u string) {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			bad("%s: %q is not an http(s) URL (e.g. https://hooks.example.com/opsbot)", what, u)
		}
	}
	checkSecret := func(what, env string) {
		switch {
		case env == "":
			bad("%s.secret_env: name the variable holding the signing secret (e.g. OPSBOT_HOOK_SECRET): receivers verify every request", what)
		case len(os.Getenv(env)) < 16:
			bad("%s.secret_env: $%s must hold a secret of at least 16 characters (e.g. from openssl rand -hex 32)", what, env)
		}
	}
	seen := map[string]bool{}
	for i, w := range c.Webhooks {
		what := fmt.Sprintf("webhooks[%d]", i)
		if !tokenName.MatchString(w.Name) || seen[w.Name] {
			bad("%s.name: %q must be unique, lower-case letters, digits, dot, dash (e.g. siem)", what, w.Name)
		}
		seen[w.Name] = true
		checkURL(what+".url", w.URL)
		checkSecret(what, w.SecretEnv)
		var known []string
		for _, e := range flows.Events {
			known = append(known, string(e))
		}
		for _, e := range w.Events {
			if !slices.Contains(known, e) {
				bad("%s.events: %q is not an event%s; the events: %s", what, e, didYouMean(e, known), strings.Join(known, ", "))
			}
		}
	}
	if s := c.Audit.Stream; s.URL != "" {
		checkURL("audit.stream.url", s.URL)
		checkSecret("audit.stream", s.SecretEnv)
	}
	return errs
}

func (c *Config) checkCleanup() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	cl := c.Cleanup
	if cl.ChangeThreshold > 10 {
		bad("cleanup.change_threshold: %.2f is a share, e.g. 0.2 for 20%%", cl.ChangeThreshold)
	}
	for i, p := range cl.Protected {
		if p.Mode != "refuse" && p.Mode != "two_approvers" {
			bad("cleanup.protected[%d] %s: mode %q: refuse or two_approvers", i, p.Env, p.Mode)
		}
		for _, d := range []string{p.From, p.Until} {
			if _, err := ParseDay(d, time.UTC); d != "" && err != nil {
				bad("cleanup.protected[%d] %s: %q is not a date, e.g. 2026-05-09", i, p.Env, d)
			}
		}
	}
	for name, e := range cl.Envs {
		seen := map[string]bool{}
		for i, t := range e.Targets {
			where := fmt.Sprintf("cleanup.envs.%s.targets[%d] %s", name, i, t.Name)
			n := 0
			for _, set := range []bool{t.Mongo != nil, t.Redis != nil, t.Logs != nil} {
				if set {
					n++
				}
			}
			switch {
			case t.Name == "" || t.Name == "all":
				bad("%s: give the target a name (not \"all\")", where)
			case seen[t.Name]:
				bad("%s: declared twice", where)
			case n != 1:
				bad("%s: give exactly one of mongo, redis or logs", where)
			case t.Mongo != nil && t.Mongo.Database == "":
				bad("%s: mongo.database is empty", where)
			case t.Mongo != nil && e.MongoURIEnv == "":
				bad("cleanup.envs.%s: mongo_uri_env is needed for mongo targets", name)
			case t.Mongo != nil && os.Getenv(e.MongoURIEnv) == "":
				bad("cleanup.envs.%s: environment variable %s is not set (the Mongo URI)", name, e.MongoURIEnv)
			case t.Redis != nil && e.Redis.Addr == "":
				bad("cleanup.envs.%s: redis.addr is needed for redis targets", name)
			case t.Logs != nil && !filepath.IsAbs(c.Resolve(t.Logs.Root)):
				bad("%s: logs.root %q must be an absolute path or one relative to the config file", where, t.Logs.Root)
			case t.Logs != nil && len(t.Logs.Globs) == 0:
				bad("%s: logs.globs is empty; e.g. [\"*.log\"]", where)
			}
			if t.Logs != nil {
				for _, g := range t.Logs.Globs {
					if _, err := path.Match(g, ""); err != nil || strings.Contains(g, "..") {
						bad("%s: glob %q is not valid", where, g)
					}
				}
			}
			seen[t.Name] = true
		}
	}
	return errs
}

func (c *Config) checkClusters() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	cl := c.Clusters
	for size, n := range cl.Sizes {
		if n <= 0 {
			bad("clusters.sizes: %s holds %d stores; give a positive number, e.g. \"5+3\": 512", size, n)
		}
	}
	if cl.WarnAt > 1.5 {
		bad("clusters.warn_at: %.2f is a share, e.g. 0.8 for 80%%", cl.WarnAt)
	}
	if cl.MaxDOShare > 1 || cl.MixTolerance > 1 {
		bad("clusters.max_do_share and mix_tolerance are shares between 0 and 1, e.g. 0.5 and 0.15")
	}
	if _, err := regexp.Compile(cl.ProdNamePattern); err != nil {
		bad("clusters.prod_name_pattern: %v", err)
	}
	for name, h := range map[string]HookConfig{"k8s_lookup": cl.K8sLookup, "apply": cl.Apply} {
		if h.URL != "" && h.Script != "" {
			bad("clusters.%s: give url or script, not both", name)
		}
		if h.URL != "" {
			if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				bad("clusters.%s.url: %q is not an http(s) URL", name, h.URL)
			}
		}
	}
	if c.DNS.Enabled() {
		d := c.DNS
		if d.Zone == "" {
			bad("dns.zone: the zone cluster domains live in, e.g. ops.example.com")
		}
		if d.Server != "" {
			if _, _, err := net.SplitHostPort(d.Server); err != nil {
				bad("dns.server: %q: write host:port, e.g. 10.0.0.53:53", d.Server)
			}
			if d.KeyName != "" && os.Getenv(d.KeySecretEnv) == "" {
				bad("dns: environment variable %s is not set (the TSIG secret of key %s)", d.KeySecretEnv, d.KeyName)
			}
		}
		if _, _, err := net.SplitHostPort(d.Resolver); err != nil {
			bad("dns.resolver: %q: write host:port, e.g. 10.0.0.53:53", d.Resolver)
		}
	}
	for name, ch := range c.Channels {
		if ch.WeComRobotEnv != "" && os.Getenv(ch.WeComRobotEnv) == "" {
			bad("channels.%s: environment variable %s is not set (the group robot key)", name, ch.WeComRobotEnv)
		}
		if ch.Mention != "" && ch.Mention != "all" && ch.Mention != "none" {
			bad("channels.%s.mention: %q: write all (everyone in the channel is notified) or none", name, ch.Mention)
		}
	}
	return errs
}

// AllFlows returns the built-in flows overlaid with the configured ones,
// validated.
func (c *Config) AllFlows(executors []string) ([]*flows.Flow, error) {
	builtin, err := flows.Builtin()
	if err != nil {
		return nil, err
	}
	// A built-in flow whose executors this configuration lacks (the
	// Puppet release without gitlab:) is left out.
	var out []*flows.Flow
	for _, f := range builtin {
		if f.UsesOnly(executors) {
			out = append(out, f)
		}
	}
	byName := map[string]int{}
	for i, f := range out {
		byName[f.Name] = i
	}
	for _, f := range c.Flows {
		// Each call validates copies: a running bot's engine holds the
		// flows of an earlier call, which must not change under it.
		f, err := f.Clone()
		if err != nil {
			return nil, err
		}
		if i, ok := byName[f.Name]; ok {
			out[i] = f
		} else {
			byName[f.Name] = len(out)
			out = append(out, f)
		}
	}
	for i, f := range out {
		if err := f.Validate(executors); err != nil {
			return nil, fmt.Errorf("flows[%d]: %w", i, err)
		}
	}
	return out, nil
}

// SlackChannels maps channel names to Slack channel ids.
func (c *Config) SlackChannels() map[string]string {
	out := map[string]string{}
	for name, ch := range c.Channels {
		if ch.Slack != "" {
			out[name] = ch.Slack
		}
	}
	return out
}

// WeComChannelRobots maps channel names to group robot keys.
func (c *Config) WeComChannelRobots() map[string]string {
	out := map[string]string{}
	for name, ch := range c.Channels {
		if k := os.Getenv(ch.WeComRobotEnv); ch.WeComRobotEnv != "" && k != "" {
			out[name] = k
		}
	}
	return out
}

// checkApprovable refuses an approval stage that nobody can ever approve:
// fewer people hold its roles than the approvals it needs, and no admin
// is configured who could grant the role (only admins grant roles). With
// an admin the stage is only warned about (roleWarnings).
func (c *Config) checkApprovable(fl []*flows.Flow) []error {
	holders := map[string][]string{}
	for _, u := range c.Users {
		for _, r := range u.Roles {
			r = state.NormName(r)
			holders[r] = append(holders[r], state.NormName(u.Name))
		}
	}
	if len(holders[flows.AdminRole]) > 0 {
		return nil
	}
	var errs []error
	for _, f := range fl {
		for _, st := range f.Stages {
			if st.Kind != flows.KindApproval {
				continue
			}
			var who []string
			for _, r := range st.Roles {
				for _, u := range holders[state.NormName(r)] {
					if !slices.Contains(who, u) {
						who = append(who, u)
					}
				}
			}
			need := max(st.Approvals, 1)
			if st.ApprovalsIf != nil {
				need = max(need, st.ApprovalsIf.Approvals)
			}
			if len(who) < need && len(st.Roles) > 0 {
				errs = append(errs, fmt.Errorf("flows.%s.stages.%s: nobody can ever approve it: it needs %d approval(s) from %s, held by %d user(s) (%s), and no user has the admin role to grant it; give the role to people in users: (e.g. roles: [%s]) or make someone admin",
					f.Name, st.Name, need, strings.Join(st.Roles, " or "), len(who), strings.Join(who, ", "), st.Roles[0]))
			}
		}
	}
	return errs
}

// roleWarnings names every role a stage waits for that no configured user
// holds, and every user role that no flow uses (with the role it is most
// likely meant to be).
func (c *Config) roleWarnings() []string {
	fl, err := c.AllFlows(c.Executors())
	if err != nil {
		return nil
	}
	held := map[string]bool{}
	for _, u := range c.Users {
		for _, r := range u.Roles {
			held[state.NormName(r)] = true
		}
	}
	used := []string{flows.AdminRole, "auditor"}
	var out []string
	for _, f := range fl {
		for _, r := range append(f.Roles(), f.RequesterRoles...) {
			used = append(used, state.NormName(r))
		}
		for _, st := range f.Stages {
			if st.EscalateTo != "" {
				used = append(used, state.NormName(st.EscalateTo))
			}
			if st.Kind != flows.KindApproval {
				continue
			}
			var holders int
			for _, r := range st.Roles {
				if held[state.NormName(r)] {
					holders++
				}
			}
			if holders == 0 {
				out = append(out, fmt.Sprintf("flows.%s.stages.%s waits for %s, which no user in users: holds; grant it (users: roles: [%s], or /ops role grant %s <user>) or its tickets wait for good",
					f.Name, st.Name, strings.Join(st.Roles, " or "), st.Roles[0], st.Roles[0]))
			}
		}
	}
	for _, u := range c.Users {
		for _, r := range u.Roles {
			if r = state.NormName(r); !slices.Contains(used, r) {
				hint := ""
				if x := flows.Closest(r, used); x != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", x)
				}
				out = append(out, fmt.Sprintf("users.%s.roles: no flow uses the role %q%s", u.Name, r, hint))
			}
		}
	}
	return out
}

// ZoneOrUTC is the configured zone, or UTC when it does not load (config
// check reports that).
func (c *Config) ZoneOrUTC() *time.Location {
	if loc, err := c.Zone(); err == nil {
		return loc
	}
	return time.UTC
}

// Zone is the time zone people read times in: the configured one, the
// host's when none is set.
func (c *Config) Zone() (*time.Location, error) {
	if c.TimeZone == "" {
		return time.Local, nil
	}
	return time.LoadLocation(c.TimeZone)
}

// joinLines joins errors one per indented line.
func joinLines(errs []error) error {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(e.Error())
	}
	return errors.New(b.String())
}
