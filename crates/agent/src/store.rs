//! The on-disk versions of one intent's key and certificate.
//!
//! A key and its certificate are two files, and no rename swaps two files
//! at once. So each version is a complete directory (`v/<n>/key.pem`,
//! `cert.pem`, `chain.pem`, every file and the directory fsynced) and the
//! switch is one atomic rename of the `current` symlink. The paths the
//! workload reads (`key_file`, `cert_file`, ...) are symlinks through
//! `current`: at every instant, also after a crash at any point, they name
//! a key and the certificate issued for it. `previous` keeps the prior
//! version for rollback and inspection.
//!
//! A renewal's new key is first written to `pending/` with the idempotency
//! key of its request, so an agent restarted mid-renewal asks again with
//! the same key and request and gets the same certificate back instead of
//! a second one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{cert_info, key_matches, CertInfo};
use crate::AgentError;

/// The env var that makes the agent kill itself at a named point, so tests
/// can crash a real agent process exactly there. Unset in production.
pub const FAILPOINT_ENV: &str = "QUORUMCA_AGENT_FAILPOINT";

fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: killing the agent");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> AgentError {
    move |e| AgentError::Files(format!("{what}: {e}"))
}

/// Files of a version, as installed.
#[derive(Clone, Debug)]
pub struct Version {
    /// The version's directory.
    pub dir: PathBuf,
    /// Its private key, PEM.
    pub key_pem: String,
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// The certificate and its intermediate, PEM.
    pub chain_pem: String,
    /// What the certificate says.
    pub info: CertInfo,
    /// When this version was installed (Unix seconds): the start of its
    /// useful life, as `not_before` is backdated for clock skew.
    pub installed_at: i64,
    /// What the cluster said when issuing it.
    pub meta: VersionMeta,
}

/// What the cluster said about a version's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// The issuer that signed it.
    pub issuer: String,
    /// The namespace it was issued in.
    pub namespace: String,
}

/// How written files are owned and protected.
#[derive(Clone, Copy, Debug)]
pub struct Perms {
    /// Mode of the private key file.
    pub key_mode: u32,
    /// Mode of certificate, chain and bundle files.
    pub cert_mode: u32,
    /// Owner uid and gid of the written files, if set.
    pub owner: Option<(u32, u32)>,
}

/// A renewal in flight: its key and its request's idempotency key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// Sent with the request, so a retry after a crash gets the same certificate.
    pub idempotency_key: String,
    /// Serial of the certificate being renewed (None: a first issuance).
    pub from_serial: Option<String>,
    /// The key the request's CSR was made for (kept in `pending/key.pem`, not in the JSON).
    #[serde(skip)]
    pub key_pem: String,
}

/// One intent's directory: its installed versions, the `current` and `previous` links, and a
/// renewal in flight.
pub struct Store {
    dir: PathBuf,
}

/// Writes `data` to a new file with `mode` and fsyncs it.
fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path.display()))?;
    // The umask may have narrowed the mode; the intent's mode is the rule.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(path.display()))?;
    f.write_all(data).map_err(io(path.display()))?;
    f.sync_all().map_err(io(path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.display()))
}

/// Replaces (or creates) `path` with `data` atomically: a temporary file
/// beside it, fsynced, renamed over it, and the directory fsynced.
pub fn replace_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let parent = parent_of(path);
    fs::create_dir_all(&parent).map_err(io(parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    write_synced(&tmp, data, mode)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(io(tmp.display()))?;
    }
    fs::rename(&tmp, path).map_err(io(path.display()))?;
    sync_dir(&parent)
}

