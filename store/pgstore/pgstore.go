// Package pgstore is a store.Store on PostgreSQL (github.com/jackc/pgx/v5),
// with an atomic GCRA mode that runs the GCRA step as one SQL statement so
// that several nodes, or several library users without a node, share one
// exact limit.
//
// # Schema
//
// New creates its schema unless Options.NoCreate is set; the DDL, printed
// by SchemaSQL, is idempotent and runs under an advisory lock so that
// processes starting together do not race:
//
//	CREATE SCHEMA IF NOT EXISTS flux;
//	CREATE TABLE IF NOT EXISTS flux.state (
//	    limiter    text   NOT NULL,
//	    key        bytea  NOT NULL,  -- client keys are bytes, not text
//	    state      bytea  NOT NULL,  -- algorithm.AppendState
//	    idle_at    bigint NOT NULL,  -- Unix ns; 9223372036854775807: never
//	    expires_at bigint NOT NULL,  -- Unix ns; removed by Cleanup after this
//	    PRIMARY KEY (limiter, key)
//	) WITH (fillfactor = 80);
//	CREATE TABLE IF NOT EXISTS flux.gcra (  -- AtomicGCRA records
//	    limiter    text   NOT NULL,
//	    key        bytea  NOT NULL,
//	    tat        bigint NOT NULL,  -- Unix ns
//	    PRIMARY KEY (limiter, key)
//	) WITH (fillfactor = 80);
//
// No column other than the primary key is indexed and the fill factor
// leaves room on each page, so that rewriting a key's state is a HOT
// update; the price is that Cleanup scans the tables.
//
// # Expiry
//
// PostgreSQL has no TTLs. A saved row gets expires_at = max(IdleAt, now) +
// Options.Margin (never for store.NoExpiry), an atomic GCRA row expires at
// tat + Margin, and Cleanup deletes the rows past their expiry. The store
// runs Cleanup every Options.CleanupInterval (one minute by default) in a
// goroutine that Close stops.
//
// # Atomic GCRA
//
// CheckGCRA is one INSERT ... ON CONFLICT DO UPDATE ... WHERE statement
// (with the read of the current TAT in the same statement) applying the
// admission rule of algorithm.GCRA (next = max(TAT, now) + n·T, admitted
// iff next ≤ now + τ + T) and storing next, in bigint nanoseconds with
// saturating arithmetic, exactly as the Go code. The Decision is computed by
// algorithm.GCRA from the TAT the statement returns. A denial is read from
// the statement's snapshot and writes nothing. In the rare case where
// another writer changed the key between the statement's snapshot and its
// row lock, the statement reports a verdict the replay disagrees with, and
// it is run again. Only GCRA (and, the same policy, token-bucket limits
// expressed as GCRA) is supported this way; every algorithm can share an
// exact limit through Update (SELECT ... FOR UPDATE in a transaction).
//
// With Options.ServerTime the statement reads PostgreSQL's clock
// (clock_timestamp(), in microseconds) instead of the now it is given.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxlimiter/flux/algorithm"
	"github.com/fluxlimiter/flux/clock"
	"github.com/fluxlimiter/flux/store"
	"github.com/fluxlimiter/flux/store/internal/gcrastep"
	"github.com/fluxlimiter/flux/store/internal/names"
)

// DefaultSchema holds the store's tables unless Options.Schema says
// otherwise.
const DefaultSchema = "flux"

// DefaultCleanupInterval is how often the store removes expired rows
// unless Options.CleanupInterval says otherwise.
const DefaultCleanupInterval = time.Minute

// maxRows bounds the rows one statement writes or reads.
const maxRows = 1000

// Options configure a Store. The zero value is usable.
type Options struct {
	// Schema holds the tables (DefaultSchema if empty). Stores with
	// different schemas never see each other's data.
	Schema string
	// NoCreate skips creating the schema: it must exist (see SchemaSQL).
	NoCreate bool
	// Clock is the time expiries are computed from (clock.NewSystem() if
	// nil). Pass the limiter's clock.
	Clock clock.Clock
	// Margin is how long rows are kept past their IdleAt
	// (store.DefaultMargin if zero, none if negative).
	Margin time.Duration
	// CleanupInterval is how often expired rows are removed
	// (DefaultCleanupInterval if zero; never if negative: call Cleanup).
	CleanupInterval time.Duration
	// OnCleanup, if set, is told the outcome of every background cleanup,
	// from the store's goroutine.
	OnCleanup func(removed int, err error)
	// ServerTime makes CheckGCRA use PostgreSQL's clock instead of the now
	// it is given.
	ServerTime bool
}

