package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/replicate"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/urfave/cli/v2"
)

// The background mount is this binary re-executed with --foreground; the
// parent hands it the password over a pipe (never the environment or argv) and
// waits on a second pipe until the mount is ready or has failed.
const (
	envReadyFD    = "_FINCRYPT_MOUNT_READY_FD"
	envPasswordFD = "_FINCRYPT_MOUNT_PASSWORD_FD"
	mountLogName  = "mount.log"
	mountPIDName  = "mount.pid" // the serving process, while mounted
	fsTypeName    = "fincrypt"  // the mount shows as type fuse.fincrypt
)

func init() {
	register(&cli.Command{
		Name:      "mount",
		Usage:     "mount the vault at MOUNTPOINT and serve it in the background",
		ArgsUsage: "MOUNTPOINT",
		Description: "Everything written under MOUNTPOINT is encrypted before it reaches the disk.\n" +
			"The command returns once the mount is ready; the mount keeps serving in the\n" +
			"background (its log is HOME/mount.log) until `fincrypt umount MOUNTPOINT`.\n" +
			"With --foreground it stays attached and unmounts on Ctrl-C or SIGTERM.\n\n" +
			"As root the mount needs nothing else; other users need fusermount3 (Debian\n" +
			"package fuse3), and --allow-other needs user_allow_other in /etc/fuse.conf.",
		Flags: []cli.Flag{
			passwordFileFlag,
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay attached; unmount on SIGINT/SIGTERM"},
			storeFlag,
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users (root included) use the mount; mode bits and owners are enforced"},
			&cli.BoolFlag{Name: "writeback-cache", Usage: "let the kernel cache writes and send them in large batches (faster; write errors such as a full disk then show at fsync or close, not at write)"},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request, file names included, to the log (very verbose; for debugging only)"},
			&cli.StringFlag{Name: "cache-size", Usage: "bound the local store to `SIZE` once data is durable on the network (default: the config's cache-size; 0 = no limit); what is read is kept, but a big file streamed once only its first 16 MiB"},
			&cli.DurationFlag{Name: "flush-after", Usage: "upload a partly filled segment once its oldest chunk waited this long", Value: 10 * time.Second},
			&cli.DurationFlag{Name: "snapshot-interval", Usage: "while writes go on, a change waits at most this long for a backup of the index to the network (what a restore brings back)", Value: 10 * time.Minute},
			&cli.DurationFlag{Name: "snapshot-delay", Usage: "back the index up once writes and uploads have paused this long", Value: 30 * time.Second},
			&cli.IntFlag{Name: "max-inodes", Value: fs.DefaultMaxInodes, Usage: "past `N` inodes known to the kernel (each costs the mount about 600 bytes), ask the kernel to forget the oldest it does not use (Linux 6.18 and later); a forgotten name is looked up again on its next use; 0 = no bound"},
			versionIntervalFlag,
			syncTimeoutFlag,
			watchBackupsFlag,
		},
		Action: mountAction,
	})
	register(&cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "flush and unmount a mounted vault",
		ArgsUsage: "MOUNTPOINT",
		Description: "Unmounts MOUNTPOINT and waits until the mount process has written\n" +
			"everything to the local store and exited. Fails, changing nothing, while files\n" +
			"under the mount are still open (the kernel says the mount is busy).\n\n" +
			"A vault on a network first uploads what is pending and stores a final index\n" +
			"snapshot, so that a restore brings everything back (progress is shown on a\n" +
			"terminal). If the network does not answer within --sync-timeout, it says in\n" +
			"one line what is not yet restorable and unmounts anyway; the next mount\n" +
			"finishes the upload and the snapshot.",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "how long to wait for the flush"},
			&cli.DurationFlag{Name: "sync-timeout", Usage: "how long the mount may wait for uploads and the final snapshot", DefaultText: "the mount's --sync-timeout"},
		},
		Action: umountAction,
	})
}

func mountpointArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", userErr(exitUsage, "%s: want exactly one MOUNTPOINT (see --help)", c.Command.Name)
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return "", userErr(exitUsage, "mountpoint: %v", err)
	}
	return mnt, nil
}

