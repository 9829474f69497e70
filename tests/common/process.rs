//! `mishards` subcommands as child processes: started with a clean environment, their announced
//! addresses read from stdout, stopped with SIGTERM (then SIGKILL) and killed when dropped.

use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lines a child writes to `out`, as they come, read on a thread of their own (so a test can wait
/// for one with a timeout).
pub fn lines_of(out: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub struct Process {
    child: Child,
    /// The address of each `… listening on ADDR` line the process printed at start, in order.
    pub addrs: Vec<String>,
    /// Its stdout lines not read yet.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// Runs `mishards ARGS…` and waits (at most 30 s) until it has announced `listeners` addresses.
    pub fn start(args: &[&str], env: &[(&str, &str)], listeners: usize) -> Process {
        let mut process = Process::spawn(args, env);
        let deadline = Instant::now() + Duration::from_secs(30);
        while process.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = process.lines.recv_timeout(left) else {
                break;
            };
            if let Some((_, addr)) = line.split_once("listening on ") {
                process.addrs.push(addr.trim().to_string());
            }
        }
        if process.addrs.len() < listeners {
            let _ = process.child.kill();
            let mut err = String::new();
            if let Some(mut e) = process.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("mishards {args:?} did not start: {err}");
        }
        process
    }

    /// Runs `mishards ARGS…` without waiting for anything.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mishards"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mishards");
        let stdout = child.stdout.take().expect("stdout");
        let lines = lines_of(stdout);
        Process {
            child,
            addrs: Vec::new(),
            lines,
        }
    }

    /// Waits (without blocking an async runtime's thread, polling every 20 ms, at most `limit`) for
    /// the next stdout line starting with `prefix`, and returns the rest of it; lines before it are
    /// skipped. Panics, with what the process logged, when none comes or the process ends.
    pub async fn line_after(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                    continue;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("no `{prefix}…` line within {limit:?}; the process logged: {err}");
                }
            }
        }
    }

    /// The rest of the next stdout line starting with `prefix`, if one has come (lines before it are
    /// skipped); never waits.
    pub fn try_line(&mut self, prefix: &str) -> Option<String> {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_string());
            }
        }
        None
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `mishards node` of `role` on 127.0.0.1, on a port the system picks, over `storage`, with
    /// `extra` flags after those; waits until it listens (see `start`).
    pub fn local_node(role: &str, storage: &str, extra: &[&str], env: &[(&str, &str)]) -> Process {
        let mut args = vec![
            "node",
            "--role",
            role,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            storage,
        ];
        args.extend_from_slice(extra);
        Process::start(&args, env, 1)
    }

    /// A `mishards gateway` on 127.0.0.1, on a port the system picks, with its admin listener on
    /// another, with `extra` flags after those; waits until both listen (see `start`).
    pub fn local_gateway(extra: &[&str], env: &[(&str, &str)]) -> Process {
        let mut args = vec![
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "0",
        ];
        args.extend_from_slice(extra);
        Process::start(&args, env, 2)
    }

    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    /// Stops the process with SIGTERM (SIGKILL after 20 s) and returns what it logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
