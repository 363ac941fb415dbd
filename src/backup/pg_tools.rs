//! The PostgreSQL client tools, run as child processes with streamed stdin/stdout. Connection
//! settings travel in the environment (never the command line, where `ps` would show them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use crate::postgres::DatabaseTarget;

use super::error::BackupError;

#[derive(Debug, Clone)]
pub struct PgTools {
    bin_dir: Option<PathBuf>,
}

impl PgTools {
    /// `--pg-bin-dir` wins; otherwise Debian's `/usr/lib/postgresql/N/bin` for the newest N that
    /// is at least the server's major version (an older `pg_dump` refuses newer servers);
    /// otherwise whatever is on PATH.
    pub fn locate(explicit: Option<&Path>, server_major: u32) -> Self {
        if let Some(dir) = explicit {
            return Self {
                bin_dir: Some(dir.to_path_buf()),
            };
        }
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|major| *major >= server_major)
            .filter(|major| Path::new(&format!("/usr/lib/postgresql/{major}/bin/pg_dump")).exists())
            .max();
        Self {
            bin_dir: newest.map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin"))),
        }
    }

    fn program(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// A tool that needs no database connection (`pg_restore --list`).
    pub fn plain_command(&self, tool: &str) -> Command {
        Command::new(self.program(tool))
    }

    pub fn command(&self, tool: &str, db: &DatabaseTarget) -> Command {
        let mut cmd = self.plain_command(tool);
        for (k, v) in db.libpq_env() {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn spawn(&self, tool: &str, mut cmd: Command) -> Result<RunningTool, BackupError> {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| BackupError::Tool {
            tool: tool.to_string(),
            reason: format!(
                "cannot start {} ({e}); install the PostgreSQL client tools (Debian: postgresql-client) or pass --pg-bin-dir",
                self.program(tool).display()
            ),
        })?;
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                text
            })
        });
        running().insert(child.id());
        Ok(RunningTool {
            name: tool.to_string(),
            child,
            stderr,
        })
    }

    /// `pg_dump --version`, for the manifest.
    pub fn version(&self, tool: &str) -> String {
        Command::new(self.program(tool))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// A started tool; `finish` waits for it and turns a failure into an error carrying its stderr.
pub struct RunningTool {
    pub name: String,
    pub child: Child,
    stderr: Option<JoinHandle<String>>,
}

/// The tools started and not yet waited for: what an interrupted restore must stop first.
fn running() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u32>> {
    static RUNNING: std::sync::Mutex<std::collections::BTreeSet<u32>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asks every tool still running to stop (SIGTERM): on an interrupt, `pg_restore` would go on
/// writing into a side database that is about to be dropped.
pub fn terminate_running_tools() {
    for pid in running().iter() {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: kill(2) with a pid of our own child and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

impl RunningTool {
    pub fn finish(mut self) -> Result<String, BackupError> {
        let waited = self.child.wait();
        running().remove(&self.child.id());
        let status = waited.map_err(|e| BackupError::Tool {
            tool: self.name.clone(),
            reason: e.to_string(),
        })?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(stderr)
        } else {
            Err(BackupError::Tool {
                tool: self.name.clone(),
                reason: format!("{status}: {}", error_summary(&stderr)),
            })
        }
    }

    /// Stops the tool after a failure elsewhere, so it never runs on unobserved.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        running().remove(&self.child.id());
    }
}

/// The server's `ERROR:` line with its DETAIL/HINT, not the SQL pg_restore echoes after
/// `Command was:`; otherwise the tool's own `error:` lines; otherwise the tail.
pub fn error_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("ERROR:")) {
        let first = lines[i];
        let mut parts = vec![collapse_spaces(&first[first.find("ERROR:").unwrap_or(0)..])];
        parts.extend(
            lines[i + 1..]
                .iter()
                .take_while(|l| l.starts_with("DETAIL:") || l.starts_with("HINT:"))
                .map(|l| collapse_spaces(l)),
        );
        return parts.join(" | ");
    }
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("error:") || l.contains("fatal:") || l.contains("FATAL:"))
        .collect();
    if !errors.is_empty() {
        return errors.join(" | ");
    }
    last_lines(stderr, 5)
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no error output".to_string()
    } else {
        joined
    }
}

/// A libpq connection string naming only the database (the rest comes from the environment).
pub fn dbname_conninfo(dbname: &str) -> String {
    format!(
        "dbname='{}'",
        dbname.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_escapes_quotes() {
        assert_eq!(dbname_conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
    }

    #[test]
    fn the_error_line_wins_over_the_command() {
        let stderr = "pg_restore: error: could not execute query: ERROR:  permission denied to create extension \"postgis\"
HINT:  Must be superuser to create this extension.
Command was: CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;


";
        assert_eq!(
            error_summary(stderr),
            "ERROR: permission denied to create extension \"postgis\" | HINT: Must be superuser to create this extension."
        );
        let multi =
            "pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists
Command was: CREATE TABLE public.x (
    id integer,
    name text
);
";
        assert_eq!(error_summary(multi), "ERROR: relation \"x\" already exists");
        assert_eq!(
            error_summary("pg_restore: error: input file does not appear to be a valid archive\n"),
            "pg_restore: error: input file does not appear to be a valid archive"
        );
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 2), "no error output");
    }
}