func mountAction(c *cli.Context) error {
	mnt, err := mountpointArg(c)
	if err != nil {
		return err
	}
	home, err := filepath.Abs(homeDir(c))
	if err != nil {
		return err
	}
	if _, err := vault.ReadKeyFile(home); err != nil {
		return vaultErr(home, err)
	}
	if err := clearDeadMount(c, mnt); err != nil {
		return err
	}
	if fi, err := os.Stat(mnt); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			return userErr(exitUsage, "creating mountpoint: %v", err)
		}
	} else if err != nil {
		return userErr(exitUsage, "mountpoint %s: %v", mnt, err)
	} else if !fi.IsDir() {
		return userErr(exitUsage, "mountpoint %s is not a directory", mnt)
	}
	if isMounted(mnt) {
		return userErr(exitBusy, "%s is already a mount point", mnt)
	}

	var pw []byte
	if fd := os.Getenv(envPasswordFD); fd != "" {
		pw, err = readFD(fd)
	} else {
		pw, err = readPassword(c, "Password", false)
	}
	if err != nil {
		return err
	}
	if !c.Bool("foreground") {
		return spawnMount(c, home, mnt, pw)
	}
	return serveMount(c, home, mnt, pw)
}

func readFD(s string) ([]byte, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("bad fd %q", s)
	}
	f := os.NewFile(uintptr(n), "password")
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<16))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// spawnMount checks the password, starts the background mount process and
// waits until it reports the mount ready or failed.
// maxInodes is --max-inodes as fs.Options.MaxInodes (0: no bound).
func maxInodes(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func spawnMount(c *cli.Context, home, mnt string, pw []byte) error {
	if _, err := vault.Open(home, pw, vault.OpenOptions{}); err != nil {
		return vaultErr(home, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(home, mountLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	pwR, pwW, err := os.Pipe()
	if err != nil {
		return err
	}
	args := []string{"--home", home}
	if c.Bool("debug") {
		args = append(args, "--debug")
	}
	args = append(args, "mount", "--foreground")
	args = append(args, daemonFlagArgs(c)...)
	for _, f := range []string{"allow-other", "debug-fuse", "writeback-cache"} {
		if c.Bool(f) {
			args = append(args, "--"+f)
		}
	}
	if s := c.String("store"); s != "" {
		args = append(args, "--store", s)
	}
	if c.IsSet("cache-size") {
		args = append(args, "--cache-size", c.String("cache-size"))
	}
	if c.IsSet("max-inodes") {
		args = append(args, "--max-inodes", strconv.Itoa(c.Int("max-inodes")))
	}
	for _, f := range []string{"flush-after", "snapshot-interval", "snapshot-delay", "sync-timeout", "version-interval"} {
		if c.IsSet(f) {
			args = append(args, "--"+f, c.Duration(f).String())
		}
	}
	if !c.Bool("watch-backups") {
		args = append(args, "--watch-backups=false")
	}
	args = append(args, mnt)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW, pwR} // fds 3 and 4
	cmd.Env = append(os.Environ(), envReadyFD+"=3", envPasswordFD+"=4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pwR.Close()
		pwW.Close()
		readyW.Close()
		return err
	}
	readyW.Close()
	pwR.Close()
	pwW.Write(pw)
	pwW.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	line, _ := bufio.NewReader(readyR).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		fmt.Printf("Mounted %s at %s (log: %s). Unmount with: fincrypt umount %s\n",
			home, mnt, filepath.Join(home, mountLogName), mnt)
		return nil
	}
	<-exited
	if code, msg, ok := strings.Cut(line, " "); ok {
		if n, err := strconv.Atoi(code); err == nil {
			return userErr(n, "%s", msg)
		}
	}
	return userErr(exitFailure, "the mount process exited before the mount was ready; see %s", filepath.Join(home, mountLogName))
}

// serveMount mounts in this process and serves until unmounted or signalled.
func serveMount(c *cli.Context, home, mnt string, pw []byte) (err error) {
	var ready *os.File
	if fd := os.Getenv(envReadyFD); fd != "" {
		if n, convErr := strconv.Atoi(fd); convErr == nil {
			ready = os.NewFile(uintptr(n), "ready")
		}
	}
	// Report failure to a waiting parent as "CODE message".
	defer func() {
		if ready == nil {
			return
		}
		if err != nil {
			code := exitFailure
			var ue *userError
			if errors.As(err, &ue) {
				code = ue.code
			}
			fmt.Fprintf(ready, "%d %s\n", code, err)
		}
		ready.Close()
	}()

	v, err := vault.Open(home, pw, vault.OpenOptions{Lock: true})
	if err != nil {
		return vaultErr(home, err)
	}
	defer v.Close()
	if stop, err := startCPUProfile(); err != nil {
		return userErr(exitUsage, "%v", err)
	} else {
		defer stop()
	}
	defer heapProfileOnSignal()()
	defer idleCollector(slog.Default())()
	applySettingFlags(c, v)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// One record of failing background work for the file system and the
	// replication engine, shown by `fincrypt status`.
	faults := fault.New(slog.Default().With("component", "background"))
	attach, err := attachReplication(c, v, faults)
	if err != nil {
		return err
	}
	mon := &mountMonitor{networked: attach != nil} // metrics and status page (monitor.go)
	attach = mon.wrap(attach)
	reg := metrics.NewRegistry()
	reg.MustRegister(mon)
	var ops *fs.OpMetrics // FUSE requests, only when served
	if c.IsSet("metrics-listen") {
		ops = fs.NewOpMetrics()
		reg.MustRegister(ops.Collectors()...)
	}
	stopMetrics, err := startMonitor(c, reg, mon.page)
	if err != nil {
		return err
	}
	defer stopMetrics()
	m, err := fs.Mount(v, mnt, fs.Options{
		AllowOther: c.Bool("allow-other"),
		Debug:      c.Bool("debug-fuse"),
		FsName:     fsTypeName + ":" + home,
		Logger:     slog.Default().With("component", "fs"),
		Attach:     attach,
		Faults:     faults,
		Metrics:    ops,

		VersionInterval: c.Duration("version-interval"),
		WritebackCache:  c.Bool("writeback-cache"),
		MaxInodes:       maxInodes(c.Int("max-inodes")),
	})
	if errors.Is(err, fs.ErrIndexDamaged) || errors.Is(err, fs.ErrIndexMissing) || errors.Is(err, meta.ErrForeignIndex) {
		return userErr(exitCorrupt, "mounting %s: %v", mnt, err)
	}
	if err != nil {
		return userErr(exitFailure, "mounting %s: %v", mnt, err)
	}
	setMountVersioner(m)
	mon.mounted(m)
	pidFile := filepath.Join(home, mountPIDName)
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	defer os.Remove(pidFile)
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
		ready = nil
	} else {
		fmt.Fprintf(os.Stderr, "Mounted %s at %s. Press Ctrl-C to unmount.\n", home, mnt)
	}
	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	for {
		select {
		case <-done:
			// Unmounted from outside (fincrypt umount, umount, fusermount -u).
			return m.Unmount()
		case s := <-sigs:
			if s == syscall.SIGHUP {
				continue // the terminal went away; keep serving
			}
			if err := m.Unmount(); err != nil {
				fmt.Fprintf(os.Stderr, "fincrypt: %s: cannot unmount yet (%v); close the files open under it\n", mnt, err)
				continue
			}
			<-done
			return nil
		}
	}
}

func umountAction(c *cli.Context) error {
	mnt, err := mountpointArg(c)
	if err != nil {
		return err
	}
	m, ok := fsutil.FindMount(mnt)
	if !ok || m.FSType != "fuse."+fsTypeName || !strings.HasPrefix(m.Source, fsTypeName+":") {
		return userErr(exitNotFound, "%s is not a mounted fincrypt vault", mnt)
	}
	home := strings.TrimPrefix(m.Source, fsTypeName+":")
	syncWait := syncTimeoutFlag.Value
	if c.IsSet("sync-timeout") {
		syncWait = c.Duration("sync-timeout")
		if err := replicate.SetSyncTimeout(home, syncWait); err != nil && !errors.Is(err, replicate.ErrNotRunning) {
			return userErr(exitFailure, "telling the mount its sync timeout: %v", err)
		}
	}
	started := time.Now()
	if err := syscall.Unmount(mnt, 0); err != nil {
		if errors.Is(err, syscall.EPERM) {
			if out, ferr := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); ferr != nil {
				return userErr(exitFailure, "unmounting %s: %s", mnt, strings.TrimSpace(string(out)))
			}
		} else if errors.Is(err, syscall.EBUSY) {
			return userErr(exitBusy, "%s is busy: close the files and shells open under it, then try again", mnt)
		} else {
			return userErr(exitFailure, "unmounting %s: %v", mnt, err)
		}
	}
	// The mount process flushes, finishes its uploads and final snapshot,
	// and exits, which releases the vault's lock.
	lock := filepath.Join(home, vault.LockFileName)
	wait := c.Duration("timeout") + syncWait
	deadline := time.Now().Add(wait)
	prog := newProgress(c.App.ErrWriter)
	for {
		if !fsutil.Locked(lock) {
			prog.done()
			if msg := readUnmountResult(home, started); msg != "" {
				fmt.Fprintln(c.App.ErrWriter, "fincrypt: "+msg)
			}
			return nil
		}
		if time.Now().After(deadline) {
			prog.done()
			return userErr(exitBusy, "unmounted %s, but the mount process has not finished flushing after %s", mnt, wait)
		}
		prog.poll(home)
		time.Sleep(50 * time.Millisecond)
	}
}