// Store is a PostgreSQL-backed store. It is safe for simultaneous use; the
// pgx pool hands each call its own connection.
type Store struct {
	pool       *pgxpool.Pool
	own        bool
	clk        clock.Clock
	margin     time.Duration
	serverTime bool
	q          queries

	closed atomic.Bool
	base   context.Context // canceled by Close: ends a running cleanup
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.BatchLoader = (*Store)(nil)
	_ store.Updater     = (*Store)(nil)
	_ store.AtomicGCRA  = (*Store)(nil)
	_ store.Pinger      = (*Store)(nil)
	_ store.Cleaner     = (*Store)(nil)
)

// queries are the statements, with the schema filled in.
type queries struct {
	load, loadMany, save, del, updSelect, updUpdate, updInsert string
	gcra, gcraPeek, cleanState, cleanGCRA                      string
}

// SchemaSQL returns the DDL New runs for schema (DefaultSchema if empty),
// for administrators who create it themselves (Options.NoCreate).
func SchemaSQL(schema string) string {
	if schema == "" {
		schema = DefaultSchema
	}
	s := pgx.Identifier{schema}.Sanitize()
	return `CREATE SCHEMA IF NOT EXISTS ` + s + `;
CREATE TABLE IF NOT EXISTS ` + s + `.state (
    limiter    text   NOT NULL,
    key        bytea  NOT NULL,
    state      bytea  NOT NULL,
    idle_at    bigint NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (limiter, key)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS ` + s + `.gcra (
    limiter    text   NOT NULL,
    key        bytea  NOT NULL,
    tat        bigint NOT NULL,
    PRIMARY KEY (limiter, key)
) WITH (fillfactor = 80);
`
}

const maxInt = "9223372036854775807"

