// Package pgrun starts a throwaway PostgreSQL cluster from the machine's PostgreSQL server
// binaries (Debian's postgresql package): initdb into a directory, pg_ctl on a free loopback
// port. It is for tests and the demo, never for production. Postgres refuses to run as root,
// so when the caller is root the cluster runs as the "postgres" user.
package pgrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// ErrNoServer means no PostgreSQL server binaries were found.
var ErrNoServer = errors.New("postgresql server binaries not found (install Debian's postgresql package: scripts/bootstrap.sh)")

// Cluster is a running throwaway cluster.
type Cluster struct {
	Dir  string // data directory
	Port int
	URL  string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	bin  string
	cred *syscall.Credential
}

// BinDir finds the directory holding initdb and pg_ctl: $PG_BINDIR, the newest
// /usr/lib/postgresql/*/bin, or the PATH.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoServer
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start creates (if needed) and starts a cluster in dir, which it creates. A dir that already
// holds a cluster is started again with its data. Stop it with Stop.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown data dir: %w", err)
		}
		if err := reachable(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		if err := c.run(ctx, "initdb", "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
			return nil, err
		}
	}
	c.Port, err = freePort()
	if err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.Port, dir)
	if err := c.run(ctx, "pg_ctl", "-D", dir, "-o", opts, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		return nil, err
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	return c, nil
}

// Stop stops the cluster (fast shutdown) and waits for it to exit.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "fast", "-w", "stop")
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, tool), args...)
	cmd.Dir = c.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Setsid: the server must not receive the terminal's Ctrl-C before we stop it ourselves.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// reachable checks that every ancestor of dir can be traversed by another user, as the
// postgres user must reach the data directory.
func reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("data dir parent: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the postgres user cannot reach the data dir: %s is mode %v (needs o+x)", d, st.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// StartTemp starts a cluster in a new temporary directory that the postgres user can reach.
// stop stops the cluster and removes the directory.
func StartTemp(ctx context.Context) (c *Cluster, stop func() error, err error) {
	parent, err := os.MkdirTemp("", "understudy-pg-")
	if err != nil {
		return nil, nil, fmt.Errorf("temp dir: %w", err)
	}
	if err := os.Chmod(parent, 0o755); err != nil {
		return nil, nil, fmt.Errorf("temp dir: %w", err)
	}
	c, err = Start(ctx, filepath.Join(parent, "data"))
	if err != nil {
		_ = os.RemoveAll(parent)
		return nil, nil, err
	}
	return c, func() error {
		err := c.Stop()
		if rmErr := os.RemoveAll(parent); err == nil {
			err = rmErr
		}
		return err
	}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	return port, nil
}
