package bot

// Metrics and health for the people who run opsbot: the ops listener
// (ops.listen; metrics are kept only when it is set) serves /metrics in the Prometheus format, /healthz (the
// process lives) and /readyz (it can do its work). It changes nothing and
// serves no secret, so it may listen beyond loopback. Label values come
// from bounded sets (flows, stages, events, commands, executors, platforms,
// reason classes): never a ticket id or a person.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"opsbot/flows"
	"opsbot/state"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
)

// metrics is the bot's registry and its instruments.
type metrics struct {
	reg            *prometheus.Registry
	commands       *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	stageWait      *prometheus.HistogramVec
	jobs           *prometheus.CounterVec
	jobSeconds     *prometheus.HistogramVec
	deliveryErrors *prometheus.CounterVec
	refused        *prometheus.CounterVec
	integrationUp  *prometheus.GaugeVec
	feedSent       *prometheus.CounterVec
	feedFailures   *prometheus.CounterVec
}

// waitBuckets span a minute to two weeks: how long approvals wait.
var waitBuckets = []float64{60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400}

func newMetrics(b *Bot) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_commands_total",
		Help: "Chat commands and clicks handled, by kind (command, click), command, result (ok, refused, duplicate, error) and refusal code."},
		[]string{"kind", "command", "result", "code"})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_transitions_total",
		Help: "Ticket events committed, by flow, the stage entered and event."}, []string{"flow", "stage", "event"})
	m.stageWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "opsbot_approval_wait_seconds",
		Help: "How long tickets waited in an approval stage before leaving it, by flow and stage.", Buckets: waitBuckets},
		[]string{"flow", "stage"})
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_jobs_total",
		Help: "Jobs (steps) ended, by executor and result (succeeded, failed, interrupted, cancelled, retried)."}, []string{"executor", "result"})
	m.jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "opsbot_job_duration_seconds",
		Help: "How long jobs ran, by executor.", Buckets: prometheus.ExponentialBuckets(0.1, 3, 10)}, []string{"executor"})
	m.deliveryErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_delivery_errors_total",
		Help: "Notification deliveries that failed (and will be retried), by platform."}, []string{"platform"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_inbound_refused_total",
		Help: "Inbound requests refused at the edge, by platform and reason class (signature, freshness, replay, rate_limited, ...)."},
		[]string{"platform", "reason"})
	m.integrationUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "opsbot_integration_up",
		Help: "1 when this process reaches an outside system it is configured with (redis, zookeeper:<ensemble>, gitlab, dns, etcd), 0 when not; probed every 15 s."},
		[]string{"integration"})
	m.feedSent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_feed_delivered_total",
		Help: "Records (ticket events, audit entries) delivered by a webhook or the audit stream, by feed (webhook:<name>, audit:file, audit:http)."}, []string{"feed"})
	m.feedFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "opsbot_feed_failures_total",
		Help: "Delivery attempts of a webhook or the audit stream that failed (retried until give_up_after), by feed."}, []string{"feed"})
	m.reg.MustRegister(m.integrationUp, m.commands, m.transitions, m.stageWait, m.jobs, m.jobSeconds, m.deliveryErrors, m.refused,
		m.feedSent, m.feedFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "opsbot_build_info",
		Help: "Always 1; the labels say which build runs.", ConstLabels: prometheus.Labels{"version": version, "backend": b.store.Backend()}},
		func() float64 { return 1 }))
	// Read at scrape time from the state.
	scrape := func(name, help string, fn func(ctx context.Context) (float64, error)) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			v, err := fn(ctx)
			if err != nil {
				return -1
			}
			return v
		}))
	}
	scrape("opsbot_outbox_depth", "Notifications not delivered yet (-1: the state does not answer).", func(ctx context.Context) (float64, error) {
		n, err := b.store.OutboxLen(ctx)
		return float64(n), err
	})
	scrape("opsbot_outbox_oldest_age_seconds", "Age of the oldest undelivered notification (0: none).", func(ctx context.Context) (float64, error) {
		oldest, err := b.store.OldestUndelivered(ctx)
		if err != nil || oldest.IsZero() {
			return 0, err
		}
		return b.now().Sub(oldest).Seconds(), nil
	})
	scrape("opsbot_state_bytes", "Size of the state (bbolt: pages in use; etcd: the cluster's database).", func(ctx context.Context) (float64, error) {
		return float64(b.store.Used()), nil
	})
	scrape("opsbot_last_backup_timestamp_seconds", "When this process last wrote a backup (0: not since it started).", func(ctx context.Context) (float64, error) {
		return float64(b.lastBackup.Load()), nil
	})
	scrape("opsbot_ready", "1 when this process can do its work (see /readyz for why not).", func(ctx context.Context) (float64, error) {
		if len(b.readiness(ctx)) > 0 {
			return 0, nil
		}
		return 1, nil
	})
	scrape("opsbot_leader", "1 when this replica leads (fires timers, delivers notifications); always 1 on bbolt.", func(ctx context.Context) (float64, error) {
		if b.replica.Leader() {
			return 1, nil
		}
		return 0, nil
	})
	return m
}

