//! The setup cache: directories of a working tree (`cache.paths`) saved after a successful
//! setup and restored, instead of running it, into a later runbook's fresh tree whose key
//! files hash the same.
//!
//! Layout: `<data_dir>/setup-cache/<org>/<repo>/<key>/<path>…`, lower case, one directory per
//! repository: an entry is only ever looked up under the runbook's own repository, so the
//! cache never crosses repositories or organisations. The key is the SHA-256 of the setup's
//! commands, its cached paths and the names and contents of its key files.
//!
//! Invariants:
//! - **Nothing is followed out of the tree.** Cached paths are relative without `..` (checked
//!   when the configuration is parsed, and again here); a path whose parent is a symbolic
//!   link is refused, at save and at restore; copies never follow links (a link is copied as
//!   a link, special files are skipped). Key files are read through [`confine`].
//! - **An entry is whole or absent.** It is copied into a temporary directory beside the
//!   entries, then renamed into place; a crash leaves a temporary directory, never half an
//!   entry, and temporary directories a day old are removed.
//! - **Concurrent runbooks of a repository** take its lock file: shared to restore, exclusive
//!   to add or evict an entry, so no entry disappears while it is being copied. The first of
//!   two saves of one key wins; the second is dropped.
//! - At most [`MAX_ENTRIES`] entries per repository: the least recently used go.
//! - Entries are saved right after the setup, before any step runs: no step can change what
//!   a later runbook restores.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::agent::sandbox::confine;
use crate::domain::CacheConfig;
use crate::domain::setup::check_tree_path;

/// Entries kept per repository.
pub const MAX_ENTRIES: usize = 3;

/// Age after which a temporary directory is taken for a crash's leftover.
const STALE_TEMP: Duration = Duration::from_secs(24 * 60 * 60);

const LOCK_FILE: &str = ".lock";
const TEMP_PREFIX: &str = ".tmp-";

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// What the configuration or the tree asks for is refused (a user's mistake or an
    /// attack): said in the setup's log.
    #[error("{0}")]
    Refused(String),
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io {
        context,
        path,
        source,
    }
}

/// The cache of one repository.
#[derive(Debug, Clone)]
pub struct RepoSetupCache {
    dir: PathBuf,
}

/// Whether `part` can be a directory name of the cache (a GitHub owner or repository name).
fn plain_name(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RepoSetupCache {
    /// The cache of `org/repo` under `data_dir`.
    pub fn new(data_dir: &Path, org: &str, repo: &str) -> Result<Self, CacheError> {
        if !plain_name(org) || !plain_name(repo) {
            return Err(CacheError::Refused(format!(
                "`{org}/{repo}` is not a repository name the cache can use"
            )));
        }
        Ok(Self {
            dir: data_dir
                .join("setup-cache")
                .join(org.to_lowercase())
                .join(repo.to_lowercase()),
        })
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn lock(&self, exclusive: bool) -> Result<std::fs::File, CacheError> {
        crate::git::create_private_dir(&self.dir)
            .map_err(io_at("creating the setup cache", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("opening the setup cache's lock", &path))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(io_at("locking the setup cache", &path))?;
        Ok(file)
    }

    /// Copies the entry `key` into `tree` (each cached path replacing what the tree has
    /// there); `false` when there is no such entry.
    pub fn restore(
        &self,
        key: &str,
        config: &CacheConfig,
        tree: &Path,
    ) -> Result<bool, CacheError> {
        let entry = self.entry(key);
        if !entry.is_dir() {
            return Ok(false);
        }
        let _lock = self.lock(false)?;
        if !entry.is_dir() {
            return Ok(false);
        }
        // Used now: the last to be evicted.
        if let Ok(dir) = std::fs::File::open(&entry) {
            let _ = dir.set_modified(SystemTime::now());
        }
        for path in &config.paths {
            let from = entry.join(relative(path)?);
            if std::fs::symlink_metadata(&from).is_err() {
                continue;
            }
            let to = in_tree(tree, path, true)?;
            remove_any(&to)?;
            copy_tree(&from, &to)?;
        }
        Ok(true)
    }

    /// Saves the cached paths of `tree` as the entry `key` (unless one is there already),
    /// then evicts the least recently used entries beyond [`MAX_ENTRIES`]. Returns how many
    /// of the paths existed and were saved.
    pub fn save(&self, key: &str, config: &CacheConfig, tree: &Path) -> Result<usize, CacheError> {
        let mut sources = Vec::new();
        for path in &config.paths {
            let from = in_tree(tree, path, false)?;
            if std::fs::symlink_metadata(&from).is_ok() {
                sources.push((from, relative(path)?));
            }
        }
        crate::git::create_private_dir(&self.dir)
            .map_err(io_at("creating the setup cache", &self.dir))?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(io_at("creating a temporary directory in", &self.dir))?;
        for (from, rel) in &sources {
            let to = temp.path().join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_at("creating", parent))?;
            }
            copy_tree(from, &to)?;
        }
        let _lock = self.lock(true)?;
        let entry = self.entry(key);
        if !entry.exists() {
            let temp = temp.keep();
            if let Err(e) = std::fs::rename(&temp, &entry) {
                let _ = std::fs::remove_dir_all(&temp);
                return Err(io_at("saving the setup cache entry", &entry)(e));
            }
        }
        self.evict()?;
        Ok(sources.len())
    }

    /// Under the exclusive lock: removes entries beyond [`MAX_ENTRIES`], least recently used
    /// first, and temporary directories left by crashes.
    fn evict(&self) -> Result<(), CacheError> {
        let mut entries = Vec::new();
        let listing = std::fs::read_dir(&self.dir).map_err(io_at("listing", &self.dir))?;
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(meta) = item.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                let age = SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default();
                if age > STALE_TEMP {
                    let _ = std::fs::remove_dir_all(item.path());
                }
            } else if meta.is_dir() && !name.starts_with('.') {
                entries.push((modified, item.path()));
            }
        }
        entries.sort();
        let excess = entries.len().saturating_sub(MAX_ENTRIES);
        for (_, path) in entries.into_iter().take(excess) {
            std::fs::remove_dir_all(&path).map_err(io_at("evicting", &path))?;
        }
        Ok(())
    }
}

