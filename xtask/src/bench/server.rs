//! A `tollgate serve` started by the bench on `127.0.0.1:0`: waits for its address, reads its
//! peak RSS, and stops it with `kill -TERM <its pid>` (also when dropped on an error path).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{ACCEPTANCE_WINDOW, ADMIN_KEY, Bench};

/// How long a stopping server may take to flush and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: std::path::PathBuf,
}

impl Server {
    /// Starts the server on `data_dir`; its stderr goes to `data_dir`.log.
    pub fn start(bench: &Bench, data_dir: &Path) -> anyhow::Result<Server> {
        Server::start_with(bench, data_dir, &[])
    }

    /// [`Server::start`] with extra `serve` flags.
    pub fn start_with(bench: &Bench, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd: Command = bench.tollgate();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--acceptance-window", ACCEPTANCE_WINDOW])
            .args(extra)
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().context("starting tollgate serve")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the address, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if !sent => {
                        if let Some(addr) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send(addr.to_owned());
                            sent = true;
                        }
                    }
                    Ok(_) => {}
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            log,
        };
        // Opening replays every frame (about a second per million events).
        match rx.recv_timeout(bench.budget(60, 20_000)) {
            Ok(base) if base.starts_with("http://127.0.0.1:") => {
                server.base = base;
                Ok(server)
            }
            Ok(other) => bail!("the server listens on {other}, not on 127.0.0.1"),
            Err(_) => bail!(
                "tollgate serve did not print its address; its log:\n{}",
                server.log_tail()
            ),
        }
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.child.as_ref().context("server already stopped")?.id())
    }

    /// The server's peak resident set so far.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        super::peak_rss_of(self.pid()?)
    }

    /// `kill -TERM <pid>`, then waits for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(&mut child)?;
        if !status.success() {
            bail!(
                "tollgate serve exited with {status}; its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        super::tail(&text, 4_000).to_owned()
    }
}

/// Sends SIGTERM to this child (by its pid) and waits; SIGKILL on the same child if it does
/// not exit within [`STOP_TIMEOUT`].
fn terminate(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("running kill")?;
    if !sent.success() {
        bail!("kill -TERM {pid} failed");
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > STOP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "tollgate serve (pid {pid}) did not stop within {} s of SIGTERM; killed it",
                STOP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = terminate(&mut child)
        {
            eprintln!("bench: stopping the server: {e:#}");
        }
    }
}
