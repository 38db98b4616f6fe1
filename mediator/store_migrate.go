package mediator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pgx/v5"
)

// ErrTargetNotEmpty: migrate copies only into an empty database.
var ErrTargetNotEmpty = errors.New("target database is not empty")

// ErrMigrateMismatch: the copy read back differs from the source.
var ErrMigrateMismatch = errors.New("copied state differs from the source")

// TableCopy is what migrate copied into one table: its rows and a
// checksum over them (the sum, lane by lane mod 2^64, of the SHA-256 of
// each row's columns, so that it does not depend on the order rows come
// back in), equal on both sides.
type TableCopy struct {
	Table    string `json:"table"`
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
}

// MigrateReport lists every table of the schema.
type MigrateReport []TableCopy

type rowSum struct {
	rows int64
	sum  [4]uint64
}

// add hashes one row: each column length-prefixed ([]byte, string) or 8
// bytes big-endian (int64).
func (r *rowSum) add(cols ...any) {
	h := sha256.New()
	var n [8]byte
	for _, c := range cols {
		switch v := c.(type) {
		case []byte:
			binary.BigEndian.PutUint64(n[:], uint64(len(v)))
			h.Write(n[:])
			h.Write(v)
		case string:
			binary.BigEndian.PutUint64(n[:], uint64(len(v)))
			h.Write(n[:])
			h.Write([]byte(v))
		case int64:
			binary.BigEndian.PutUint64(n[:], uint64(v))
			h.Write(n[:])
		default:
			panic(fmt.Sprintf("rowSum: column of type %T", c))
		}
	}
	d := h.Sum(nil)
	for i := range r.sum {
		r.sum[i] += binary.BigEndian.Uint64(d[8*i:])
	}
	r.rows++
}

func (r *rowSum) String() string {
	var b []byte
	for _, v := range r.sum {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return hex.EncodeToString(b)
}

// pgInsert is the statement that writes one row of each table, columns in
// the order of pgColumns.
var pgColumns = map[string]string{
	"nodes":           "id, record",
	"node_contracted": "node, bytes",
	"accounts":        "id, record",
	"pending":         "segment, expires, record",
	"pending_pieces":  "node, piece, segment",
	"segments":        "id, record",
	"pieces":          "node, piece, segment, idx",
	"period_records":  "period, node, account, record",
	"counters":        "name, value",
}

// pebbleRow maps one key-value pair of the Pebble store (store_pebble.go's
// key layout) to its table and row, checking what it decodes.
func pebbleRow(k, v []byte) (string, []any, error) {
	slash := bytes.IndexByte(k, '/')
	if slash < 0 {
		return "", nil, fmt.Errorf("%w: key %x has no prefix", ErrCorrupt, k)
	}
	pfx, rest := string(k[:slash+1]), k[slash+1:]
	want := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("%w: key %q…: %d bytes after the prefix, want %d", ErrCorrupt, pfx, len(rest), n)
		}
		return nil
	}
	v = bytes.Clone(v)
	rest = bytes.Clone(rest)
	switch pfx {
	case pfxNode:
		if err := want(32); err != nil {
			return "", nil, err
		}
		if !json.Valid(v) {
			return "", nil, fmt.Errorf("%w: node record", ErrCorrupt)
		}
		return "nodes", []any{rest, v}, nil
	case pfxContracted:
		if err := want(32); err != nil {
			return "", nil, err
		}
		b, err := be64(v)
		return "node_contracted", []any{rest, b}, err
	case pfxAccount:
		if err := want(32); err != nil {
			return "", nil, err
		}
		if !json.Valid(v) {
			return "", nil, fmt.Errorf("%w: account record", ErrCorrupt)
		}
		return "accounts", []any{rest, v}, nil
	case pfxPending:
		if err := want(16); err != nil {
			return "", nil, err
		}
		p, err := decodePending(v)
		if err != nil {
			return "", nil, err
		}
		return "pending", []any{rest, nanos(p.Expires), v}, nil
	case pfxPendPiece:
		if err := want(64); err != nil {
			return "", nil, err
		}
		if len(v) != 16 {
			return "", nil, fmt.Errorf("%w: pending piece entry", ErrCorrupt)
		}
		return "pending_pieces", []any{rest[:32], rest[32:], v}, nil
	case pfxSegment:
		if err := want(16); err != nil {
			return "", nil, err
		}
		if _, err := decodeSegment(v); err != nil {
			return "", nil, err
		}
		return "segments", []any{rest, v}, nil
	case pfxPiece:
		if err := want(64); err != nil {
			return "", nil, err
		}
		if len(v) != 17 {
			return "", nil, fmt.Errorf("%w: piece index entry", ErrCorrupt)
		}
		return "pieces", []any{rest[:32], rest[32:], v[:16], int64(v[16])}, nil
	case pfxPeriod:
		if err := want(8 + 32 + 32); err != nil {
			return "", nil, err
		}
		if !json.Valid(v) {
			return "", nil, fmt.Errorf("%w: period record", ErrCorrupt)
		}
		return "period_records", []any{int64(binary.BigEndian.Uint64(rest[:8])), rest[8:40], rest[40:], v}, nil
	case pfxCounter:
		n, err := be64(v)
		return "counters", []any{string(rest), n}, err
	}
	return "", nil, fmt.Errorf("%w: unknown key prefix %q", ErrCorrupt, pfx)
}

