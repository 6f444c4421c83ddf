//! Debian's `redis-server` as a child process on the loopback of a test namespace: port chosen
//! by the test, no persistence (`--save ""`, `--appendonly no`), keyspace notifications off
//! (the relay turns them on itself). Killed on drop, and by the kernel if the test process
//! dies first (PR_SET_PDEATHSIG), so it never outlives the test.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// True when redis-server is installed; under `CI=true` its absence is a failure.
pub fn available(test: &str) -> bool {
    if std::path::Path::new(REDIS_SERVER).exists() {
        return true;
    }
    let why = "needs redis-server (cargo xtask setup installs Debian's redis-server)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

pub struct Redis {
    child: Option<Child>,
    pub netns: String,
    pub port: u16,
}

impl Redis {
    /// Starts redis-server on 127.0.0.1:`port` inside `ns` and waits until it answers PING.
    pub fn start(ns: &Netns, port: u16) -> Result<Redis> {
        let mut r = Redis {
            child: None,
            netns: ns.name.clone(),
            port,
        };
        r.restart()?;
        Ok(r)
    }

    /// Starts it again (after [`Redis::kill`]) on the same port, empty.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let port = self.port;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(REDIS_SERVER)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--unixsocket")
            .arg(self.socket_path())
            .args(["--unixsocketperm", "700"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: prctl only, between fork and exec; nsenter execs redis-server in place, and
        // the parent-death signal survives exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("starting redis-server")?);
        let t0 = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("redis-server exited during start-up: {st}");
            }
            if self.command(&["PING"]).is_ok_and(|s| s == "+PONG") {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Its Unix socket (root only): how relays in other namespaces reach it, since a socket
    /// path is not tied to a network namespace.
    pub fn socket_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-redis{}.sock", self.netns, self.port))
    }

    pub fn unix_url(&self, db: u32) -> String {
        format!("unix://{}?db={db}", self.socket_path().display())
    }

    /// One command in RESP on its loopback; returns the first reply line (`+OK`, `:1`, `$5`...).
    /// Bulk replies: the payload line is returned instead of its length line.
    pub fn command(&self, args: &[&str]) -> Result<String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        crate::netns::in_netns(&self.netns, move || -> Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(req.as_bytes())?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line)?;
            if line.starts_with('$') && !line.starts_with("$-1") {
                line.clear();
                r.read_line(&mut line)?;
            }
            Ok(line.trim_end().to_owned())
        })?
    }

    /// redis-server's process id while it runs (nsenter execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Number of keys matching `pattern` in database `db`.
    pub fn count_keys(&self, db: u32, pattern: &str) -> Result<usize> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let req = format!(
            "*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n",
            db.to_string().len(),
            pattern.len()
        );
        crate::netns::in_netns(&self.netns, move || -> Result<usize> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(req.as_bytes())?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line)?;
            anyhow::ensure!(line.starts_with("+OK"), "SELECT {db}: {line}");
            line.clear();
            r.read_line(&mut line)?;
            let n = line
                .trim_end()
                .strip_prefix('*')
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("KEYS reply {line:?}"))?;
            Ok(n)
        })?
    }

    /// Waits (bounded by `limit`) until database `db` holds `n` keys matching `pattern`; panics
    /// with `what` when it does not.
    pub fn wait_keys(&self, db: u32, pattern: &str, n: usize, limit: Duration, what: &str) {
        let t0 = Instant::now();
        while self.count_keys(db, pattern).unwrap() != n {
            assert!(t0.elapsed() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL and wait: Redis dies as it would on a crash (nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.socket_path());
    }
}
