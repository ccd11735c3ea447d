//! A throwaway `redis-server` for tests (feature `test-support`).
//!
//! Each [`RedisServer`] runs its own process on a free port with its own directory and no
//! persistence, so tests never touch a shared Redis (nor the one on 6379) and can kill and
//! restart it at will. The process is killed when the value is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to try while waiting.
const START_POLL: Duration = Duration::from_millis(10);
/// Ports tried when another process takes the free port first.
const START_TRIES_MAX: usize = 5;

/// A `redis-server` child process on 127.0.0.1 and a free port.
#[derive(Debug)]
pub struct RedisServer {
    /// The running process, `None` after [`kill`](RedisServer::kill).
    child: Option<Child>,
    /// Its port.
    port: u16,
    /// Its working directory (log file), removed on drop.
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    // Bind port 0, read what the kernel picked, let it go: a small race with other processes,
    // covered by retrying in `start`.
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a local port");
    listener.local_addr().expect("a bound listener has an address").port()
}

fn spawn(port: u16, dir: &Path) -> Child {
    let result = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match result {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not on PATH; install it (apt-get install redis-server) to run the \
             Redis tests"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

/// Whether the server on `port` answers PING.
fn pings(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0_u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Waits until the server answers PING; false when it exits or takes longer than 5 s.
fn wait_until_up(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if pings(port) {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(START_POLL);
    }
    false
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up within 5 s.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        for _ in 0..START_TRIES_MAX {
            let port = free_port();
            let mut child = spawn(port, dir.path());
            if wait_until_up(&mut child, port) {
                return RedisServer { child: Some(child), port, dir };
            }
            // Most likely the port was taken between our probe and the server's bind.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start after {START_TRIES_MAX} tries; see its log");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL): no shutdown, no save, every connection dropped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the same port (empty: no persistence), waiting
    /// until it answers.
    ///
    /// # Panics
    /// When the new server does not come up within 5 s.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = spawn(self.port, self.dir.path());
        let up = wait_until_up(&mut child, self.port);
        self.child = Some(child);
        assert!(up, "redis-server did not come back on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
