//! The browser tests' driver: a node script from `tests/browser/` (Debian's chromium driven by
//! playwright-core, through `tests/browser/harness.mjs`) run as a child process, and the line
//! protocol it speaks with its test. The script writes `jetpost-step {"do": …, …}` on stdout
//! when it needs the test (a server started, an event published, the store read) and waits for
//! one JSON line on stdin; the test loops on [`BrowserRun::next_step`], acts, and
//! [`BrowserRun::reply`]s, then calls [`BrowserRun::finish`], which fails the test with the
//! script's whole output if the script failed.
//!
//! A missing node, chromium or playwright-core fails the test (never skips it) saying how to
//! install them. The script runs with its own `TMPDIR`, removed on drop, so chromium's profile
//! goes away even when the script is killed; the script is killed on drop.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a step, or the script's exit, is awaited before the test fails with its output.
pub const BROWSER_PATIENCE: Duration = Duration::from_secs(120);

/// How a script's stdout line asks for a step; the rest of the line is JSON.
const STEP: &str = "jetpost-step ";

const INSTALL: &str = "run scripts/install-tools.sh";

pub struct BrowserRun {
    script: String,
    child: Child,
    /// `None` once closed: the script reads end of file, and a question it asks then fails.
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every stdout line so far, step requests included, in order.
    log: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    finished: bool,
    /// The script's `TMPDIR`.
    tmp: tempfile::TempDir,
}

impl BrowserRun {
    /// Starts `node tests/browser/<script>` with `env` added to the test's environment, stdin
    /// and stdout piped for the steps, stderr collected in the background.
    pub async fn start(script: &str, env: &[(&str, &str)]) -> BrowserRun {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        check_prerequisites(&dir, env).await;
        let tmp = tempfile::Builder::new()
            .prefix("jetpost-browser-")
            .tempdir()
            .expect("a temporary directory for the browser script");
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .current_dir(&dir)
            .env("TMPDIR", tmp.path())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("start node tests/browser/{script}: {err}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let (stderr, stderr_reader) =
            super::collect_output(child.stderr.take().expect("piped stderr"));
        BrowserRun {
            script: script.to_owned(),
            child,
            stdin: Some(stdin),
            stdout,
            log: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
            finished: false,
            tmp,
        }
    }

    /// The next `jetpost-step` request (`{"do": …, …}`), or `None` when the script closed its
    /// stdout (it exited: [`BrowserRun::finish`] tells how). Other stdout lines are kept as log.
    /// Fails the test after [`BROWSER_PATIENCE`] without a step.
    pub async fn next_step(&mut self) -> Option<Value> {
        loop {
            let line = match timeout(BROWSER_PATIENCE, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => return None,
                Ok(Err(err)) => self.fail(&format!("could not be read ({err})")).await,
                Err(_) => {
                    self.fail(&format!("asked no step within {BROWSER_PATIENCE:?}"))
                        .await
                }
            };
            self.log.push(line);
            let line = self.log.last().expect("just pushed");
            if let Some(request) = line.strip_prefix(STEP) {
                match serde_json::from_str(request) {
                    Ok(request) => return Some(request),
                    Err(err) => {
                        self.fail(&format!("asked a step that is not JSON ({err})"))
                            .await
                    }
                }
            }
        }
    }

    /// Answers the current step with `answer` as one JSON line on the script's stdin; an
    /// answer with an `"error"` field makes the script's `ask` throw it.
    pub async fn reply(&mut self, answer: Value) {
        let mut line = answer.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("reply before finish");
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        if let Err(err) = written {
            self.fail(&format!("did not take its answer ({err})")).await;
        }
    }

    /// Closes the script's stdin and waits (at most [`BROWSER_PATIENCE`]) for it to exit; fails
    /// the test with its whole stdout and stderr when it exited non-zero or did not exit.
    pub async fn finish(mut self) {
        self.stdin = None;
        let (stdout, log, child) = (&mut self.stdout, &mut self.log, &mut self.child);
        let exited = timeout(BROWSER_PATIENCE, async {
            while let Ok(Some(line)) = stdout.next_line().await {
                log.push(line);
            }
            child.wait().await
        })
        .await;
        match exited {
            Ok(Ok(status)) if status.success() => self.finished = true,
            Ok(Ok(status)) => self.fail(&format!("failed ({status})")).await,
            Ok(Err(err)) => self.fail(&format!("could not be waited for ({err})")).await,
            Err(_) => {
                self.fail(&format!("did not exit within {BROWSER_PATIENCE:?}"))
                    .await
            }
        }
    }

    /// Fails the test with `what` happened and everything the script printed: stops it first
    /// (its stdin closed, a few seconds to exit, then killed) so that the output is whole.
    async fn fail(&mut self, what: &str) -> ! {
        self.stdin = None;
        if timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        while let Ok(Ok(Some(line))) =
            timeout(Duration::from_secs(5), self.stdout.next_line()).await
        {
            self.log.push(line);
        }
        if let Some(reader) = self.stderr_reader.take() {
            let _ = timeout(Duration::from_secs(5), reader).await;
        }
        self.finished = true;
        panic!("browser script {} {what}\n{}", self.script, self.output());
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.log.join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for BrowserRun {
    /// Kills the script and removes its `TMPDIR`; when the test failed on its side, shows what
    /// the script had done so far.
    fn drop(&mut self) {
        if !self.finished && std::thread::panicking() {
            eprintln!(
                "browser script {} (killed: the test failed)\n{}",
                self.script,
                self.output()
            );
        }
        let _ = self.child.start_kill();
        // A killed script's chromium exits on its own (its pipe to playwright closes), writing its
        // profile as it goes, parent directories included: the directory is removed (by the
        // TempDir) once no process has it on its command line.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs_in(self.tmp.path()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a process runs with `dir` in its command line: the script's chromium has its profile
/// (`--user-data-dir`) in there.
fn runs_in(dir: &Path) -> bool {
    let dir = dir.as_os_str().as_bytes();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        std::fs::read(process.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(dir.len()).any(|part| part == dir))
    })
}

/// node runs, chromium is where the harness will look for it (`CHROMIUM_BIN` or
/// `/usr/bin/chromium`), and playwright-core is installed; else the test fails saying how.
async fn check_prerequisites(dir: &Path, env: &[(&str, &str)]) {
    match Command::new("node").arg("--version").output().await {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the browser tests need node, and `node --version` failed ({}): {INSTALL}",
            out.status
        ),
        Err(err) => panic!("the browser tests need node ({err}): {INSTALL}"),
    }
    let chromium = env
        .iter()
        .find(|(name, _)| *name == "CHROMIUM_BIN")
        .map(|(_, path)| PathBuf::from(path))
        .or_else(|| std::env::var_os("CHROMIUM_BIN").map(PathBuf::from))
        .filter(|path| !path.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "the browser tests need chromium at {}: {INSTALL}",
        chromium.display()
    );
    let playwright = dir.join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "the browser tests need playwright-core in {}: {INSTALL}",
        dir.join("node_modules").display()
    );
}
