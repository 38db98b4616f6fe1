package mediator

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// The PostgreSQL store (docs/FORMAT.md §5). It speaks only the subset of
// SQL that CockroachDB shares with PostgreSQL: BYTEA, BIGINT, TEXT,
// INSERT ... ON CONFLICT, GREATEST, SERIALIZABLE transactions. Records the
// mediator never queries by field are kept in the same bytes as in the
// Pebble store (JSON for nodes, accounts, pending placements and period
// records; encodeSegment for contracts), so that `fincrypt mediator
// migrate` copies them unchanged; what it queries is a column.

// pgMigrations are the schema versions, in order: migration i brings the
// schema from version i to i+1. Never edit one that has shipped; add one.
var pgMigrations = [][]string{
	{ // version 1
		`CREATE TABLE nodes (id BYTEA PRIMARY KEY, record BYTEA NOT NULL)`,
		`CREATE TABLE node_contracted (node BYTEA PRIMARY KEY, bytes BIGINT NOT NULL)`,
		`CREATE TABLE accounts (id BYTEA PRIMARY KEY, record BYTEA NOT NULL)`,
		`CREATE TABLE pending (segment BYTEA PRIMARY KEY, expires BIGINT NOT NULL, record BYTEA NOT NULL)`,
		`CREATE INDEX pending_expires ON pending (expires)`,
		`CREATE TABLE pending_pieces (node BYTEA NOT NULL, piece BYTEA NOT NULL, segment BYTEA NOT NULL, PRIMARY KEY (node, piece))`,
		`CREATE TABLE segments (id BYTEA PRIMARY KEY, record BYTEA NOT NULL)`,
		`CREATE TABLE pieces (node BYTEA NOT NULL, piece BYTEA NOT NULL, segment BYTEA NOT NULL, idx SMALLINT NOT NULL, PRIMARY KEY (node, piece))`,
		`CREATE TABLE period_records (period BIGINT NOT NULL, node BYTEA NOT NULL, account BYTEA NOT NULL, record BYTEA NOT NULL, PRIMARY KEY (period, node, account))`,
		`CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)`,
	},
}

// PostgresSchemaVersion is the schema version this code writes.
var PostgresSchemaVersion = len(pgMigrations)

// pgTables are the tables of the schema, in migration (copy) order.
var pgTables = []string{"nodes", "node_contracted", "accounts", "pending", "pending_pieces", "segments", "pieces", "period_records", "counters"}

// ErrSchemaNewer means the database was migrated by a newer mediator.
var ErrSchemaNewer = errors.New("database schema is newer than this mediator")

// PostgresOptions tunes OpenPostgresStore.
type PostgresOptions struct {
	// MaxConns bounds the connection pool (0: pgxpool's default, or the
	// URL's pool_max_conns).
	MaxConns int32
	// MaxRetries bounds the attempts of a transaction that hits a
	// serialization failure or a deadlock (0: 20).
	MaxRetries int
}

// PostgresStore is the Store on PostgreSQL (or CockroachDB) through pgx.
type PostgresStore struct {
	pool      *pgxpool.Pool
	retries   int
	closeOnce sync.Once
}

var _ Store = (*PostgresStore)(nil)

// IsPostgresURL reports whether db names a PostgreSQL database
// (postgres:// or postgresql://) rather than a directory.
func IsPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// RedactURL returns url without its password, for logs and errors.
func RedactURL(url string) string {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil || cfg.Password == "" {
		return url
	}
	return strings.Replace(url, ":"+cfg.Password+"@", ":xxxxx@", 1)
}

// OpenPostgresStore connects to url, applies the missing schema
// migrations in one transaction and returns the store. It refuses a
// database whose schema is newer than this code.
func OpenPostgresStore(ctx context.Context, url string, opt PostgresOptions) (*PostgresStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("mediator database %s: %w", RedactURL(url), err)
	}
	if opt.MaxConns > 0 {
		cfg.MaxConns = opt.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("mediator database %s: %w", RedactURL(url), err)
	}
	s := &PostgresStore{pool: pool, retries: opt.MaxRetries}
	if s.retries <= 0 {
		s.retries = 20
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("mediator database %s: %w", RedactURL(url), err)
	}
	return s, nil
}

