//! Export of the final workspace to a zip file.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{copy::manifest, io_err, CopyOptions, EntryKind, WorkspaceError};

/// Writes the workspace to a zip file (via a temporary file, then rename),
/// leaving out what `opts` leaves out of the copy into the sandbox. Modes
/// are kept; symlinks are stored as symlinks (never followed); names that
/// are not UTF-8 are stored lossily. The zip gets mode 0644.
pub fn export_zip(root: &Path, dest: &Path, opts: &CopyOptions) -> Result<usize, WorkspaceError> {
    let dest_abs = std::path::absolute(dest).map_err(io_err("resolving", dest))?;
    // The file list comes first, so neither the temporary file nor an
    // earlier zip at the destination (inside the workspace) is packed.
    let m = manifest(root, opts, u64::MAX)?;
    let dir = dest_abs.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".autodev-zip-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    let mut zip = zip::ZipWriter::new(tmp.as_file());
    let mut count = 0;
    for e in &m.entries {
        let host = root.join(&e.rel);
        if std::path::absolute(&host).ok().as_deref() == Some(dest_abs.as_path()) {
            continue;
        }
        let name = e.rel.to_string_lossy().replace('\\', "/");
        let zopts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(e.mode);
        let zerr = |err: zip::result::ZipError| WorkspaceError::Io {
            op: "zipping",
            path: host.clone(),
            source: io::Error::other(err),
        };
        match &e.kind {
            EntryKind::Dir => zip.add_directory(format!("{name}/"), zopts).map_err(zerr)?,
            EntryKind::File(_) => {
                zip.start_file(name, zopts).map_err(zerr)?;
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host)
                    .map_err(io_err("opening", &host))?;
                io::copy(&mut f, &mut zip).map_err(io_err("zipping", &host))?;
                count += 1;
            }
            EntryKind::Symlink(target) => zip
                .add_symlink(name, target.to_string_lossy(), zopts)
                .map_err(zerr)?,
        }
    }
    zip.finish().map_err(|err| WorkspaceError::Io {
        op: "finishing",
        path: dest.to_path_buf(),
        source: io::Error::other(err),
    })?;
    // A temporary file is private (0600); an exported zip is an ordinary file.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(io_err("writing", dest))?;
    tmp.persist(&dest_abs).map_err(|e| WorkspaceError::Io {
        op: "writing",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::copy::tests::tree;

    fn names(dest: &Path) -> Vec<(String, bool, u32)> {
        let mut z = zip::ZipArchive::new(File::open(dest).unwrap()).unwrap();
        let mut v: Vec<_> = (0..z.len())
            .map(|i| {
                let f = z.by_index(i).unwrap();
                (
                    f.name().unwrap().to_string(),
                    f.is_symlink(),
                    f.unix_mode().unwrap_or(0) & 0o777,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn zip_applies_the_copy_excludes_keeps_modes_and_links() {
        let d = tree();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ws.zip");
        let n = export_zip(d.path(), &dest, &CopyOptions::default()).unwrap();
        let got = names(&dest);
        assert!(
            got.contains(&("src/pkg/a.py".into(), false, 0o644)),
            "{got:?}"
        );
        assert!(got.contains(&("run.sh".into(), false, 0o755)), "{got:?}");
        assert!(got.contains(&("leak".into(), true, 0o777)), "{got:?}");
        assert!(
            !got.iter()
                .any(|(n, _, _)| n.starts_with(".git") || n.starts_with("target")),
            "{got:?}"
        );
        assert_eq!(n, 2);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn zip_inside_the_workspace_does_not_pack_itself_or_its_temp_file() {
        let d = tree();
        let dest = d.path().join("final.zip");
        export_zip(d.path(), &dest, &CopyOptions::default()).unwrap();
        export_zip(d.path(), &dest, &CopyOptions::default()).unwrap();
        let got = names(&dest);
        assert!(
            !got.iter()
                .any(|(n, _, _)| n.contains("autodev-zip") || n == "final.zip"),
            "{got:?}"
        );
    }
}