func newQueries(schema string) queries {
	s := pgx.Identifier{schema}.Sanitize()
	st, g := s+".state", s+".gcra"
	return queries{
		load:     `SELECT state, idle_at FROM ` + st + ` WHERE limiter = $1 AND key = $2`,
		loadMany: `SELECT key, state, idle_at FROM ` + st + ` WHERE limiter = $1 AND key = ANY($2::bytea[])`,
		save: `INSERT INTO ` + st + ` AS t (limiter, key, state, idle_at, expires_at)
SELECT $1, u.k, u.s, u.i, u.e FROM unnest($2::bytea[], $3::bytea[], $4::int8[], $5::int8[]) AS u(k, s, i, e)
ON CONFLICT (limiter, key) DO UPDATE SET state = excluded.state, idle_at = excluded.idle_at, expires_at = excluded.expires_at`,
		del:       `DELETE FROM ` + st + ` WHERE limiter = $1 AND key = ANY($2::bytea[])`,
		updSelect: `SELECT state, idle_at FROM ` + st + ` WHERE limiter = $1 AND key = $2 FOR UPDATE`,
		updUpdate: `UPDATE ` + st + ` SET state = $3, idle_at = $4, expires_at = $5 WHERE limiter = $1 AND key = $2`,
		updInsert: `INSERT INTO ` + st + ` (limiter, key, state, idle_at, expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		gcra:      gcraSQL(g),
		gcraPeek: `SELECT (SELECT tat FROM ` + g + ` WHERE limiter = $1 AND key = $2),
  COALESCE($3::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)`,
		cleanState: `DELETE FROM ` + st + ` WHERE expires_at < $1`,
		cleanGCRA:  `DELETE FROM ` + g + ` WHERE tat < $1`,
	}
}

// gcraSQL returns the atomic GCRA statement on table g. Parameters: $1
// limiter, $2 key, $3 now (NULL: the server's clock), $4 nT = cost·T, $5
// bound = τ+T. As algorithm.GCRA.Step: next = max(TAT, now) + nT saturated
// at the bigint maximum (a missing TAT is −∞), admitted iff next ≤ now +
// bound (true when that sum exceeds the maximum), and next is stored. It
// returns (admitted, tat, now): the new TAT if admitted, else the TAT of
// the statement's snapshot; no row when the snapshot had no TAT and the
// upsert lost a race.
func gcraSQL(g string) string {
	satAdd := func(x string) string { // x + nT, saturated
		return `CASE WHEN ` + x + ` > ` + maxInt + ` - $4::bigint THEN ` + maxInt + ` ELSE ` + x + ` + $4::bigint END`
	}
	admit := func(tat, now string) string {
		return `CASE WHEN ` + now + ` > ` + maxInt + ` - $5::bigint THEN true
    ELSE ` + satAdd(`GREATEST(`+tat+`, `+now+`)`) + ` <= ` + now + ` + $5::bigint END`
	}
	const now = `(SELECT now FROM t)`
	return `WITH t AS MATERIALIZED (
  SELECT COALESCE($3::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now
), cur AS (
  SELECT tat FROM ` + g + ` WHERE limiter = $1 AND key = $2
), up AS (
  INSERT INTO ` + g + ` AS g (limiter, key, tat)
  SELECT $1, $2, ` + satAdd(`t.now`) + ` FROM t
  WHERE NOT EXISTS (SELECT 1 FROM cur WHERE NOT (` + admit(`cur.tat`, now) + `))
  ON CONFLICT (limiter, key) DO UPDATE
    SET tat = ` + satAdd(`GREATEST(g.tat, `+now+`)`) + `
    WHERE ` + admit(`g.tat`, now) + `
  RETURNING g.tat
)
SELECT true, up.tat, t.now FROM up, t
UNION ALL
SELECT false, cur.tat, t.now FROM cur, t WHERE NOT EXISTS (SELECT 1 FROM up)`
}

// New returns a Store over pool, creating the schema unless opts.NoCreate.
// The caller keeps ownership of pool: Close does not close it.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if opts.Schema == "" {
		opts.Schema = DefaultSchema
	}
	if opts.Clock == nil {
		opts.Clock = clock.NewSystem()
	}
	opts.Margin = store.Margin(opts.Margin)
	if opts.CleanupInterval == 0 {
		opts.CleanupInterval = DefaultCleanupInterval
	}
	s := &Store{
		pool:       pool,
		clk:        opts.Clock,
		margin:     opts.Margin,
		serverTime: opts.ServerTime,
		q:          newQueries(opts.Schema),
	}
	if !opts.NoCreate {
		if err := createSchema(ctx, pool, opts.Schema); err != nil {
			return nil, err
		}
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	if opts.CleanupInterval > 0 {
		s.wg.Go(func() { s.cleanLoop(opts.CleanupInterval, opts.OnCleanup) })
	}
	return s, nil
}

// Open connects to the PostgreSQL server at url (a postgres:// URL or a
// key=value connection string, as pgxpool.ParseConfig reads them), checks
// that it answers, creates the schema, and returns a Store that owns the
// pool: Close closes it.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: connect to %s: %w", cfg.ConnConfig.Host, err)
	}
	s, err := New(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

func createSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Concurrent CREATE ... IF NOT EXISTS can still collide on the
		// catalogs; serialise creators.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('flux.pgstore:' || $1))`, schema); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, SchemaSQL(schema))
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: create schema %q: %w", schema, err)
	}
	return nil
}

// Pool returns the pgx pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping implements store.Pinger: it reports whether PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return s.wrap("ping", s.pool.Ping(ctx))
}

// Close implements store.Store: it stops the cleanup goroutine, waits for
// it, and closes the pool only if Open made it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	if s.own {
		s.pool.Close()
	}
	return nil
}

func (s *Store) cleanLoop(every time.Duration, report func(int, error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.base, max(every, time.Minute))
		n, err := s.Cleanup(ctx)
		cancel()
		if s.base.Err() != nil {
			return // closing: the cleanup was cut short on purpose
		}
		if report != nil {
			report(n, err)
		}
	}
}

// check validates names and the store's state.
func (s *Store) check(limiter string, keys ...string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if limiter == "" || !utf8.ValidString(limiter) || strings.IndexByte(limiter, 0) >= 0 {
		return fmt.Errorf("%w: limiter name %q (want non-empty UTF-8 without NUL)", store.ErrInvalidKey, limiter)
	}
	return names.Keys(keys...)
}

func (s *Store) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case s.closed.Load() && strings.Contains(err.Error(), "closed pool"):
		return fmt.Errorf("pgstore: %s: %w (%w)", op, store.ErrClosed, err)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// retryable reports whether a statement failed only because of a
