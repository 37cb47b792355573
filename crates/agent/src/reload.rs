//! Telling the workload that new files are in place.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::Reload;
use crate::AgentError;

/// "HUP", "SIGHUP", "hup" -> SIGHUP.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("signal {s:?} is not a signal name like \"HUP\" or \"USR1\""))
}

/// Runs the reload action. A failure is reported, never fatal: the files
/// are already in place and the workload may pick them up on its own.
pub async fn run(action: &Reload) -> Result<(), AgentError> {
    match action {
        Reload::Command { command } => {
            let mut cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..]).kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .map_err(|_| AgentError::Reload(format!("{command:?} ran longer than 30 s")))?
                .map_err(|e| AgentError::Reload(format!("{command:?}: {e}")))?;
            if !out.status.success() {
                return Err(AgentError::Reload(format!(
                    "{command:?} exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        }
        Reload::Signal { signal, pid_file } => {
            let sig = parse_signal(signal).map_err(AgentError::Reload)?;
            let text = tokio::fs::read_to_string(pid_file)
                .await
                .map_err(|e| AgentError::Reload(format!("pid file {}: {e}", pid_file.display())))?;
            let pid: i32 = text.trim().parse().map_err(|_| {
                AgentError::Reload(format!(
                    "pid file {} does not hold a pid ({:?})",
                    pid_file.display(),
                    text.trim()
                ))
            })?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                .map_err(|e| AgentError::Reload(format!("signal {signal} to pid {pid}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("HUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE").is_err());
    }

    #[tokio::test]
    async fn commands_must_succeed_and_signals_need_a_live_pid() {
        let ok = Reload::Command {
            command: vec!["true".into()],
        };
        run(&ok).await.unwrap();
        let bad = Reload::Command {
            command: vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
        };
        let e = run(&bad).await.unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let pid_file = d.path().join("pid");
        std::fs::write(&pid_file, "not a pid").unwrap();
        let sig = Reload::Signal {
            signal: "USR1".into(),
            pid_file: pid_file.clone(),
        };
        assert!(run(&sig)
            .await
            .unwrap_err()
            .to_string()
            .contains("does not hold a pid"));
        // A child that counts the signals it gets.
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "trap 'echo got' USR1; while :; do sleep 0.05; done"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        std::fs::write(&pid_file, child.id().unwrap().to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        run(&sig).await.unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("the signal arrives")
            .unwrap();
        assert_eq!(line.as_deref(), Some("got"));
        let _ = child.kill().await;
    }
}