// migrate brings the schema to PostgresSchemaVersion in one transaction.
func (s *PostgresStore) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INT PRIMARY KEY, applied BIGINT NOT NULL)`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
			return err
		}
		if cur > PostgresSchemaVersion {
			return fmt.Errorf("%w: schema version %d, this mediator knows up to %d (upgrade the mediator)", ErrSchemaNewer, cur, PostgresSchemaVersion)
		}
		for v := cur; v < PostgresSchemaVersion; v++ {
			for _, stmt := range pgMigrations[v] {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("schema migration to version %d: %w", v+1, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version, applied) VALUES ($1, $2)`, v+1, time.Now().Unix()); err != nil {
				return err
			}
		}
		return nil
	})
}

// SchemaVersion returns the schema version of the database.
func (s *PostgresStore) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// Close closes the pool.
func (s *PostgresStore) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() { s.pool.Close(); err = nil })
	return err
}

// retryable reports a serialization failure or a deadlock, after which the
// whole transaction is run again; 23505 (unique violation) only arises
// from racing CREATE TABLE IF NOT EXISTS in the migration, or from two
// racing inserts under PostgreSQL's SERIALIZABLE, which a retry then
// resolves by reading the winner's row.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "23505"
	}
	return false
}

// tx runs fn in one SERIALIZABLE transaction, retrying it from the start
// on serialization failures and deadlocks with bounded, jittered
// exponential backoff (1 ms doubling up to 200 ms, s.retries attempts).
func (s *PostgresStore) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, fn)
		if err == nil || !retryable(err) || attempt >= s.retries {
			if err != nil && retryable(err) {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return err
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// nanos is t as Unix nanoseconds, clamped to int64 (the zero time sorts
// first).
func nanos(t time.Time) int64 {
	if t.Before(time.Unix(0, math.MinInt64)) {
		return math.MinInt64
	}
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

func pgNotFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// PutNode implements Store.
func (s *PostgresStore) PutNode(ctx context.Context, n *Node) error {
	c := *n
	c.Contracted = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO nodes (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = excluded.record`, n.ID[:], b)
	return err
}

const pgNodeSelect = `SELECT n.record, COALESCE(c.bytes, 0) FROM nodes n LEFT JOIN node_contracted c ON c.node = n.id`

func scanNode(row pgx.Row) (*Node, error) {
	var rec []byte
	var contracted int64
	if err := row.Scan(&rec, &contracted); err != nil {
		return nil, pgNotFound(err)
	}
	n := &Node{}
	if err := json.Unmarshal(rec, n); err != nil {
		return nil, fmt.Errorf("%w: node record: %v", ErrCorrupt, err)
	}
	n.Contracted = uint64(contracted)
	return n, nil
}

// GetNode implements Store.
func (s *PostgresStore) GetNode(ctx context.Context, id fnet.NodeID) (*Node, error) {
	n, err := scanNode(s.pool.QueryRow(ctx, pgNodeSelect+` WHERE n.id = $1`, id[:]))
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", id, err)
	}
	return n, nil
}

// ListNodes implements Store.
func (s *PostgresStore) ListNodes(ctx context.Context) ([]*Node, error) {
	rows, err := s.pool.Query(ctx, pgNodeSelect+` ORDER BY n.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// CreateAccount implements Store.
func (s *PostgresStore) CreateAccount(ctx context.Context, a *Account) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO accounts (id, record) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, a.ID[:], b)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrExists
	}
	return nil
}

// GetAccount implements Store.
func (s *PostgresStore) GetAccount(ctx context.Context, id fnet.AccountID) (*Account, error) {
	var rec []byte
	if err := s.pool.QueryRow(ctx, `SELECT record FROM accounts WHERE id = $1`, id[:]).Scan(&rec); err != nil {
		return nil, pgNotFound(err)
	}
	a := &Account{}
	if err := json.Unmarshal(rec, a); err != nil {
		return nil, fmt.Errorf("%w: account record: %v", ErrCorrupt, err)
	}
	return a, nil
}

// PutPending implements Store.
func (s *PostgresStore) PutPending(ctx context.Context, p *Pending) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if len(p.Pieces) != len(p.Nodes) {
		return fmt.Errorf("pending %s: %d pieces for %d nodes", p.Segment, len(p.Pieces), len(p.Nodes))
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO pending (segment, expires, record) VALUES ($1, $2, $3)
			ON CONFLICT (segment) DO UPDATE SET expires = excluded.expires, record = excluded.record`, p.Segment[:], nanos(p.Expires), b); err != nil {
			return err
		}
		for i, n := range p.Nodes {
			if _, err := tx.Exec(ctx, `INSERT INTO pending_pieces (node, piece, segment) VALUES ($1, $2, $3)
				ON CONFLICT (node, piece) DO UPDATE SET segment = excluded.segment`, n[:], p.Pieces[i][:], p.Segment[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

func decodePending(rec []byte) (*Pending, error) {
	p := &Pending{}
	if err := json.Unmarshal(rec, p); err != nil {
		return nil, fmt.Errorf("%w: pending record: %v", ErrCorrupt, err)
	}
	return p, nil
}

// GetPending implements Store.
func (s *PostgresStore) GetPending(ctx context.Context, id SegmentID) (*Pending, error) {
	var rec []byte
	if err := s.pool.QueryRow(ctx, `SELECT record FROM pending WHERE segment = $1`, id[:]).Scan(&rec); err != nil {
		return nil, pgNotFound(err)
	}
	return decodePending(rec)
}

// PendingPlacements implements Store.
func (s *PostgresStore) PendingPlacements(ctx context.Context) ([]*Pending, error) {
	rows, err := s.pool.Query(ctx, `SELECT record FROM pending ORDER BY segment`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Pending
	for rows.Next() {
		var rec []byte
		if err := rows.Scan(&rec); err != nil {
			return nil, err
		}
		p, err := decodePending(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// deletePendingTx removes a pending placement and its piece entries (as
// the Pebble store does, an entry goes whichever placement wrote it last).
func deletePendingTx(ctx context.Context, tx pgx.Tx, p *Pending) error {
	if _, err := tx.Exec(ctx, `DELETE FROM pending WHERE segment = $1`, p.Segment[:]); err != nil {
		return err
	}
	for i, n := range p.Nodes {
		if i >= len(p.Pieces) {
			break
		}
		if _, err := tx.Exec(ctx, `DELETE FROM pending_pieces WHERE node = $1 AND piece = $2`, n[:], p.Pieces[i][:]); err != nil {
			return err
		}
	}
	return nil
}

// DeletePendingBefore implements Store.
func (s *PostgresStore) DeletePendingBefore(ctx context.Context, t time.Time) (int, error) {
	var n int
	err := s.tx(ctx, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `SELECT record FROM pending WHERE expires < $1`, nanos(t))
		if err != nil {
			return err
		}
		var old []*Pending
		for rows.Next() {
			var rec []byte
			if err := rows.Scan(&rec); err != nil {
				rows.Close()
				return err
			}
			p, err := decodePending(rec)
			if err != nil {
				rows.Close()
				return err
			}
			old = append(old, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, p := range old {
			if err := deletePendingTx(ctx, tx, p); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// DeletePending implements Store.
func (s *PostgresStore) DeletePending(ctx context.Context, id SegmentID) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var rec []byte
		if err := tx.QueryRow(ctx, `SELECT record FROM pending WHERE segment = $1`, id[:]).Scan(&rec); err != nil {
			return pgNotFound(err)
		}
		p, err := decodePending(rec)
		if err != nil {
			return err
		}
		return deletePendingTx(ctx, tx, p)
	})
}

// PendingPiece implements Store.
func (s *PostgresStore) PendingPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) (bool, error) {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM pending_pieces WHERE node = $1 AND piece = $2`, node[:], piece[:]).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func getSegmentTx(ctx context.Context, q pgx.Tx, id SegmentID) (*Segment, error) {
	var rec []byte
	if err := q.QueryRow(ctx, `SELECT record FROM segments WHERE id = $1`, id[:]).Scan(&rec); err != nil {
		return nil, fmt.Errorf("segment %s: %w", id, pgNotFound(err))
	}
	return decodeSegment(rec)
}

// claimPieceTx points the index entry of piece on node at (seg, index);
// ErrPieceShared if another segment still holds that piece id there.
func claimPieceTx(ctx context.Context, tx pgx.Tx, seg SegmentID, index int, node fnet.NodeID, piece challenge.PieceID) error {
	var owner []byte
	var oi int
	err := tx.QueryRow(ctx, `SELECT segment, idx FROM pieces WHERE node = $1 AND piece = $2`, node[:], piece[:]).Scan(&owner, &oi)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case len(owner) != len(SegmentID{}):
		return fmt.Errorf("%w: piece index entry", ErrCorrupt)
	case SegmentID(owner) != seg:
		o, err := getSegmentTx(ctx, tx, SegmentID(owner))
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case oi < len(o.Pieces) && o.Pieces[oi].ID == piece && o.Pieces[oi].Node == node:
			return fmt.Errorf("segment %s piece %d: %w: node %s holds piece %s for segment %s", seg, index, ErrPieceShared, node, piece, SegmentID(owner))
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO pieces (node, piece, segment, idx) VALUES ($1, $2, $3, $4)
		ON CONFLICT (node, piece) DO UPDATE SET segment = excluded.segment, idx = excluded.idx`, node[:], piece[:], seg[:], index)
	return err
}

// releasePieceTx deletes the index entry of piece on node if it names seg.
func releasePieceTx(ctx context.Context, tx pgx.Tx, seg SegmentID, node fnet.NodeID, piece challenge.PieceID) error {
	_, err := tx.Exec(ctx, `DELETE FROM pieces WHERE node = $1 AND piece = $2 AND segment = $3`, node[:], piece[:], seg[:])
	return err
}

// addContractedTx adjusts per-node contracted bytes, never below zero.
func addContractedTx(ctx context.Context, tx pgx.Tx, deltas map[fnet.NodeID]int64) error {
	for id, d := range deltas {
		if d == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO node_contracted (node, bytes) VALUES ($1, GREATEST($2::BIGINT, 0))
			ON CONFLICT (node) DO UPDATE SET bytes = GREATEST(node_contracted.bytes + $2::BIGINT, 0)`, id[:], d); err != nil {
			return err
		}
	}
	return nil
}

