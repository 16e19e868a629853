//! Running commands: print them, inherit stdio, turn failures into errors with context.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `cmd` with inherited stdio; an error names the command and its exit status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` with its stdout and stderr passed through to ours line by line; on failure the
/// error carries the last `keep` lines of both, so a summary printed at the end of a long run
/// still says why (CI logs keep only their tail).
pub fn run_keeping_tail(cmd: &mut Command, keep: usize) -> anyhow::Result<()> {
    use std::{
        collections::VecDeque,
        io::{BufRead as _, BufReader, Read},
        sync::{Arc, Mutex},
    };
    fn pass<R: Read + Send + 'static>(
        from: R,
        to_stderr: bool,
        tail: Arc<Mutex<VecDeque<String>>>,
        keep: usize,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                if to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == keep {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    }
    eprintln!("$ {}", display(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", display(cmd)))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(keep)));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| pass(o, false, tail.clone(), keep)),
        child
            .stderr
            .take()
            .map(|e| pass(e, true, tail.clone(), keep)),
    ];
    let status = child.wait().context("waiting for the child")?;
    for r in readers.into_iter().flatten() {
        let _ = r.join();
    }
    if !status.success() {
        let tail: Vec<String> = tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .into();
        bail!(
            "`{}` failed ({status}); its last lines:\n{}",
            display(cmd),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout (stderr inherited).
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True if `cmd` runs and exits 0 (quietly).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
