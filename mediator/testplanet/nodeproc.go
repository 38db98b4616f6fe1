package testplanet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// nodeEnv, when set (to a node's configuration in JSON), makes a test
// binary that imports testplanet run that storage node instead of its
// tests: Config.NodeProcesses starts each node so, as a process of its
// own, the way users run them.
const nodeEnv = "FINCRYPT_TESTPLANET_NODE"

// nodeProfileEnv, set with nodeEnv, is the file the node's process writes
// its CPU profile to (Config.NodeCPUProfile).
const nodeProfileEnv = "FINCRYPT_TESTPLANET_NODE_CPUPROFILE"

func init() {
	if cfg := os.Getenv(nodeEnv); cfg != "" {
		os.Exit(runNodeProcess(cfg))
	}
}

// runNodeProcess runs the node configured in cfg until SIGTERM.
func runNodeProcess(cfg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var c storagenode.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		log.Error("node process", "err", err)
		return 2
	}
	ident, err := fnet.LoadIdentity(c.Dir)
	if err != nil {
		log.Error("node process", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if path := os.Getenv(nodeProfileEnv); path != "" {
		out, err := os.Create(path)
		if err == nil {
			err = pprof.StartCPUProfile(out)
		}
		if err != nil {
			log.Error("node process: cpu profile", "err", err)
			return 1
		}
		defer out.Close()
		defer pprof.StopCPUProfile()
	}
	peer, err := storagenode.New(log, ident, c)
	if err != nil {
		log.Error("node process", "err", err)
		return 1
	}
	defer peer.Close()
	if err := peer.Run(ctx); err != nil && ctx.Err() == nil {
		log.Error("node process", "err", err)
		return 1
	}
	return 0
}

// startNodeProcess starts node n as a process: this test binary again,
// running no test, killed if the test process dies.
func (p *Planet) startNodeProcess(n *Node) error {
	cfg, err := json.Marshal(n.Config)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+string(cfg))
	if p.cfg.NodeCPUProfile != "" {
		cmd.Env = append(cmd.Env, nodeProfileEnv+"="+p.cfg.NodeCPUProfile+"."+filepath.Base(n.Dir))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.proc, n.done = cmd, done
	return nil
}

// stopNodeProcess stops node n's process and waits for it.
func (p *Planet) stopNodeProcess(n *Node) {
	n.proc.Process.Signal(syscall.SIGTERM)
	if err := <-n.done; err != nil {
		p.t.Logf("node %d's process ended with %v", n.Index, err)
	}
	n.proc = nil
}

// Pid is the process id of the node's process (Config.NodeProcesses), or
// 0 for a node in the test's process or stopped.
func (n *Node) Pid() int {
	if n.proc == nil {
		return 0
	}
	return n.proc.Process.Pid
}

// ProcessCPU is the CPU time (user and system, in clock ticks of
// ProcessTicks a second) that process pid has used so far, from
// /proc/pid/stat: what a benchmark adds to its own for processes it has
// not waited for.
func ProcessCPU(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q %q", pid, f[11], f[12])
	}
	return u + st, nil
}

// ProcessTicks is the clock ticks a second of ProcessCPU (USER_HZ, 100 on
// Linux).
const ProcessTicks = 100
