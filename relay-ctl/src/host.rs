//! What `relay-ctl prepare` does as root so the daemon can run as a system user with only
//! CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: user lookup, search permission on bpffs directories
//! and ownership of the pin directory.

use std::{ffi::CString, os::unix::fs::PermissionsExt as _, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no such user")]
    NoUser,
    #[error(
        "{0}: the daemon's user cannot search this directory and it is not on a bpffs; choose a pin-dir it can reach"
    )]
    NotSearchable(std::path::PathBuf),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// uid and primary gid of `user`.
pub fn user_ids(user: &str) -> Result<(u32, u32), HostError> {
    let name = CString::new(user).map_err(|_| HostError::NoUser)?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(HostError::NoUser);
    }
    // SAFETY: non-null result of getpwnam.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Lets every user search (not list) `dir` when it is a bpffs directory: systemd mounts
/// /sys/fs/bpf with mode 0700. Pinned objects keep their own 0600 modes, so this exposes no
/// map or link. Any other directory that others cannot search is an error, never changed.
pub fn allow_search(dir: &Path) -> Result<(), HostError> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o001 != 0 {
        return Ok(());
    }
    if !is_bpffs(dir) {
        return Err(HostError::NotSearchable(dir.to_owned()));
    }
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode((mode & 0o7777) | 0o001),
    )?;
    tracing::info!(dir = %dir.display(), "made searchable for the daemon's user");
    Ok(())
}

/// Gives `dir` and the pins directly in it to `uid:gid`.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), HostError> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        std::os::unix::fs::lchown(e?.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}