/// Points the symlink `link` at `target`, atomically (a new link renamed
/// over the old one or over a plain file).
fn swap_symlink(link: &Path, target: &Path) -> Result<(), AgentError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let parent = parent_of(link);
    fs::create_dir_all(&parent).map_err(io(parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.link.tmp",
        link.file_name().and_then(|n| n.to_str()).unwrap_or("link")
    ));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(io(tmp.display()))?;
    fs::rename(&tmp, link).map_err(io(link.display()))?;
    sync_dir(&parent)
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// "user:group" (names or numbers) to (uid, gid).
pub fn resolve_owner(spec: &str) -> Result<(u32, u32), String> {
    let (u, g) = spec
        .split_once(':')
        .ok_or_else(|| format!("owner {spec:?} must be user:group"))?;
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .ok_or_else(|| format!("owner {spec:?}: no user {u:?} on this host"))?
            .uid
            .as_raw(),
    };
    let gid = match g.parse::<u32>() {
        Ok(n) => n,
        Err(_) => nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .ok_or_else(|| format!("owner {spec:?}: no group {g:?} on this host"))?
            .gid
            .as_raw(),
    };
    Ok((uid, gid))
}

impl Store {
    /// Opens (creating) `<state_dir>/<name>` and removes what a crash left
    /// half-written.
    pub fn open(state_dir: &Path, name: &str) -> Result<Self, AgentError> {
        let dir = state_dir.join(name);
        fs::create_dir_all(dir.join("v")).map_err(io(dir.display()))?;
        let s = Self { dir };
        s.recover()?;
        Ok(s)
    }

    /// The store of an intent another task keeps, for reading only (no
    /// recovery: that would race the keeper's writes).
    pub fn peek(state_dir: &Path, name: &str) -> Self {
        Self {
            dir: state_dir.join(name),
        }
    }