// Transition implements flows.Observer.
func (m *metrics) Transition(flow, from, fromKind, to, event string, waited time.Duration) {
	m.transitions.WithLabelValues(flow, to, event).Inc()
	if fromKind == "approval" && waited >= 0 {
		m.stageWait.WithLabelValues(flow, from).Observe(waited.Seconds())
	}
}

// Job implements flows.Observer.
func (m *metrics) Job(executor, result string, took time.Duration) {
	m.jobs.WithLabelValues(executor, result).Inc()
	if result != "retried" && took >= 0 {
		m.jobSeconds.WithLabelValues(executor).Observe(took.Seconds())
	}
}

// command counts a handled command or click.
func (m *metrics) command(click bool, command, result, code string) {
	kind := "command"
	if click {
		kind = "click"
	}
	if command == "" {
		command = "unparsed"
	}
	m.commands.WithLabelValues(kind, command, result, code).Inc()
}

// initLabels gives the series people alert on a value from the start:
// a counter that appears only at its first failure cannot be rated.
func (b *Bot) initLabels() {
	if b.metrics == nil {
		return
	}
	for _, t := range b.trans {
		b.metrics.deliveryErrors.WithLabelValues(t.Platform())
	}
	for _, f := range b.feedList {
		b.metrics.feedSent.WithLabelValues(f.name)
		b.metrics.feedFailures.WithLabelValues(f.name)
	}
}

func (m *metrics) feedDelivered(feed string, n int) { m.feedSent.WithLabelValues(feed).Add(float64(n)) }
func (m *metrics) feedFailed(feed string)           { m.feedFailures.WithLabelValues(feed).Inc() }

// probeLoop checks the outside systems this process is configured with,
// every 15 s, until ctx ends.
func (b *Bot) probeLoop(ctx context.Context) {
	if b.metrics == nil {
		return
	}
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		b.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Bot) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	set := func(name string, err error) {
		v := 1.0
		if err != nil {
			v = 0
		}
		b.metrics.integrationUp.WithLabelValues(name).Set(v)
	}
	if b.redis != nil {
		set("redis", b.redis.Ping(ctx).Err())
	}
	for name, st := range b.zk {
		var err error
		if !st.Up() {
			err = errors.New("no session")
		}
		set("zookeeper:"+name, err)
	}
	if b.etcd != nil {
		set("etcd", b.store.Ping(ctx))
	}
	dial := func(name, addr string) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		set(name, err)
	}
	if u, err := url.Parse(b.cfg.GitLab.BaseURL); err == nil && u.Host != "" {
		port := u.Port()
		if port == "" {
			port = "443"
			if u.Scheme == "http" {
				port = "80"
			}
		}
		dial("gitlab", net.JoinHostPort(u.Hostname(), port))
	}
	if b.cfg.DNS.Server != "" {
		dial("dns", b.cfg.DNS.Server)
	}
}

// opsHandler serves /metrics, /healthz and /readyz; reads only.
func (b *Bot) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSONReply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		not := b.readiness(r.Context())
		if len(not) > 0 {
			writeJSONReply(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "not_ready": not})
			return
		}
		writeJSONReply(w, http.StatusOK, map[string]any{"ready": true, "state": b.store.Backend(), "leader": b.replica.Leader()})
	})
	return mux
}

// readiness is notReady, asked at most every 2 s: scrapes and probes
// coming together do not each write to the state.
func (b *Bot) readiness(ctx context.Context) map[string]string {
	b.readyMu.Lock()
	defer b.readyMu.Unlock()
	if time.Since(b.readyAt) < 2*time.Second {
		return b.readyLast
	}
	b.readyLast, b.readyAt = b.notReady(ctx), time.Now()
	return b.readyLast
}