// MigratePebbleToPostgres copies every record of src into dst, which must
// be empty, in one transaction, then reads dst back and compares row
// counts and checksums per table with the source. src must not change
// meanwhile (the mediator is stopped: OpenPebbleStore holds its lock).
func MigratePebbleToPostgres(ctx context.Context, src *PebbleStore, dst *PostgresStore) (MigrateReport, error) {
	for _, t := range pgTables {
		var exists bool
		if err := dst.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t+`)`).Scan(&exists); err != nil {
			return nil, err
		}
		if exists {
			return nil, fmt.Errorf("%w: table %s has rows", ErrTargetNotEmpty, t)
		}
	}
	want := map[string]*rowSum{}
	for _, t := range pgTables {
		want[t] = &rowSum{}
	}
	snap := src.db.NewSnapshot()
	defer snap.Close()
	err := pgx.BeginTxFunc(ctx, dst.pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
		it, err := snap.NewIter(&pebble.IterOptions{})
		if err != nil {
			return err
		}
		defer it.Close()
		batch := &pgx.Batch{}
		flush := func() error {
			if batch.Len() == 0 {
				return nil
			}
			err := tx.SendBatch(ctx, batch).Close()
			batch = &pgx.Batch{}
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			table, row, err := pebbleRow(it.Key(), v)
			if err != nil {
				return err
			}
			want[table].add(row...)
			ph := make([]string, len(row))
			for i := range ph {
				ph[i] = fmt.Sprintf("$%d", i+1)
			}
			batch.Queue(`INSERT INTO `+table+` (`+pgColumns[table]+`) VALUES (`+strings.Join(ph, ", ")+`)`, row...)
			if batch.Len() >= 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
		return flush()
	})
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	return verifyCopy(ctx, dst, want)
}

// verifyCopy reads every table of dst back and compares it with want.
func verifyCopy(ctx context.Context, dst *PostgresStore, want map[string]*rowSum) (MigrateReport, error) {
	var rep MigrateReport
	var bad []string
	for _, t := range pgTables {
		got, err := tableSum(ctx, dst, t)
		if err != nil {
			return nil, err
		}
		w := want[t]
		if got.rows != w.rows || got.sum != w.sum {
			bad = append(bad, fmt.Sprintf("%s: %d rows (checksum %s), source %d rows (checksum %s)", t, got.rows, got, w.rows, w))
		}
		rep = append(rep, TableCopy{Table: t, Rows: got.rows, Checksum: got.String()})
	}
	if len(bad) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrMigrateMismatch, strings.Join(bad, "; "))
	}
	return rep, nil
}

// tableSum reads table t and sums its rows as rowSum.add does.
func tableSum(ctx context.Context, dst *PostgresStore, t string) (*rowSum, error) {
	rows, err := dst.pool.Query(ctx, `SELECT `+pgColumns[t]+` FROM `+t)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	s := &rowSum{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		cols := make([]any, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case int16:
				cols[i] = int64(v)
			case int32:
				cols[i] = int64(v)
			default:
				cols[i] = v
			}
		}
		s.add(cols...)
	}
	return s, rows.Err()
}

// MigratedSuffix names DIR/db after its state was copied: a mediator
// started on DIR without --db then refuses to run on an empty store, and
// the copy stays as a backup.
const MigratedSuffix = ".migrated"

// MigrateDir copies the state of the stopped mediator in dir (DIR/db)
// into the empty database at url (migrating its schema first), verifies
// the copy, and renames DIR/db to DIR/db.migrated. ErrLocked if a
// mediator runs there; ErrTargetNotEmpty if the database has state.
func MigrateDir(ctx context.Context, dir, url string) (MigrateReport, error) {
	from := filepath.Join(dir, dbDir)
	if _, err := os.Stat(from); err != nil {
		return nil, fmt.Errorf("mediator state %s: %w", from, err)
	}
	if _, err := os.Stat(from + MigratedSuffix); err == nil {
		return nil, fmt.Errorf("%s exists: %s was migrated before", from+MigratedSuffix, from)
	}
	src, err := OpenPebbleStore(from, PebbleOptions{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := OpenPostgresStore(ctx, url, PostgresOptions{})
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	rep, err := MigratePebbleToPostgres(ctx, src, dst)
	if err != nil {
		return rep, err
	}
	if err := src.Close(); err != nil {
		return rep, err
	}
	if err := os.Rename(from, from+MigratedSuffix); err != nil {
		return rep, fmt.Errorf("copied and verified, but moving %s aside: %w", from, err)
	}
	return rep, nil
}