func addCounterTx(ctx context.Context, tx pgx.Tx, name string, delta int64) (int64, error) {
	var v int64
	err := tx.QueryRow(ctx, `INSERT INTO counters (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value RETURNING value`, name, delta).Scan(&v)
	return v, err
}

func addCountersTx(ctx context.Context, tx pgx.Tx, deltas map[string]int64) error {
	for name, d := range deltas {
		if d == 0 {
			continue
		}
		if _, err := addCounterTx(ctx, tx, name, d); err != nil {
			return err
		}
	}
	return nil
}

// CommitSegment implements Store.
func (s *PostgresStore) CommitSegment(ctx context.Context, seg *Segment) error {
	rec := encodeSegment(seg)
	return s.tx(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM segments WHERE id = $1`, seg.ID[:]).Scan(&one)
		if err == nil {
			return fmt.Errorf("segment %s: %w", seg.ID, ErrExists)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var prec []byte
		err = tx.QueryRow(ctx, `SELECT record FROM pending WHERE segment = $1`, seg.ID[:]).Scan(&prec)
		if err == nil {
			if p, err := decodePending(prec); err == nil {
				if err := deletePendingTx(ctx, tx, p); err != nil {
					return err
				}
			}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO segments (id, record) VALUES ($1, $2)`, seg.ID[:], rec); err != nil {
			return err
		}
		for _, p := range seg.Pieces {
			if !p.Node.IsZero() {
				if err := claimPieceTx(ctx, tx, seg.ID, p.Index, p.Node, p.ID); err != nil {
					return err
				}
			}
		}
		if err := addContractedTx(ctx, tx, pieceNodes(seg)); err != nil {
			return err
		}
		return addCountersTx(ctx, tx, map[string]int64{
			CounterSegments: 1, CounterPieces: int64(len(seg.Pieces)), CounterHealthy: int64(seg.Healthy()),
		})
	})
}

