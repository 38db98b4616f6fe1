package mediator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestRedactURL: a database URL's password is replaced in what is logged;
// a URL without one, or one that does not parse, is returned as it is.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://fin:s3cret@db.example:5432/med": "postgres://fin:xxxxx@db.example:5432/med",
		"postgres://fin@db.example/med":             "postgres://fin@db.example/med",
		"postgres:///med?host=/run/postgresql":      "postgres:///med?host=/run/postgresql",
		"postgres://fin:s3cret@db.example:notaport": "postgres://fin:s3cret@db.example:notaport",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPostgresMigratesEachVersion: a database is brought through every
// schema migration in order, from none or from an older version, each
// recorded in schema_version (here with a second, test-only migration).
func TestPostgresMigratesEachVersion(t *testing.T) {
	ctx := context.Background()
	old := pgtest.NewDB(t)
	st, err := OpenPostgresStore(ctx, old, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	defer func(m [][]string, v int) { pgMigrations, PostgresSchemaVersion = m, v }(pgMigrations, PostgresSchemaVersion)
	pgMigrations = append(slices.Clone(pgMigrations), []string{`CREATE TABLE mutall_v2 (x INT)`})
	PostgresSchemaVersion = len(pgMigrations)
	for _, url := range []string{old, pgtest.NewDB(t)} {
		st, err := OpenPostgresStore(ctx, url, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var rows, tables int
		v, err := st.SchemaVersion(ctx)
		if err == nil {
			err = st.pool.QueryRow(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&rows)
		}
		if err == nil {
			err = st.pool.QueryRow(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'mutall_v2'`).Scan(&tables)
		}
		st.Close()
		if err != nil || v != PostgresSchemaVersion || rows != PostgresSchemaVersion || tables != 1 {
			t.Fatalf("after migrating: version %d, %d versions recorded, test table %d, %v; want version %d, each recorded, the table made", v, rows, tables, err, PostgresSchemaVersion)
		}
	}
}

// TestPostgresTxRetriesBounded: a transaction that keeps failing with a
// serialization failure is run exactly MaxRetries times, then its error
// is returned with the count; another error is not retried.
func TestPostgresTxRetriesBounded(t *testing.T) {
	st, err := OpenPostgresStore(context.Background(), pgtest.NewDB(t), PostgresOptions{MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Bounds a tx that would retry for ever (some 600 tries at the
	// backoff's cap of 200 ms).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	calls := 0
	err = st.tx(ctx, func(pgx.Tx) error { calls++; return &pgconn.PgError{Code: "40001"} })
	var pe *pgconn.PgError
	if calls != 3 || !errors.As(err, &pe) || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Fatalf("always a serialization failure: %d runs, %v; want 3 runs and the failure after 3 attempts", calls, err)
	}
	calls = 0
	boom := errors.New("boom")
	if err := st.tx(ctx, func(pgx.Tx) error { calls++; return boom }); calls != 1 || !errors.Is(err, boom) {
		t.Fatalf("another error: %d runs, %v; want 1 run and the error", calls, err)
	}
}
