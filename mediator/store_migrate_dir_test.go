package mediator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/internal/pgtest"
)

func filledDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	st, err := OpenPebbleStore(filepath.Join(dir, dbDir), PebbleOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	fillStore(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// MigrateDir copies DIR/db into an empty database and moves DIR/db aside;
// it refuses a missing or open store, a store migrated before and a
// database with state, and then leaves DIR/db where it was.
func TestMigrateDir(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDB(t)
	if _, err := MigrateDir(ctx, filepath.Join(t.TempDir(), "none"), url); err == nil {
		t.Fatal("a directory without a store migrated")
	}
	dir := filledDir(t)
	from := filepath.Join(dir, dbDir)
	lock, err := OpenPebbleStore(from, PebbleOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MigrateDir(ctx, dir, url); err == nil || !exists(from) {
		t.Fatalf("a store in use: %v (store still there: %v)", err, exists(from))
	}
	lock.Close()
	if _, err := MigrateDir(ctx, dir, "host="+filepath.Join(t.TempDir(), "nosocket")+" dbname=none connect_timeout=2"); err == nil || !exists(from) {
		t.Fatalf("no database: %v (store still there: %v)", err, exists(from))
	}

	rep, err := MigrateDir(ctx, dir, url)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep) != len(pgTables) || exists(from) || !exists(from+MigratedSuffix) {
		t.Fatalf("after the migration: report %+v, %s there: %v, %s there: %v", rep, from, exists(from), from+MigratedSuffix, exists(from+MigratedSuffix))
	}
	dst, err := OpenPostgresStore(ctx, url, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	src, err := OpenPebbleStore(from+MigratedSuffix, PebbleOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := dump(t, src), dump(t, dst); !reflect.DeepEqual(a, b) {
		t.Fatalf("state differs after MigrateDir:\npebble   %+v\npostgres %+v", a, b)
	}
	src.Close()

	// DIR/db made again beside DIR/db.migrated: refused, both stay.
	again, err := OpenPebbleStore(from, PebbleOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if _, err := MigrateDir(ctx, dir, pgtest.NewDB(t)); err == nil || !strings.Contains(err.Error(), "migrated before") || !exists(from) {
		t.Fatalf("a store migrated before: %v (store still there: %v)", err, exists(from))
	}

	// Into a database that has state: refused, DIR/db stays.
	dir2 := filledDir(t)
	if _, err := MigrateDir(ctx, dir2, url); !errors.Is(err, ErrTargetNotEmpty) || !exists(filepath.Join(dir2, dbDir)) {
		t.Fatalf("into a database with state: %v (store still there: %v)", err, exists(filepath.Join(dir2, dbDir)))
	}
}
