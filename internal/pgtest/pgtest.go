// Package pgtest runs a real PostgreSQL server for a test package: initdb
// into a temporary directory, postgres on a unix socket there (no TCP),
// one server per test package, a fresh database per test, stopped and
// removed when the package's tests end (Wrap in TestMain).
//
// The server comes from Debian's postgresql package (scripts/deps/
// postgres.list, installed by `make deps`). Where it is not installed or
// does not start, NewDB skips the test and says why. As root the server
// runs as the unprivileged user "postgres" (the package creates it), else
// "nobody", because initdb and postgres refuse to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running PostgreSQL server.
type Server struct {
	Dir    string // temporary directory: data/, the socket, the log
	Socket string // directory of the unix socket
	cmd    *exec.Cmd
	exited chan struct{}
}

var (
	shared    *Server
	sharedErr error
	once      sync.Once
	mu        sync.Mutex
	dbSeq     atomic.Int64
)

// Runner is what TestMain runs (a *testing.M).
type Runner interface{ Run() int }

type wrapped struct{ m Runner }

func (w wrapped) Run() int {
	code := w.m.Run()
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stopping postgres:", err)
		}
		shared = nil
	}
	return code
}

// Wrap returns m, stopping the package's server (if a test started one)
// after its tests: `func TestMain(m *testing.M) { os.Exit(pgtest.Wrap(m).Run()) }`.
func Wrap(m Runner) Runner { return wrapped{m} }

// NewDB returns the URL of a fresh, empty database on the package's
// server, starting the server on first use; it skips t where PostgreSQL
// is not installed or cannot start.
func NewDB(t testing.TB) string {
	t.Helper()
	once.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		var ni notInstalled
		if errors.As(sharedErr, &ni) {
			t.Skipf("pgtest: %v", sharedErr)
		}
		t.Fatalf("pgtest: %v", sharedErr)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	url, err := shared.CreateDB(context.Background(), name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return url
}

type notInstalled struct{ error }

// binDir finds the directory of initdb and postgres: $PATH, else the
// newest /usr/lib/postgresql/<version>/bin.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", notInstalled{errors.New("PostgreSQL is not installed (Debian package postgresql: run scripts/deps.sh postgres as root)")}
}

// runAs returns the credentials to run the server with: as root an
// unprivileged user, else none (the current user).
func runAs() (*syscall.Credential, error) {
	if os.Getuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, notInstalled{errors.New("running as root and found neither user postgres nor nobody to run the server as")}
}

// Start runs initdb into a new temporary directory and starts postgres on
// a unix socket there, with durability off (fsync, synchronous_commit:
// test data only) unless FINCRYPT_PG_FSYNC=1 (benchmarks that compare
// with Pebble's synced writes); Stop stops it and removes the directory.
func Start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fincrypt-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Socket: dir, exited: make(chan struct{})}
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
	}
	cmd := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		return c
	}
	data := filepath.Join(dir, "data")
	init := cmd("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale")
	if out, err := init.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v: %s", err, strings.TrimSpace(string(out))))
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return fail(err)
	}
	defer logf.Close()
	args := []string{"-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "max_connections=300", "-c", "shared_buffers=128MB"}
	if os.Getenv("FINCRYPT_PG_FSYNC") != "1" {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	s.cmd = cmd("postgres", args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Pdeathsig fires when the thread that started the server exits: start
	// it from a goroutine locked to its thread until the server ends, so
	// that the server dies with the test process and only then.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			close(s.exited)
			return
		}
		started <- nil
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		return fail(fmt.Errorf("postgres: %w", err))
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return s, nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return fail(fmt.Errorf("postgres exited at start: %s", strings.TrimSpace(string(log))))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("postgres did not accept connections within a minute: %v", err)
		}
	}
}

// URL is the connection URL of database db on the server.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres:///%s?host=%s&user=postgres&sslmode=disable", db, s.Socket)
}

// CreateDB creates database name and returns its URL.
func (s *Server) CreateDB(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// Stop shuts the server down (fast shutdown, then a kill after 30 s) and
// removes its directory.
func (s *Server) Stop() error {
	defer os.RemoveAll(s.Dir)
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("postgres did not stop within 30 s; killed")
	}
}