// deadlock or a serialization failure, and can simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// expiresAt returns when a row idle at idleAt, written at now, expires.
func (s *Store) expiresAt(idleAt, now int64) int64 {
	d, ok := store.TTL(idleAt, now, s.margin)
	if !ok || now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return now + int64(d)
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context, limiter, key string) (store.Entry, bool, error) {
	if err := s.check(limiter, key); err != nil {
		return store.Entry{}, false, err
	}
	e := store.Entry{Key: key}
	err := s.pool.QueryRow(ctx, s.q.load, limiter, []byte(key)).Scan(&e.State, &e.IdleAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Entry{}, false, nil
	}
	if err != nil {
		return store.Entry{}, false, s.wrap("load", err)
	}
	if e.State == nil {
		e.State = []byte{}
	}
	return e, true, nil
}

// LoadMany implements store.BatchLoader with one query per 1000 keys.
func (s *Store) LoadMany(ctx context.Context, limiter string, keys []string, out []store.Entry, found []bool) error {
	if len(out) < len(keys) || len(found) < len(keys) {
		return fmt.Errorf("pgstore: LoadMany: %d keys, room for %d entries and %d flags", len(keys), len(out), len(found))
	}
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	for lo := 0; lo < len(keys); lo += maxRows {
		part := keys[lo:min(lo+maxRows, len(keys))]
		at := make(map[string][]int, len(part))
		args := make([][]byte, 0, len(part))
		for i, k := range part {
			if at[k] == nil {
				args = append(args, []byte(k))
			}
			at[k] = append(at[k], lo+i)
			out[lo+i], found[lo+i] = store.Entry{}, false
		}
		rows, err := s.pool.Query(ctx, s.q.loadMany, limiter, args)
		if err != nil {
			return s.wrap("load", err)
		}
		var (
			k, st []byte
			idle  int64
		)
		_, err = pgx.ForEachRow(rows, []any{&k, &st, &idle}, func() error {
			for _, i := range at[string(k)] {
				out[i] = store.Entry{Key: keys[i], State: append([]byte{}, st...), IdleAt: idle}
				found[i] = true
			}
			return nil
		})
		if err != nil {
			return s.wrap("load", err)
		}
	}
	return nil
}

// Save implements store.Store: one upsert per 1000 distinct keys, in key
// order (so that concurrent saves of overlapping batches cannot deadlock).
func (s *Store) Save(ctx context.Context, limiter string, entries []store.Entry) error {
	if err := s.check(limiter); err != nil {
		return err
	}
	if err := names.EntryKeys(entries); err != nil {
		return err
	}
	now, err := s.clk.Now()
	if err != nil {
		return fmt.Errorf("pgstore: clock: %w", err)
	}
	// The last occurrence of a key wins; an upsert may not touch a row twice.
	last := make(map[string]int, len(entries))
	for i, e := range entries {
		last[e.Key] = i
	}
	idx := make([]int, 0, len(last))
	for _, i := range last {
		idx = append(idx, i)
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(entries[a].Key, entries[b].Key) })
	for lo := 0; lo < len(idx); lo += maxRows {
		part := idx[lo:min(lo+maxRows, len(idx))]
		keys, states := make([][]byte, len(part)), make([][]byte, len(part))
		idles, exps := make([]int64, len(part)), make([]int64, len(part))
		for j, i := range part {
			e := entries[i]
			keys[j], states[j], idles[j], exps[j] = []byte(e.Key), e.State, e.IdleAt, s.expiresAt(e.IdleAt, now)
			if states[j] == nil {
				states[j] = []byte{}
			}
		}
		if err := s.exec(ctx, "save", s.q.save, limiter, keys, states, idles, exps); err != nil {
			return err
		}
	}
	return nil
}

// exec runs a statement, again if it lost a deadlock.
func (s *Store) exec(ctx context.Context, op, sql string, args ...any) error {
	for try := 0; ; try++ {
		_, err := s.pool.Exec(ctx, sql, args...)
		if err == nil || !retryable(err) || try == 3 {
			return s.wrap(op, err)
		}
	}
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, limiter string, keys []string) error {
	if err := s.check(limiter, keys...); err != nil {
		return err
	}
	for lo := 0; lo < len(keys); lo += maxRows {
		part := keys[lo:min(lo+maxRows, len(keys))]
		args := make([][]byte, len(part))
		for i, k := range part {
			args[i] = []byte(k)
		}
		if err := s.exec(ctx, "delete", s.q.del, limiter, args); err != nil {
			return err
		}
	}
	return nil
}

