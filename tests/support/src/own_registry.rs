//! A plain `docker-registry serve` of a test's own (no auth, storage in a
//! temporary directory, a free port of 127.0.0.1), for what the two shared
//! registries of `ci/stack.sh` cannot be: one with deletion disabled.
//! Stopped, and its storage removed, when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http, wait_until};

pub struct OwnRegistry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    /// Start one; `delete` says whether it allows `DELETE` of manifests.
    pub fn start(delete: bool) -> OwnRegistry {
        let dir = tempfile::Builder::new().prefix("xtask-registry").tempdir().unwrap();
        let log_path = dir.path().join("registry.log");
        for _ in 0..5 {
            let host = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            let data = dir.path().join("data");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    \
                     enabled: {delete}\nhttp:\n  addr: {host}\n  secret: own-registry-local-only\n",
                    data.display()
                ),
            )
            .unwrap();
            let (mut child, log_start) = serve(&config, &log_path);
            let (mut exited, mut answered) = (None, false);
            wait_until(Duration::from_secs(30), || {
                exited = child.try_wait().unwrap();
                answered = exited.is_none() && http::get(&host, "/v2/").is_ok_and(|(s, _)| s == 200);
                exited.is_some() || answered
            });
            if answered {
                return OwnRegistry { child, host, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if exited.is_some() && log.get(log_start..).unwrap_or_default().contains("address already in use") {
                continue;
            }
            panic!("docker-registry did not answer on {host}\n--- registry log ---\n{log}");
        }
        panic!("no free port for docker-registry after 5 attempts")
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `docker-registry serve CONFIG`, its output appended to `log_path`; with
/// where in that log this run's output starts (for the "address already in
/// use" check of a retry on another port).
pub(crate) fn serve(config: &Path, log_path: &Path) -> (Child, usize) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
    let log_start = log.metadata().unwrap().len() as usize;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry is installed (`bash ci/stack.sh up`)");
    (child, log_start)
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