// notReady says what keeps this process from its work: the state not
// answering or not taking writes, on etcd no lease or a full quota.
func (b *Bot) notReady(ctx context.Context) map[string]string {
	not := map[string]string{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := b.store.Ping(ctx); err != nil {
		not["state"] = "the state does not answer: " + err.Error()
	} else if _, err := b.store.Remember(ctx, "readyz:"+b.replica.ID, b.now(), time.Minute); errors.Is(err, syscall.EROFS) {
		// A filesystem the kernel turned read-only after an error does
		// not say so to statfs; the write does.
		not["state"] = "the state's filesystem (" + b.stateDir() + ") is read-only: no approval can be recorded; repair the disk, then restart opsbot"
	} else if err != nil {
		not["state"] = "the state does not take writes: " + err.Error()
	}
	if msg := diskProblem(b.stateDir()); msg != "" {
		not["state"] = msg
	}
	for _, t := range b.trans {
		if r, ok := t.(interface{ Ready(context.Context) error }); ok {
			if err := r.Ready(ctx); err != nil {
				not[t.Platform()] = err.Error()
			}
		}
	}
	if b.replica.Replicated() {
		if down := b.replica.Down(); down != "" {
			not["replica"] = "no etcd lease: " + down
		}
		if alarms, err := b.store.Alarms(ctx); err == nil && len(alarms) > 0 {
			not["state"] = "etcd alarm raised: " + alarms[0]
		}
	}
	return not
}

// serveOps starts the ops listener when ops.listen is set.
func (b *Bot) serveOps(ctx context.Context) error {
	if b.cfg.Ops.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", b.cfg.Ops.Listen)
	if err != nil {
		return err
	}
	b.opsAddr = ln.Addr().String()
	b.opsSrv = &http.Server{Handler: b.opsHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.opsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("ops listener stopped", "err", err)
		}
	}()
	return nil
}

// OpsAddr is the ops listener's address, once started ("" when off).
func (b *Bot) OpsAddr() string { return b.opsAddr }

// waitingCollector reports, at scrape time, how long the oldest open
// ticket has waited in each approval stage, and each approval stage's
// expiry: an alert compares the two.
type waitingCollector struct {
	b              *Bot
	oldest, expiry *prometheus.Desc
	// The oldest waits are read from every open ticket, at most every
	// 30 s (the alert is about hours and days).
	mu    sync.Mutex
	at    time.Time
	waits map[[2]string]float64
}

func newWaitingCollector(b *Bot) *waitingCollector {
	return &waitingCollector{b: b,
		oldest: prometheus.NewDesc("opsbot_approval_waiting_oldest_seconds",
			"How long the oldest open ticket has waited in an approval stage, by flow and stage (stages with nobody waiting are left out).",
			[]string{"flow", "stage"}, nil),
		expiry: prometheus.NewDesc("opsbot_approval_expiry_seconds",
			"When an approval stage expires (its expire_after), by flow and stage; stages that never expire are left out.",
			[]string{"flow", "stage"}, nil)}
}

func (c *waitingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.oldest; ch <- c.expiry }

func (c *waitingCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ flow, stage string }
	expiring := map[key]float64{}
	for _, name := range c.b.engine.FlowNames() {
		f, _ := c.b.engine.Flow(name)
		for _, st := range f.Stages {
			if st.Kind == flows.KindApproval && st.ExpireAfter.D() > 0 {
				expiring[key{f.Name, st.Name}] = st.ExpireAfter.D().Seconds()
				ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, st.ExpireAfter.D().Seconds(), f.Name, st.Name)
			}
		}
	}
	for k, v := range c.oldestWaits() {
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, v, k[0], k[1])
	}
}

// oldestWaits is how long the oldest open ticket has waited in each
// approval stage (flow, stage), from a read at most 30 s old.
func (c *waitingCollector) oldestWaits() map[[2]string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waits != nil && time.Since(c.at) < 30*time.Second {
		return c.waits
	}
	type key = [2]string
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	oldest := map[key]float64{}
	now := c.b.now()
	_, err := c.b.store.List(ctx, state.Index{Kind: "open"}, func(t state.Ticket) bool {
		f, ok := c.b.engine.Flow(t.Flow)
		if !ok || t.StageAt.IsZero() {
			return false
		}
		if st, _ := f.Stage(t.Stage); st == nil || st.Kind != flows.KindApproval {
			return false
		}
		k := key{t.Flow, t.Stage}
		oldest[k] = max(oldest[k], now.Sub(t.StageAt).Seconds())
		return false
	}, 0, 1)
	if err != nil {
		return c.waits // the last read, if any
	}
	c.waits, c.at = oldest, time.Now()
	return oldest
}

// stateDir is the directory of the bbolt file ("" on etcd).
func (b *Bot) stateDir() string {
	if b.store.Backend() != "bbolt" {
		return ""
	}
	return filepath.Dir(b.store.Path())
}

// minFree is the free space under which the state's disk counts as full:
// a transition may need to grow the file.
const minFree = 4 << 20

// diskProblem says what is wrong with the filesystem holding dir: read
// only, or (nearly) full; "" when nothing.
func diskProblem(dir string) string {
	if dir == "" {
		return ""
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "cannot check the state's disk: " + err.Error()
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return "the state's filesystem (" + dir + ") is read-only: no approval can be recorded"
	}
	if free := st.Bavail * uint64(st.Bsize); free < minFree {
		return fmt.Sprintf("the state's disk (%s) is full: %d bytes free; free space so approvals can be recorded", dir, free)
	}
	return ""
}