    /// The intent's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn link_target(&self, link: &str) -> Option<PathBuf> {
        fs::read_link(self.dir.join(link)).ok()
    }

    /// Deletes temporary directories and versions neither `current` nor
    /// `previous` names: a crash before the switch leaves the old version
    /// in force, and its half-done successor is simply dropped.
    fn recover(&self) -> Result<(), AgentError> {
        let keep: Vec<PathBuf> = ["current", "previous"]
            .iter()
            .filter_map(|l| self.link_target(l))
            .filter_map(|t| t.file_name().map(|n| n.to_owned().into()))
            .collect();
        let vdir = self.dir.join("v");
        for e in fs::read_dir(&vdir).map_err(io(vdir.display()))? {
            let e = e.map_err(io(vdir.display()))?;
            let name: PathBuf = e.file_name().into();
            if !keep.contains(&name) {
                fs::remove_dir_all(e.path()).map_err(io(e.path().display()))?;
            }
        }
        for stale in [".current.link.tmp", ".previous.link.tmp"] {
            let _ = fs::remove_file(self.dir.join(stale));
        }
        Ok(())
    }

    fn read_version(&self, dir: PathBuf) -> Result<Version, AgentError> {
        let read = |f: &str| {
            let p = dir.join(f);
            fs::read_to_string(&p).map_err(io(p.display()))
        };
        let key_pem = read("key.pem")?;
        let cert_pem = read("cert.pem")?;
        let chain_pem = read("chain.pem")?;
        let info = cert_info(&cert_pem)?;
        if !key_matches(&key_pem, &info) {
            return Err(AgentError::Files(format!(
                "{}: key.pem is not the key of cert.pem",
                dir.display()
            )));
        }
        let installed_at = fs::metadata(dir.join("cert.pem"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(info.not_before);
        // Absent for a version written before meta existed: matched by
        // nothing, which only means a forced renewal naming its issuer
        // waits for the normal renewal.
        let meta = fs::read(dir.join("meta.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Version {
            meta,
            installed_at,
            dir,
            key_pem,
            cert_pem,
            chain_pem,
            info,
        })
    }

    /// The version in force, if any.
    pub fn current(&self) -> Result<Option<Version>, AgentError> {
        match self.link_target("current") {
            None => Ok(None),
            Some(t) => self.read_version(self.dir.join(t)).map(Some),
        }
    }

    /// The version in place before the current one, kept for rollback.
    pub fn previous(&self) -> Result<Option<Version>, AgentError> {
        match self.link_target("previous") {
            None => Ok(None),
            Some(t) => self.read_version(self.dir.join(t)).map(Some),
        }
    }

    /// Installs a new version and makes it current; the one it replaces
    /// becomes `previous`, and the one before that is deleted.
    pub fn install(
        &self,
        key_pem: &str,
        cert_pem: &str,
        chain_pem: &str,
        meta: &VersionMeta,
        perms: Perms,
    ) -> Result<Version, AgentError> {
        let info = cert_info(cert_pem)?;
        if !key_matches(key_pem, &info) {
            return Err(AgentError::Files(
                "the certificate the cluster returned is not for our key; nothing was replaced"
                    .into(),
            ));
        }
        let vdir = self.dir.join("v");
        let n = fs::read_dir(&vdir)
            .map_err(io(vdir.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let tmp = vdir.join(format!(".tmp-{n}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(io(tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io(tmp.display()))?;
        let write = |name: &str, data: &str, mode: u32| -> Result<(), AgentError> {
            let p = tmp.join(name);
            write_synced(&p, data.as_bytes(), mode)?;
            if let Some((uid, gid)) = perms.owner {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io(p.display()))?;
            }
            Ok(())
        };
        write("key.pem", key_pem, perms.key_mode)?;
        failpoint("between-key-and-cert");
        write("cert.pem", cert_pem, perms.cert_mode)?;
        write("chain.pem", chain_pem, perms.cert_mode)?;
        write_synced(
            &tmp.join("meta.json"),
            &serde_json::to_vec(meta).expect("plain struct"),
            0o644,
        )?;
        sync_dir(&tmp)?;
        let name = n.to_string();
        fs::rename(&tmp, vdir.join(&name)).map_err(io(vdir.display()))?;
        sync_dir(&vdir)?;
        failpoint("before-switch");
        let old = self.link_target("current");
        swap_symlink(&self.dir.join("current"), &Path::new("v").join(&name))?;
        if let Some(old) = old {
            swap_symlink(&self.dir.join("previous"), &old)?;
        }
        self.recover()?;
        self.read_version(vdir.join(name))
    }

    /// Makes the workload's paths symlinks into `current` (once; later
    /// versions switch underneath them).
    pub fn link_outputs(
        &self,
        key_file: &Path,
        cert_file: &Path,
        chain_file: Option<&Path>,
    ) -> Result<(), AgentError> {
        let abs = fs::canonicalize(&self.dir).map_err(io(self.dir.display()))?;
        let cur = abs.join("current");
        swap_symlink(key_file, &cur.join("key.pem"))?;
        swap_symlink(cert_file, &cur.join("cert.pem"))?;
        if let Some(c) = chain_file {
            swap_symlink(c, &cur.join("chain.pem"))?;
        }
        Ok(())
    }

    /// The newest forced-renewal marker this intent has satisfied.
    pub fn force_renew_handled(&self) -> u64 {
        fs::read_to_string(self.dir.join("force-renew-handled"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records that forced-renewal marker `id` is satisfied.
    pub fn set_force_renew_handled(&self, id: u64) -> Result<(), AgentError> {
        replace_file(
            &self.dir.join("force-renew-handled"),
            id.to_string().as_bytes(),
            0o644,
            None,
        )
    }

    /// Records the key of a request about to be sent, before it is sent.
    pub fn save_pending(&self, p: &Pending) -> Result<(), AgentError> {
        let dir = self.dir.join("pending");
        fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(dir.display()))?;
        write_synced(&dir.join("key.pem"), p.key_pem.as_bytes(), 0o600)?;
        let meta = serde_json::to_vec(p).expect("plain struct");
        replace_file(&dir.join("request.json"), &meta, 0o600, None)
    }

    /// The request in flight when the agent last stopped, if any.
    pub fn load_pending(&self) -> Option<Pending> {
        let dir = self.dir.join("pending");
        let meta = fs::read(dir.join("request.json")).ok()?;
        let key_pem = fs::read_to_string(dir.join("key.pem")).ok()?;
        let mut p: Pending = serde_json::from_slice(&meta).ok()?;
        rcgen::KeyPair::from_pem(&key_pem).ok()?;
        p.key_pem = key_pem;
        Some(p)
    }

    /// Forgets the renewal in flight, once its certificate is installed.
    pub fn clear_pending(&self) -> Result<(), AgentError> {
        let dir = self.dir.join("pending");
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(dir.display())(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    fn pair() -> (String, String) {
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key.serialize_pem(), cert.pem())
    }

    const PERMS: Perms = Perms {
        key_mode: 0o600,
        cert_mode: 0o644,
        owner: None,
    };

    #[test]
    fn versions_switch_through_symlinks_and_keep_one_previous() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "web").unwrap();
        assert!(s.current().unwrap().is_none());
        let out = d.path().join("out");
        let (k1, c1) = pair();
        s.install(&k1, &c1, &c1, &VersionMeta::default(), PERMS)
            .unwrap();
        s.link_outputs(&out.join("key.pem"), &out.join("cert.pem"), None)
            .unwrap();
        assert_eq!(fs::read_to_string(out.join("key.pem")).unwrap(), k1);
        let mode = fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for _ in 0..3 {
            let (k, c) = pair();
            s.install(&k, &c, &c, &VersionMeta::default(), PERMS)
                .unwrap();
            assert_eq!(fs::read_to_string(out.join("key.pem")).unwrap(), k);
            assert_eq!(fs::read_to_string(out.join("cert.pem")).unwrap(), c);
        }
        let kept = fs::read_dir(s.dir().join("v")).unwrap().count();
        assert_eq!(kept, 2, "current and previous only");
        assert!(s.previous().unwrap().is_some());
    }

    #[test]
    fn refuses_a_certificate_for_another_key_and_keeps_the_current_one() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "web").unwrap();
        let (k1, c1) = pair();
        s.install(&k1, &c1, &c1, &VersionMeta::default(), PERMS)
            .unwrap();
        let (k2, _) = pair();
        let e = s
            .install(&k2, &c1, &c1, &VersionMeta::default(), PERMS)
            .unwrap_err();
        assert!(e.to_string().contains("not for our key"), "{e}");
        assert_eq!(s.current().unwrap().unwrap().key_pem, k1);
    }

    #[test]
    fn a_half_written_version_is_dropped_on_open() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "web").unwrap();
        let (k1, c1) = pair();
        s.install(&k1, &c1, &c1, &VersionMeta::default(), PERMS)
            .unwrap();
        // What a crash between the key and the certificate leaves.
        let tmp = s.dir().join("v").join(".tmp-2");
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("key.pem"), pair().0).unwrap();
        // And one renamed into place but never switched to.
        let orphan = s.dir().join("v").join("3");
        fs::create_dir(&orphan).unwrap();
        drop(s);
        let s = Store::open(d.path(), "web").unwrap();
        assert!(!tmp.exists() && !orphan.exists());
        assert_eq!(s.current().unwrap().unwrap().key_pem, k1);
    }

    #[test]
    fn pending_requests_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "web").unwrap();
        assert!(s.load_pending().is_none());
        let p = Pending {
            idempotency_key: "k1".into(),
            from_serial: Some("0a".into()),
            key_pem: pair().0,
        };
        s.save_pending(&p).unwrap();
        let s = Store::open(d.path(), "web").unwrap();
        assert_eq!(s.load_pending(), Some(p));
        s.clear_pending().unwrap();
        assert!(s.load_pending().is_none());
    }

    #[test]
    fn replace_file_is_whole_and_owners_resolve() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join("bundle.pem");
        replace_file(&p, b"one", 0o644, None).unwrap();
        replace_file(&p, b"two", 0o640, Some((0, 0))).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(resolve_owner("0:0"), Ok((0, 0)));
        assert_eq!(resolve_owner("root:root"), Ok((0, 0)));
        assert!(resolve_owner("root").is_err());
        assert!(resolve_owner("no-such-user-here:root").is_err());
    }
}