// clearDeadMount detaches a fincrypt mount at mnt whose process is gone
// (it crashed or was killed): the kernel then answers every call on it with
// "transport endpoint is not connected", and the user wants to mount again.
// A mount whose vault is still locked by a live process is left alone.
func clearDeadMount(c *cli.Context, mnt string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	m, ok := fsutil.FindMount(mnt)
	if !ok || m.FSType != "fuse."+fsTypeName || !strings.HasPrefix(m.Source, fsTypeName+":") {
		return nil
	}
	if fsutil.Locked(filepath.Join(strings.TrimPrefix(m.Source, fsTypeName+":"), vault.LockFileName)) {
		return nil
	}
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); errors.Is(err, syscall.EPERM) {
		if out, ferr := exec.Command("fusermount3", "-uz", mnt).CombinedOutput(); ferr != nil {
			return userErr(exitFailure, "clearing the dead mount at %s: %s", mnt, strings.TrimSpace(string(out)))
		}
	} else if err != nil {
		return userErr(exitFailure, "clearing the dead mount at %s: %v", mnt, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "fincrypt: cleared the dead mount at %s left by a mount process that stopped (see its mount.log)\n", mnt)
	return nil
}

// isMounted reports whether mnt is a mount point now.
func isMounted(mnt string) bool { return fsutil.IsMountPoint(mnt) }