/// The cache key of a setup in `tree`: the SHA-256, in hex, of the commands, the cached
/// paths, and each key file's name and contents (or that it is missing).
pub fn key(commands: &[String], config: &CacheConfig, tree: &Path) -> Result<String, CacheError> {
    fn field(hasher: &mut Sha256, tag: u8, bytes: &[u8]) {
        hasher.update([tag]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    hasher.update(b"runbooks setup cache v1\0");
    for command in commands {
        field(&mut hasher, b'c', command.as_bytes());
    }
    for path in &config.paths {
        field(&mut hasher, b'p', path.as_bytes());
    }
    for name in &config.keys {
        check_tree_path(name)
            .map_err(|why| CacheError::Refused(format!("cache key `{name}` {why}")))?;
        field(&mut hasher, b'k', name.as_bytes());
        let path = confine(tree, Path::new(name))
            .map_err(|e| CacheError::Refused(format!("cache key {e}")))?;
        match std::fs::File::open(&path) {
            Ok(mut file) => {
                let mut contents = Sha256::new();
                io::copy(&mut file, &mut contents)
                    .map_err(io_at("reading the cache key file", &path))?;
                field(&mut hasher, b'f', &contents.finalize());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => field(&mut hasher, b'-', b""),
            Err(e) => return Err(io_at("reading the cache key file", &path)(e)),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A cached path as a relative path of normal components, or refused.
fn relative(path: &str) -> Result<PathBuf, CacheError> {
    check_tree_path(path)
        .map_err(|why| CacheError::Refused(format!("cache path `{path}` {why}")))?;
    Ok(Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// `path` inside `tree`, refused when one of its parents is a symbolic link (or not a
/// directory): nothing is read or written through a link. With `create`, missing parents
/// are made.
fn in_tree(tree: &Path, path: &str, create: bool) -> Result<PathBuf, CacheError> {
    let rel = relative(path)?;
    let mut at = tree.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        if i + 1 == parts.len() {
            break;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(CacheError::Refused(format!(
                    "cache path `{path}` goes through a symbolic link; the cache never follows one"
                )));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(CacheError::Refused(format!(
                    "cache path `{path}` goes through a file that is not a directory"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                std::fs::create_dir(&at).map_err(io_at("creating", &at))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(tree.join(&rel)),
            Err(e) => return Err(io_at("checking", &at)(e)),
        }
    }
    Ok(at)
}

/// Removes whatever is at `path` (a link itself, never what it points to).
fn remove_any(path: &Path) -> Result<(), CacheError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(io_at("replacing", path))
}

/// Copies `from` to `to` (which must not exist) without following links: directories are
/// walked, files copied with their permissions, links recreated with the same target,
/// special files (FIFOs, sockets, devices) skipped.
fn copy_tree(from: &Path, to: &Path) -> Result<(), CacheError> {
    let meta = std::fs::symlink_metadata(from).map_err(io_at("reading", from))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = std::fs::read_link(from).map_err(io_at("reading the link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io_at("copying the link", to))?;
    } else if kind.is_dir() {
        std::fs::create_dir(to).map_err(io_at("creating", to))?;
        for item in std::fs::read_dir(from).map_err(io_at("listing", from))? {
            let item = item.map_err(io_at("listing", from))?;
            copy_tree(&item.path(), &to.join(item.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions()).map_err(io_at("copying", to))?;
    } else if kind.is_file() {
        std::fs::copy(from, to).map_err(io_at("copying", from))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[&str], paths: &[&str]) -> CacheConfig {
        CacheConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn keys_follow_the_key_files_and_the_commands() {
        let tree = tempfile::tempdir().unwrap();
        let cache = config(&["lock"], &["deps"]);
        let commands = vec!["make".to_string()];
        let missing = key(&commands, &cache, tree.path()).unwrap();
        std::fs::write(tree.path().join("lock"), "v1").unwrap();
        let v1 = key(&commands, &cache, tree.path()).unwrap();
        assert_ne!(missing, v1);
        assert_eq!(v1, key(&commands, &cache, tree.path()).unwrap());
        assert_ne!(v1, key(&["make all".into()], &cache, tree.path()).unwrap());
        std::fs::write(tree.path().join("lock"), "v2").unwrap();
        assert_ne!(v1, key(&commands, &cache, tree.path()).unwrap());

        // A key file that leads out of the tree is refused, not read.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::remove_file(tree.path().join("lock")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tree.path().join("lock"))
            .unwrap();
        assert!(matches!(
            key(&commands, &cache, tree.path()),
            Err(CacheError::Refused(_))
        ));
    }

    #[test]
    fn entries_round_trip_without_following_links() {
        let data = tempfile::tempdir().unwrap();
        let cache = RepoSetupCache::new(data.path(), "Acme", "App").unwrap();
        assert!(cache.dir.ends_with("setup-cache/acme/app"));
        let tree = tempfile::tempdir().unwrap();
        let deps = tree.path().join("deps");
        std::fs::create_dir_all(deps.join("sub")).unwrap();
        std::fs::write(deps.join("sub/file"), "content").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", deps.join("link")).unwrap();
        let config = config(&[], &["deps", "absent"]);
        assert_eq!(cache.save("k1", &config, tree.path()).unwrap(), 1);

        let fresh = tempfile::tempdir().unwrap();
        assert!(!cache.restore("k2", &config, fresh.path()).unwrap());
        assert!(cache.restore("k1", &config, fresh.path()).unwrap());
        let restored = fresh.path().join("deps");
        assert_eq!(
            std::fs::read_to_string(restored.join("sub/file")).unwrap(),
            "content"
        );
        let link = std::fs::symlink_metadata(restored.join("link")).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(
            std::fs::read_link(restored.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn paths_through_links_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let cache = RepoSetupCache::new(data.path(), "acme", "app").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x"), "outside").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.path().join("out")).unwrap();
        let through = config(&[], &["out/x"]);
        assert!(matches!(
            cache.save("k", &through, tree.path()),
            Err(CacheError::Refused(_))
        ));
        for bad in ["../x", "/etc", "a/../../x"] {
            assert!(matches!(
                cache.save("k", &config(&[], &[bad]), tree.path()),
                Err(CacheError::Refused(_))
            ));
        }
        // An entry holding `out/x` is not restored through the tree's link either.
        let honest = tempfile::tempdir().unwrap();
        std::fs::create_dir(honest.path().join("out")).unwrap();
        std::fs::write(honest.path().join("out/x"), "cached").unwrap();
        cache.save("k", &through, honest.path()).unwrap();
        assert!(matches!(
            cache.restore("k", &through, tree.path()),
            Err(CacheError::Refused(_))
        ));
        assert_eq!(
            std::fs::read_to_string(outside.path().join("x")).unwrap(),
            "outside"
        );
        assert!(RepoSetupCache::new(data.path(), "..", "app").is_err());
    }

    #[test]
    fn old_entries_are_evicted() {
        let data = tempfile::tempdir().unwrap();
        let cache = RepoSetupCache::new(data.path(), "acme", "app").unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("f"), "x").unwrap();
        let config = config(&[], &["f"]);
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            cache.save(key, &config, tree.path()).unwrap();
            let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * (i as u64 + 1));
            std::fs::File::open(cache.entry(key))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        cache.save("e", &config, tree.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&cache.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        left.sort();
        assert_eq!(left, ["c", "d", "e"]);
    }
}
