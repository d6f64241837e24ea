//! `cargo xtask install [--system]` and `cargo xtask uninstall [--system]`: the plug-in where
//! hosts look for it and the default model where the plug-in looks for it, in one command.
//!
//! Install builds the release bundles (`cargo xtask bundle stemgen-plugin --release`), then
//! copies `StemGen.vst3` and `StemGen.clap` into the plug-in folders and `assets/default` into
//! the model folder. A file whose content is already in place is not written again, so a
//! second run changes nothing. Every file and folder it creates is listed in a manifest, and
//! uninstall removes exactly those (folders only when empty). Every path written or removed
//! is printed.
//!
//! Folders (Linux, the only system this is built and tested on): per user `~/.vst3`, `~/.clap`
//! and `$XDG_DATA_HOME/StemGen/models/default` (`~/.local/share/...`); with `--system`
//! `/usr/lib/vst3`, `/usr/lib/clap` and `/usr/share/stemgen/models/default`. The plug-in reads
//! the model from either model folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the manifest in the data folder.
const MANIFEST: &str = "installed-files.txt";

/// Where things go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    pub vst3: PathBuf,
    pub clap: PathBuf,
    pub model: PathBuf,
    /// Folder of the manifest.
    pub data: PathBuf,
}

impl Destinations {
    /// The folders for this user, or the system's with `system`.
    pub fn for_this_machine(system: bool) -> Result<Destinations, String> {
        if !cfg!(target_os = "linux") {
            return Err(
                "cargo xtask install is built and tested on Linux only; on this system copy \
                 target/bundled/StemGen.vst3 and StemGen.clap into your hosts' plug-in folders \
                 and assets/default into the StemGen/models/default folder of your user data \
                 folder"
                    .into(),
            );
        }
        if system {
            return Ok(Destinations {
                vst3: "/usr/lib/vst3".into(),
                clap: "/usr/lib/clap".into(),
                model: "/usr/share/stemgen/models/default".into(),
                data: "/usr/share/stemgen".into(),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or("HOME is not set")?;
        let data_home = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share"));
        Ok(Destinations {
            vst3: home.join(".vst3"),
            clap: home.join(".clap"),
            model: data_home.join("StemGen/models/default"),
            data: data_home.join("StemGen"),
        })
    }
}

/// `cargo xtask install`.
pub fn install(workspace: &Path, system: bool) -> Result<(), String> {
    let to = Destinations::for_this_machine(system)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["xtask", "bundle", "stemgen-plugin", "--release"])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the release bundles failed".into());
    }
    let bundled = workspace.join("target/bundled");
    let copies = [
        (bundled.join("StemGen.vst3"), to.vst3.join("StemGen.vst3")),
        (bundled.join("StemGen.clap"), to.clap.join("StemGen.clap")),
        (workspace.join("assets/default"), to.model.clone()),
    ];
    install_copies(&copies, &to.data.join(MANIFEST), &mut |line| {
        println!("{line}")
    })
}

/// `cargo xtask uninstall`.
pub fn uninstall(system: bool) -> Result<(), String> {
    let to = Destinations::for_this_machine(system)?;
    remove_installed(&to.data.join(MANIFEST), &mut |line| println!("{line}"))
}

/// Copies each (source, destination) file or folder, writing only what differs, and adds
/// what it created to the manifest.
pub fn install_copies(
    copies: &[(PathBuf, PathBuf)],
    manifest: &Path,
    report: &mut dyn FnMut(String),
) -> Result<(), String> {
    let mut created: Vec<PathBuf> = read_manifest(manifest);
    for (source, dest) in copies {
        if !source.exists() {
            return Err(format!("{}: missing", source.display()));
        }
        copy_tree(source, dest, &mut created, report)?;
    }
    if let Some(dir) = manifest.parent() {
        make_dir(dir, &mut created, report)?;
    }
    created.sort();
    created.dedup();
    let text: String = created
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    if std::fs::read_to_string(manifest).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(manifest, text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    }
    Ok(())
}

fn read_manifest(manifest: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(manifest)
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Creates `dir` and its missing parents, recording the ones made.
fn make_dir(
    dir: &Path,
    created: &mut Vec<PathBuf>,
    report: &mut dyn FnMut(String),
) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dir(parent, created, report)?;
    }
    std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    report(format!("created {}/", dir.display()));
    created.push(dir.to_path_buf());
    Ok(())
}