// envCPUProfile names a file that a served mount writes a Go CPU profile of
// its whole life to (go tool pprof), for measuring the mount's own work
// under a real workload: FINCRYPT_CPUPROFILE=/tmp/cpu.out fincrypt mount ...
// The profile is written when the mount process ends (unmounted or
// signalled, not killed).
const envCPUProfile = "FINCRYPT_CPUPROFILE"

// envHeapProfile names a file that a served mount writes a Go heap profile
// to (go tool pprof) each time it gets SIGUSR1, overwriting the last: what
// the mount holds in memory at that moment, after a garbage collection.
const envHeapProfile = "FINCRYPT_HEAPPROFILE"

// heapProfileOnSignal writes the heap profile envHeapProfile asks for, if
// any, on each SIGUSR1 until the returned stop is called.
func heapProfileOnSignal() (stop func()) {
	path := os.Getenv(envHeapProfile)
	if path == "" {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for {
			select {
			case <-sig:
				if err := writeHeapProfile(path); err != nil {
					fmt.Fprintf(os.Stderr, "fincrypt: %s: %v\n", envHeapProfile, err)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// writeHeapProfile writes a heap profile of the live objects to path.
func writeHeapProfile(path string) error {
	runtime.GC() // the profile's in-use figures are as of the last collection
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile starts the CPU profile that envCPUProfile asks for, if
// any, and returns what stops it and closes its file.
func startCPUProfile() (stop func(), err error) {
	path := os.Getenv(envCPUProfile)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