// GetSegment implements Store.
func (s *PostgresStore) GetSegment(ctx context.Context, id SegmentID) (*Segment, error) {
	var rec []byte
	if err := s.pool.QueryRow(ctx, `SELECT record FROM segments WHERE id = $1`, id[:]).Scan(&rec); err != nil {
		return nil, fmt.Errorf("segment %s: %w", id, pgNotFound(err))
	}
	return decodeSegment(rec)
}

// UpdateSegment implements Store.
func (s *PostgresStore) UpdateSegment(ctx context.Context, seg *Segment) error {
	rec := encodeSegment(seg)
	return s.tx(ctx, func(tx pgx.Tx) error {
		old, err := getSegmentTx(ctx, tx, seg.ID)
		if err != nil {
			return err
		}
		if len(old.Pieces) != len(seg.Pieces) {
			return fmt.Errorf("segment %s: update changes the piece count from %d to %d", seg.ID, len(old.Pieces), len(seg.Pieces))
		}
		deltas := map[fnet.NodeID]int64{}
		for i, p := range seg.Pieces {
			o := old.Pieces[i]
			if o.Node == p.Node && o.ID == p.ID {
				continue
			}
			if !o.Node.IsZero() {
				if err := releasePieceTx(ctx, tx, seg.ID, o.Node, o.ID); err != nil {
					return err
				}
				deltas[o.Node] -= old.PieceSize
			}
			if !p.Node.IsZero() {
				if err := claimPieceTx(ctx, tx, seg.ID, i, p.Node, p.ID); err != nil {
					return err
				}
				deltas[p.Node] += seg.PieceSize
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE segments SET record = $2 WHERE id = $1`, seg.ID[:], rec); err != nil {
			return err
		}
		if err := addContractedTx(ctx, tx, deltas); err != nil {
			return err
		}
		return addCountersTx(ctx, tx, map[string]int64{CounterHealthy: int64(seg.Healthy() - old.Healthy())})
	})
}

// DeleteSegment implements Store.
func (s *PostgresStore) DeleteSegment(ctx context.Context, id SegmentID) (*Segment, error) {
	var seg *Segment
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if seg, err = getSegmentTx(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM segments WHERE id = $1`, id[:]); err != nil {
			return err
		}
		for _, p := range seg.Pieces {
			if !p.Node.IsZero() {
				if err := releasePieceTx(ctx, tx, seg.ID, p.Node, p.ID); err != nil {
					return err
				}
			}
		}
		deltas := pieceNodes(seg)
		for n := range deltas {
			deltas[n] = -deltas[n]
		}
		if err := addContractedTx(ctx, tx, deltas); err != nil {
			return err
		}
		return addCountersTx(ctx, tx, map[string]int64{
			CounterSegments: -1, CounterPieces: -int64(len(seg.Pieces)), CounterHealthy: -int64(seg.Healthy()),
		})
	})
	if err != nil {
		return nil, err
	}
	return seg, nil
}

// pgPage is how many rows Segments reads per query.
var pgPage = 1000

// Segments implements Store. It reads pages of pgPage contracts, each
// page one statement (a consistent snapshot), and calls fn between
// queries, so that fn may use the store; a contract changed by another
// caller between two pages shows its newer state, as the mediator's
// callers (which page themselves) already expect.
func (s *PostgresStore) Segments(ctx context.Context, after SegmentID, limit int, fn func(*Segment) error) error {
	cur := after[:]
	op := ">"
	if after == (SegmentID{}) {
		op = ">="
	}
	n := 0
	for {
		page := pgPage
		if limit > 0 && limit-n < page {
			page = limit - n
		}
		if page <= 0 {
			return nil
		}
		rows, err := s.pool.Query(ctx, `SELECT id, record FROM segments WHERE id `+op+` $1 ORDER BY id LIMIT $2`, cur, page)
		if err != nil {
			return err
		}
		var segs []*Segment
		for rows.Next() {
			var id, rec []byte
			if err := rows.Scan(&id, &rec); err != nil {
				rows.Close()
				return err
			}
			seg, err := decodeSegment(rec)
			if err != nil {
				rows.Close()
				return err
			}
			segs = append(segs, seg)
			cur = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		op = ">"
		for _, seg := range segs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(seg); err != nil {
				return err
			}
			n++
		}
		if len(segs) < page {
			return nil
		}
	}
}

// pieceRefs reads the index entries of node (one piece, or all when piece
// is nil) joined with their contracts, in one statement, and keeps those
// the contract still names.
func (s *PostgresStore) pieceRefs(ctx context.Context, node fnet.NodeID, piece []byte) ([]PieceRef, error) {
	q := `SELECT p.piece, p.idx, s.record FROM pieces p JOIN segments s ON s.id = p.segment WHERE p.node = $1`
	args := []any{node[:]}
	if piece != nil {
		q += ` AND p.piece = $2`
		args = append(args, piece)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY p.piece`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PieceRef
	for rows.Next() {
		var pid, rec []byte
		var idx int
		if err := rows.Scan(&pid, &idx, &rec); err != nil {
			return nil, err
		}
		if len(pid) != len(challenge.PieceID{}) {
			return nil, fmt.Errorf("%w: piece index entry", ErrCorrupt)
		}
		seg, err := decodeSegment(rec)
		if err != nil {
			return nil, err
		}
		id := challenge.PieceID(pid)
		if idx >= len(seg.Pieces) || seg.Pieces[idx].ID != id || seg.Pieces[idx].Node != node {
			continue // moved
		}
		out = append(out, PieceRef{Segment: seg.ID, Index: idx, ID: id, Size: seg.PieceSize, Account: seg.Account,
			State: seg.Pieces[idx].State, Price: seg.Pieces[idx].Price})
	}
	return out, rows.Err()
}

// NodePieces implements Store.
func (s *PostgresStore) NodePieces(ctx context.Context, node fnet.NodeID, fn func(PieceRef) error) error {
	refs, err := s.pieceRefs(ctx, node, nil)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// LookupPiece implements Store.
func (s *PostgresStore) LookupPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) (PieceRef, bool, error) {
	refs, err := s.pieceRefs(ctx, node, piece[:])
	if err != nil || len(refs) == 0 {
		return PieceRef{}, false, err
	}
	return refs[0], true, nil
}

// PutPeriodRecords implements Store.
func (s *PostgresStore) PutPeriodRecords(ctx context.Context, recs []PeriodRecord) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		for i := range recs {
			r := &recs[i]
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO period_records (period, node, account, record) VALUES ($1, $2, $3, $4)
				ON CONFLICT (period, node, account) DO UPDATE SET record = excluded.record`, nanos(r.Period), r.Node[:], r.Account[:], v); err != nil {
				return err
			}
		}
		return nil
	})
}

// PeriodRecords implements Store.
func (s *PostgresStore) PeriodRecords(ctx context.Context, from, to time.Time) ([]PeriodRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT record FROM period_records WHERE period >= $1 AND period < $2 ORDER BY period, node, account`, nanos(from), nanos(to))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PeriodRecord
	for rows.Next() {
		var rec []byte
		if err := rows.Scan(&rec); err != nil {
			return nil, err
		}
		var r PeriodRecord
		if err := json.Unmarshal(rec, &r); err != nil {
			return nil, fmt.Errorf("%w: period record: %v", ErrCorrupt, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// AddCounter implements Store.
func (s *PostgresStore) AddCounter(ctx context.Context, name string, delta int64) (int64, error) {
	var v int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		v, err = addCounterTx(ctx, tx, name, delta)
		return err
	})
	return v, err
}

// Counter implements Store.
func (s *PostgresStore) Counter(ctx context.Context, name string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT value FROM counters WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

// be64 decodes an 8-byte big-endian integer of the Pebble store.
func be64(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %d-byte integer", ErrCorrupt, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