fn copy_tree(
    source: &Path,
    dest: &Path,
    created: &mut Vec<PathBuf>,
    report: &mut dyn FnMut(String),
) -> Result<(), String> {
    if source.is_dir() {
        make_dir(dest, created, report)?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(source)
            .map_err(|e| format!("{}: {e}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let name = entry.file_name().expect("a directory entry has a name");
            copy_tree(&entry, &dest.join(name), created, report)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    if std::fs::read(dest).ok().as_deref() == Some(bytes.as_slice()) {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        make_dir(parent, created, report)?;
    }
    std::fs::write(dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    // Executable bits (the bundles' shared libraries) carry over.
    if let Ok(meta) = std::fs::metadata(source) {
        let _ = std::fs::set_permissions(dest, meta.permissions());
    }
    report(format!("wrote {}", dest.display()));
    created.push(dest.to_path_buf());
    Ok(())
}

/// Removes every file of the manifest, then its folders deepest first when empty, then the
/// manifest.
pub fn remove_installed(manifest: &Path, report: &mut dyn FnMut(String)) -> Result<(), String> {
    if !manifest.is_file() {
        report(format!(
            "nothing to remove ({} does not exist)",
            manifest.display()
        ));
        return Ok(());
    }
    let mut paths = read_manifest(manifest);
    std::fs::remove_file(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    report(format!("removed {}", manifest.display()));
    // Deepest first, so a folder's files go before it.
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in paths {
        if path.is_dir() {
            if std::fs::remove_dir(&path).is_ok() {
                report(format!("removed {}/", path.display()));
            }
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            report(format!("removed {}", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_twice_changes_nothing_and_uninstall_removes_exactly_what_it_wrote() {
        let root =
            std::env::temp_dir().join(format!("stemgen-install-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("src");
        std::fs::create_dir_all(src.join("bundle/lib")).unwrap();
        std::fs::write(src.join("bundle/lib/plugin.so"), b"binary").unwrap();
        std::fs::write(src.join("single.clap"), b"clap").unwrap();
        let home = root.join("home");
        // Something of the user's already in a destination folder stays.
        std::fs::create_dir_all(home.join(".clap")).unwrap();
        std::fs::write(home.join(".clap/Other.clap"), b"other").unwrap();
        let copies = [
            (src.join("bundle"), home.join(".vst3/StemGen.vst3")),
            (src.join("single.clap"), home.join(".clap/StemGen.clap")),
        ];
        let manifest = home.join("data/StemGen").join(MANIFEST);
        let mut first = Vec::new();
        install_copies(&copies, &manifest, &mut |l| first.push(l)).unwrap();
        assert!(
            first
                .iter()
                .any(|l| l.ends_with("StemGen.vst3/lib/plugin.so")),
            "{first:?}"
        );
        assert_eq!(
            std::fs::read(home.join(".vst3/StemGen.vst3/lib/plugin.so")).unwrap(),
            b"binary"
        );
        let mut second = Vec::new();
        install_copies(&copies, &manifest, &mut |l| second.push(l)).unwrap();
        assert!(second.is_empty(), "a second run wrote {second:?}");
        let mut removed = Vec::new();
        remove_installed(&manifest, &mut |l| removed.push(l)).unwrap();
        assert!(!home.join(".vst3").exists(), "{removed:?}");
        assert!(!home.join(".clap/StemGen.clap").exists());
        assert!(
            home.join(".clap/Other.clap").is_file(),
            "the user's file stays"
        );
        assert!(!home.join("data").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
