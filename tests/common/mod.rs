//! Driving the real `moonwire` binary from tests.
#![allow(dead_code)]

pub mod server;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moonwire"))
}

/// The binary run in `dir`, with data in `dir/data`, fast reconnects and
/// nothing inherited from the caller's environment.
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .env_remove("MOONWIRE_CONFIG")
        .env_remove("MOONWIRE_SCRIPTS")
        .env_remove("MOONWIRE_LOG")
        .env("MOONWIRE_DATA_DIR", dir.join("data"))
        .env("MOONWIRE_RECONNECT_BASE_MS", "10");
    c
}

/// Kills the child it holds when dropped, so a test that fails half way
/// leaves no `moonwire run` behind.
pub struct Reaper(pub Option<Child>);

impl Reaper {
    pub fn new(child: Child) -> Reaper {
        Reaper(Some(child))
    }

    /// The child, no longer to be killed.
    pub fn take(&mut self) -> Child {
        self.0.take().expect("the child is still held")
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends SIGTERM to `child` and waits (off the async runtime) for it to
/// exit; answers what it wrote.
pub async fn terminate(child: Child) -> std::process::Output {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("the waiting task")
        .expect("wait for the child")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// `moonwire run` from `c` (the sandbox's command, maybe tweaked), stdin
/// and stdout closed, stderr piped.
pub fn spawn_run(mut c: Command) -> Child {
    c.arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moonwire run")
}

/// Runs `moonwire console` with `input` piped in.
pub fn run_console(mut c: Command, input: &str) -> Output {
    c.arg("console");
    run_piped(c, input)
}

/// Runs `c` (its arguments already given) with `input` piped in.
pub fn run_piped(mut c: Command, input: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn moonwire");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Output {
        stdout: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// A scratch directory with `data/` and `scripts/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("scripts")).expect("scripts dir");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn scripts(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    pub fn script(&self, name: &str, src: &str) -> &Self {
        std::fs::write(self.scripts().join(name), src).expect("write script");
        self
    }

    pub fn cmd(&self) -> Command {
        let mut c = command(self.path());
        c.env("MOONWIRE_SCRIPTS", self.scripts());
        c
    }

    /// Runs the console with `input` piped in; returns stdout lines, stderr.
    pub fn console(&self, input: &str) -> Output {
        self.console_with(input, |_| {})
    }

    /// `tweak` may add arguments after `console`, or environment.
    pub fn console_with(&self, input: &str, tweak: impl FnOnce(&mut Command)) -> Output {
        let mut c = self.cmd();
        c.arg("console");
        tweak(&mut c);
        run_piped(c, input)
    }

    /// A console kept running, fed line by line.
    pub fn session(&self) -> Session {
        self.session_with(|_| {})
    }

    /// `tweak` may add arguments after `console`, or environment.
    pub fn session_with(&self, tweak: impl FnOnce(&mut Command)) -> Session {
        let mut c = self.cmd();
        c.arg("console");
        tweak(&mut c);
        spawn_session(c)
    }
}

/// How long a console test waits for a line before it fails: generous, as
/// a loaded machine may be slow, and only a failing test waits it out.
pub const LINE_WAIT: Duration = Duration::from_secs(20);

/// Starts `moonwire console` from `c`, to be fed line by line.
pub fn session(mut c: Command) -> Session {
    c.arg("console");
    spawn_session(c)
}

/// Starts `c` (a console command line, complete) to be fed line by line.
fn spawn_session(mut c: Command) -> Session {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moonwire");
    let (tx, rx) = channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = stderr.clone();
    let pipe = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut e = err.lock().unwrap();
            e.push_str(&line);
            e.push('\n');
        }
    });
    let stdin = child.stdin.take();
    Session {
        child,
        stdin,
        lines: rx,
        seen: Vec::new(),
        stderr,
        stderr_reader: Some(stderr_reader),
    }
}

pub struct Output {
    pub stdout: Vec<String>,
    pub stderr: String,
    pub code: Option<i32>,
}

impl Output {
    /// Asserts what the bot said, showing stderr when it differs.
    #[track_caller]
    pub fn assert_bot_lines(&self, want: &[&str]) {
        assert_eq!(self.bot_lines(), want, "{}", self.stderr);
    }

    /// stdout without the usual opening state lines.
    pub fn bot_lines(&self) -> Vec<&str> {
        self.stdout
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("* "))
            .collect()
    }
}

pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }

    /// Waits for a stdout line equal to `want`; returns the lines before it.
    pub fn expect(&mut self, want: &str, within: Duration) -> Vec<String> {
        self.wait_line(want, within, |l| l == want).1
    }

    /// Waits for a stdout line starting with `prefix`; answers it.
    pub fn expect_starting(&mut self, prefix: &str, within: Duration) -> String {
        self.wait_line(prefix, within, |l| l.starts_with(prefix)).0
    }

    /// Sends `line`, then waits for a stdout line starting with `until`
    /// (what the line must lead to), so nothing depends on how long that
    /// takes; answers the line that came.
    pub fn step(&mut self, line: &str, until: &str) -> String {
        self.send(line);
        self.expect_starting(until, LINE_WAIT)
    }

    /// Waits for a stdout line `pred` accepts; answers it and the lines
    /// before it.
    pub fn wait_line(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return (line, before);
                    }
                    before.push(line);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {what:?} within {within:?}; saw {:?}\nstderr:\n{}",
                    before,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "console ended before {what:?}; saw {before:?}\nstderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Waits up to `within` for a stdout line `pred` accepts; answers it,
    /// or `None` when none came (or the process ended). Every line read is
    /// kept in `seen`.
    pub fn wait_line_opt(
        &mut self,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// Lines that arrive within `d`.
    pub fn drain(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` (e.g. "INT", "TERM") with stdin still open and waits
    /// for the exit; answers it with the rest of stdout and stderr.
    pub fn signal(mut self, signal: &str) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "still running 20 s after SIG{signal}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest: Vec<String> = self.lines.iter().collect();
        // Give the stderr reader a moment to catch the tail.
        std::thread::sleep(Duration::from_millis(50));
        let err = self.stderr();
        (status, rest, err)
    }

    /// Closes stdin and waits for a clean exit; answers the stdout lines
    /// not seen yet and all of stderr.
    pub fn finish(mut self) -> (Vec<String>, String) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest.iter().cloned());
        // The reader ends at the pipe's end: then stderr is complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let err = self.stderr();
        assert!(status.success(), "console exited with {status}\n{err}");
        (rest, err)
    }

    /// As `finish`, answering every stdout line of the run as an [`Output`].
    pub fn output(self) -> Output {
        let seen = self.seen.clone();
        let (rest, stderr) = self.finish();
        let mut stdout = seen;
        stdout.extend(rest);
        Output {
            stdout,
            stderr,
            code: Some(0),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