// Update implements store.Updater: SELECT ... FOR UPDATE, then UPDATE or
// INSERT in one transaction; a concurrent first insert makes it run again.
func (s *Store) Update(ctx context.Context, limiter, key string, fn store.UpdateFunc) error {
	if err := s.check(limiter, key); err != nil {
		return err
	}
	bkey := []byte(key)
	for {
		again := false
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			cur := store.Entry{Key: key}
			err := tx.QueryRow(ctx, s.q.updSelect, limiter, bkey).Scan(&cur.State, &cur.IdleAt)
			found := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if found && cur.State == nil {
				cur.State = []byte{}
			}
			if !found {
				cur = store.Entry{Key: key}
			}
			next, write := fn(cur, found)
			if !write {
				return nil
			}
			now, err := s.clk.Now()
			if err != nil {
				return fmt.Errorf("clock: %w", err)
			}
			st := next.State
			if st == nil {
				st = []byte{}
			}
			q := s.q.updUpdate
			if !found {
				q = s.q.updInsert
			}
			tag, err := tx.Exec(ctx, q, limiter, bkey, st, next.IdleAt, s.expiresAt(next.IdleAt, now))
			if err == nil && tag.RowsAffected() == 0 {
				again = true // another writer inserted the key first
			}
			return err
		})
		if err != nil && retryable(err) {
			again = true
		} else if err != nil {
			return s.wrap("update", err)
		}
		if !again {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return s.wrap("update", err)
		}
	}
}

// maxGCRATries bounds how often CheckGCRA runs its statement again after
// racing with another writer; each retry sees a newer snapshot, so more
// than a couple means pathological contention.
const maxGCRATries = 64

// gcraRetries counts CheckGCRA's statement retries (read by tests).
var gcraRetries atomic.Int64

// CheckGCRA implements store.AtomicGCRA with one statement.
func (s *Store) CheckGCRA(ctx context.Context, limiter, key string, g algorithm.GCRA, now, cost int64) (algorithm.Decision, error) {
	nT, bound, err := gcrastep.Args(g, cost)
	if err != nil {
		return algorithm.Decision{}, err
	}
	if err := s.check(limiter, key); err != nil {
		return algorithm.Decision{}, err
	}
	var nowArg *int64
	if !s.serverTime {
		nowArg = &now
	}
	bkey := []byte(key)
	if cost == 0 {
		var tat *int64
		if err := s.pool.QueryRow(ctx, s.q.gcraPeek, limiter, bkey, nowArg).Scan(&tat, &now); err != nil {
			return algorithm.Decision{}, s.wrap("gcra", err)
		}
		t := int64(gcrastep.Fresh)
		if tat != nil {
			t = *tat
		}
		return gcrastep.Decide(g, now, 0, false, t)
	}
	for try := 0; ; try++ {
		var (
			allowed bool
			tat     int64
		)
		err := s.pool.QueryRow(ctx, s.q.gcra, limiter, bkey, nowArg, nT, bound).Scan(&allowed, &tat, &now)
		switch {
		case errors.Is(err, pgx.ErrNoRows): // lost the race for a first insert
		case err != nil && !retryable(err):
			return algorithm.Decision{}, s.wrap("gcra", err)
		case err == nil:
			d, err := gcrastep.Decide(g, now, cost, allowed, tat)
			if err == nil {
				return d, nil
			}
			if allowed { // the statement wrote: a disagreement is a bug, not a race
				return algorithm.Decision{}, fmt.Errorf("pgstore: %w", err)
			}
			// A denial read from a snapshot older than the row lock: run again.
		}
		gcraRetries.Add(1)
		if try == maxGCRATries {
			return algorithm.Decision{}, fmt.Errorf("pgstore: gcra: %d attempts lost to concurrent writers", try+1)
		}
		if err := ctx.Err(); err != nil {
			return algorithm.Decision{}, s.wrap("gcra", err)
		}
	}
}

// Cleanup implements store.Cleaner: it deletes the rows past their expiry
// in both tables.
func (s *Store) Cleanup(ctx context.Context) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	now, err := s.clk.Now()
	if err != nil {
		return 0, fmt.Errorf("pgstore: clock: %w", err)
	}
	cutoff := now - int64(s.margin)
	if cutoff > now {
		cutoff = math.MinInt64
	}
	n := 0
	for _, q := range []struct {
		sql string
		arg int64
	}{{s.q.cleanState, now}, {s.q.cleanGCRA, cutoff}} {
		tag, err := s.pool.Exec(ctx, q.sql, q.arg)
		if err != nil {
			return n, s.wrap("cleanup", err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}
