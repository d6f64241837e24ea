//! Loaders for the multi-stem datasets users own, mapped onto the category set
//! ([`crate::data::categories`]) and loaded as the same [`Song`] that pair drawing uses.
//!
//! Layouts ([`DatasetLayout`], detected by [`DatasetLayout::detect`]):
//! - **Slakh2100**: `root/Track00001/metadata.yaml` + `root/Track00001/stems/S00.flac`. The
//!   `stems:` map of `metadata.yaml` gives each stem's `inst_class` (a Slakh label, looked up in
//!   the category table), `is_drum` (drums win over `inst_class`), `audio_rendered` (false:
//!   skipped) and `program_num` (used only when `inst_class` is missing). The audio folder is
//!   `audio_dir` from the metadata (default `stems`); a stem file may be `.flac` or `.wav`.
//! - **MUSDB18-HQ**: `root/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav`. `mixture`
//!   is never used. `other` has no category of its own (it is whatever is not drums, bass or
//!   vocals: mostly guitars and keys); [`DatasetOptions::other`] maps it, by default to
//!   [`Category::Guitar`], the most common instrument in MUSDB's rock/pop-heavy `other` stems.
//!   `Song` has no "context only" notion, so a mapped `other` stem can also be drawn as a
//!   target; set `other: None` to skip it instead (it is then reported in `skipped`).
//! - **MoisesDB**: `root/<song-uuid>/data.json` + `root/<song-uuid>/<stem>/<uuid>.wav`. Each stem
//!   folder name maps to a category through [`MOISES_STEMS`]; the files of one folder (one per
//!   recorded track) are summed. Moises' `other` folder follows [`DatasetOptions::other`] too.
//! - **Plain**: one folder per song, one audio file per stem named after its category (the
//!   layout of [`crate::data::pairs`] and [`crate::data::synth`]).
//!
//! Slakh and MUSDB releases keep songs in split folders (`train/`, `validation/`, `test/`,
//! `omitted/`); such a root is accepted as well as a split folder itself, and song ids then
//! carry the split (`train/Track00001`).
//!
//! Labels that map to no category (an unknown `inst_class`, an unknown Moises folder, a stray
//! audio file) are skipped and reported in [`SongSource::skipped`] (and carried into
//! [`Song::skipped`]); unrendered or missing Slakh stems likewise. Folders that cannot be read,
//! broken metadata, songs without a usable stem and unreadable audio files are errors that name
//! the path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};

use crate::data::pairs::{add_stem, category_of_stem_name, Song, SongStem};
use crate::data::Category;

/// Audio file extensions the loaders read (everything [`read_audio`] decodes).
pub const AUDIO_EXTENSIONS: [&str; 4] = ["wav", "flac", "ogg", "mp3"];

/// The MUSDB18 stem names, in file order; `mixture` is never used.
pub const MUSDB_STEMS: [&str; 4] = ["drums", "bass", "other", "vocals"];

/// MoisesDB stem folder names and their categories. `other` is absent: it follows
/// [`DatasetOptions::other`]. Choices for the mixed folders: `other_keys` (organs, synths,
/// electric pianos) -> organ; `other_plucked` (banjo, mandolin, harp, sitar...) -> ethnic, the GM
/// family of plucked folk instruments; `percussion` (non-kit percussion) -> percussive; `wind`
/// (brass, flutes, reeds) -> brass.
pub const MOISES_STEMS: [(&str, Category); 10] = [
    ("vocals", Category::Vocals),
    ("bass", Category::Bass),
    ("drums", Category::Drums),
    ("guitar", Category::Guitar),
    ("piano", Category::Piano),
    ("other_keys", Category::Organ),
    ("other_plucked", Category::Ethnic),
    ("percussion", Category::Percussive),
    ("bowed_strings", Category::Strings),
    ("wind", Category::Brass),
];

/// A dataset's folder layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetLayout {
    Slakh,
    Musdb,
    Moises,
    Plain,
}

impl DatasetLayout {
    pub const ALL: [DatasetLayout; 4] = [
        DatasetLayout::Slakh,
        DatasetLayout::Musdb,
        DatasetLayout::Moises,
        DatasetLayout::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetLayout::Slakh => "slakh",
            DatasetLayout::Musdb => "musdb",
            DatasetLayout::Moises => "moises",
            DatasetLayout::Plain => "plain",
        }
    }

    /// Detects the layout of the dataset at `root`: Slakh when a song folder holds
    /// `metadata.yaml`, MoisesDB when one holds `data.json`, MUSDB when one holds a `mixture` or
    /// `other` audio file, otherwise plain. Song folders are the children of `root` or, for
    /// split releases, its grandchildren. Errors when `root` cannot be read or holds no folders.
    pub fn detect(root: &Path) -> Result<DatasetLayout> {
        let children = subdirs(root)?;
        if children.is_empty() {
            bail!(
                "{}: dataset folder holds no song folders (expected Slakh2100, MUSDB18-HQ, \
                 MoisesDB or one folder per song with one audio file per stem)",
                root.display()
            );
        }
        let mut candidates = children.clone();
        for child in &children {
            // Split folders (train/test/...) of Slakh and MUSDB: look one level deeper.
            if let Ok(grand) = subdirs(child) {
                candidates.extend(grand);
            }
        }
        let any = |pred: &dyn Fn(&Path) -> bool| candidates.iter().any(|d| pred(d));
        if any(&|d| d.join("metadata.yaml").is_file()) {
            return Ok(DatasetLayout::Slakh);
        }
        if any(&|d| d.join("data.json").is_file()) {
            return Ok(DatasetLayout::Moises);
        }
        if any(&|d| {
            ["mixture", "other"]
                .iter()
                .any(|n| find_audio_file(d, n).is_some())
        }) {
            return Ok(DatasetLayout::Musdb);
        }
        Ok(DatasetLayout::Plain)
    }
}

impl fmt::Display for DatasetLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetLayout {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase();
        let layout = match norm.as_str() {
            "slakh" | "slakh2100" => DatasetLayout::Slakh,
            "musdb" | "musdb18" | "musdb18-hq" | "musdb18hq" => DatasetLayout::Musdb,
            "moises" | "moisesdb" => DatasetLayout::Moises,
            "plain" => DatasetLayout::Plain,
            _ => bail!("unknown dataset layout '{s}'; valid: slakh, musdb, moises, plain"),
        };
        Ok(layout)
    }
}

/// Choices for stems whose category is not fixed by the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Category of MUSDB's and MoisesDB's `other` stems; `None` skips them (see module notes).
    pub other: Option<Category>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            other: Some(Category::Guitar),
        }
    }
}

/// One song of a dataset: its stem files and their categories, not yet read.
#[derive(Debug, Clone, PartialEq)]
pub struct SongSource {
    /// Song id: the song folder's name, prefixed by the split folder where there is one.
    pub id: String,
    pub dir: PathBuf,
    /// Stem files in a stable order; several files of one category are summed on load.
    pub stems: Vec<(Category, PathBuf)>,
    /// Stems left out, with the reason (unknown label, unrendered, missing file, ...).
    pub skipped: Vec<(PathBuf, String)>,
}

impl SongSource {
    /// The distinct categories of the song, sorted by id.
    pub fn categories(&self) -> Vec<Category> {
        let mut c: Vec<Category> = self.stems.iter().map(|(c, _)| *c).collect();
        c.sort_by_key(|c| c.id());
        c.dedup();
        c
    }
}

/// Lists the songs of the dataset at `root`, detecting its layout.
pub fn list_dataset(root: &Path) -> Result<(DatasetLayout, Vec<SongSource>)> {
    let layout = DatasetLayout::detect(root)?;
    let songs = list_songs(root, layout, &DatasetOptions::default())?;
    Ok((layout, songs))
}

/// Lists the songs of the dataset at `root` in `layout`, sorted by id (the order shards are
/// defined on). Every song has at least one stem; a song folder without one is an error.
pub fn list_songs(
    root: &Path,
    layout: DatasetLayout,
    options: &DatasetOptions,
) -> Result<Vec<SongSource>> {
    let songs: Vec<SongSource> = match layout {
        DatasetLayout::Slakh => song_dirs(root, |d| d.join("metadata.yaml").is_file())?
            .into_iter()
            .map(|(id, dir)| slakh_song(id, dir))
            .collect::<Result<_>>()?,
        DatasetLayout::Musdb => song_dirs(root, |d| {
            MUSDB_STEMS
                .iter()
                .chain(&["mixture"])
                .any(|n| find_audio_file(d, n).is_some())
        })?
        .into_iter()
        .map(|(id, dir)| musdb_song(id, dir, options))
        .collect::<Result<_>>()?,
        DatasetLayout::Moises => song_dirs(root, |d| d.join("data.json").is_file())?
            .into_iter()
            .map(|(id, dir)| moises_song(id, dir, options))
            .collect::<Result<_>>()?,
        DatasetLayout::Plain => crate::data::pairs::list_song_dirs(root)?
            .into_iter()
            .map(|dir| {
                let id = dir_name(&dir);
                plain_song(id, dir)
            })
            .collect::<Result<_>>()?,
    };
    if songs.is_empty() {
        bail!(
            "{}: no {} song folders found",
            root.display(),
            layout.name()
        );
    }
    Ok(songs)
}

/// Reads a song's stems, mixed to mono and resampled to `sample_rate`; files of one category
/// are summed. The result is the [`Song`] that [`crate::data::pairs::draw_pair`] takes.
/// Unreadable audio is an error naming the file.
pub fn load_song_source(source: &SongSource, sample_rate: u32) -> Result<Song> {
    if source.stems.is_empty() {
        bail!("{}: song has no usable stems", source.dir.display());
    }
    let mut stems: Vec<SongStem> = Vec::new();
    for (category, path) in &source.stems {
        add_stem(&mut stems, *category, path, sample_rate)?;
    }
    stems.sort_by_key(|s| s.category.id());
    let len = stems.iter().map(|s| s.samples.len()).max().unwrap_or(0);
    Ok(Song {
        id: source.id.clone(),
        dir: source.dir.clone(),
        stems,
        skipped: source.skipped.clone(),
        len,
    })
}

/// Loads every song of the dataset at `root` (layout detected), for small in-memory datasets.
pub fn load_dataset(root: &Path, sample_rate: u32) -> Result<Vec<Song>> {
    let (_, songs) = list_dataset(root)?;
    songs
        .iter()
        .map(|s| load_song_source(s, sample_rate))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Folder helpers

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    entries_where(dir, Path::is_dir)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    entries_where(dir, Path::is_file)
}

/// The sorted entries of `dir` that pass `keep`.
fn entries_where(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?;
        let path = entry.path();
        if keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `dir/<stem>.<ext>` for the first audio extension that exists (case-insensitive on `ext`).
fn find_audio_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    AUDIO_EXTENSIONS.iter().find_map(|ext| {
        [ext.to_string(), ext.to_ascii_uppercase()]
            .into_iter()
            .map(|e| dir.join(format!("{stem}.{e}")))
            .find(|p| p.is_file())
    })
}

/// The song folders under `root` as (id, dir): the children that `is_song` accepts, plus the
/// accepted children of the other child folders (split folders such as `train/`), whose ids
/// are prefixed with the split name. Sorted by id.
fn song_dirs(root: &Path, is_song: impl Fn(&Path) -> bool) -> Result<Vec<(String, PathBuf)>> {
    let children = subdirs(root)?;
    let mut out = Vec::new();
    for child in children {
        if is_song(&child) {
            out.push((dir_name(&child), child));
            continue;
        }
        let split = dir_name(&child);
        for grand in subdirs(&child)? {
            if is_song(&grand) {
                out.push((format!("{split}/{}", dir_name(&grand)), grand));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: dataset folder holds no song folders", root.display());
    }
    Ok(out)
}

fn finish(
    id: String,
    dir: PathBuf,
    stems: Vec<(Category, PathBuf)>,
    skipped: Vec<(PathBuf, String)>,
    what: &str,
) -> Result<SongSource> {
    if stems.is_empty() {
        let detail = if skipped.is_empty() {
            String::new()
        } else {
            let reasons: Vec<String> = skipped
                .iter()
                .map(|(p, r)| format!("{}: {r}", p.display()))
                .collect();
            format!("; skipped: {}", reasons.join("; "))
        };
        bail!(
            "{}: song folder has no usable stems ({what}){detail}",
            dir.display()
        );
    }
    Ok(SongSource {
        id,
        dir,
        stems,
        skipped,
    })
}

// ---------------------------------------------------------------------------------------------
// Plain

fn plain_song(id: String, dir: PathBuf) -> Result<SongSource> {
    let mut stems = Vec::new();
    let mut skipped = Vec::new();
    for path in files_in(&dir)? {
        if !is_audio(&path) {
            continue; // metadata, notes: not audio, silently ignored
        }
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        match category_of_stem_name(name) {
            Some(c) => stems.push((c, path)),
            None => skipped.push((
                path.clone(),
                format!("'{name}' is not an instrument category"),
            )),
        }
    }
    finish(
        id,
        dir,
        stems,
        skipped,
        "expected audio files named after a category",
    )
}

// ---------------------------------------------------------------------------------------------
// MUSDB18-HQ

fn musdb_song(id: String, dir: PathBuf, options: &DatasetOptions) -> Result<SongSource> {
    let mut stems = Vec::new();
    let mut skipped = Vec::new();
    for path in files_in(&dir)? {
        if !is_audio(&path) {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let category = match name.as_str() {
            "mixture" => continue, // the sum of the stems: never a stem
            "drums" => Some(Category::Drums),
            "bass" => Some(Category::Bass),
            "vocals" => Some(Category::Vocals),
            "other" => {
                if options.other.is_none() {
                    skipped.push((path.clone(), "'other' stems are not used".into()));
                }
                options.other
            }
            _ => {
                skipped.push((path.clone(), format!("'{name}' is not a MUSDB18 stem")));
                None
            }
        };
        if let Some(c) = category {
            stems.push((c, path));
        }
    }
    finish(
        id,
        dir,
        stems,
        skipped,
        "expected drums/bass/other/vocals audio files",
    )
}

// ---------------------------------------------------------------------------------------------
// MoisesDB

/// The category of a MoisesDB stem folder name (see [`MOISES_STEMS`]); `other` follows
/// `options.other`.
pub fn moises_category(folder: &str, options: &DatasetOptions) -> Option<Category> {
    let norm = folder.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    if norm == "other" {
        return options.other;
    }
    MOISES_STEMS
        .iter()
        .find(|(n, _)| *n == norm)
        .map(|(_, c)| *c)
}

fn moises_song(id: String, dir: PathBuf, options: &DatasetOptions) -> Result<SongSource> {
    let mut stems = Vec::new();
    let mut skipped = Vec::new();
    for stem_dir in subdirs(&dir)? {
        let name = dir_name(&stem_dir);
        let Some(category) = moises_category(&name, options) else {
            let reason = if name.eq_ignore_ascii_case("other") {
                "'other' stems are not used".to_string()
            } else {
                format!("'{name}' is not a MoisesDB stem")
            };
            skipped.push((stem_dir, reason));
            continue;
        };
        let files: Vec<PathBuf> = files_in(&stem_dir)?
            .into_iter()
            .filter(|p| is_audio(p))
            .collect();
        if files.is_empty() {
            skipped.push((stem_dir, "stem folder holds no audio files".into()));
        }
        stems.extend(files.into_iter().map(|p| (category, p)));
    }
    finish(
        id,
        dir,
        stems,
        skipped,
        "expected stem folders such as vocals/, bass/, drums/ holding audio files",
    )
}

// ---------------------------------------------------------------------------------------------
// Slakh2100

/// One entry of the `stems:` map of a Slakh `metadata.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlakhStemMeta {
    /// The stem key (`S00`), also the audio file's name.
    pub name: String,
    pub inst_class: Option<String>,
    pub is_drum: Option<bool>,
    pub audio_rendered: Option<bool>,
    pub program_num: Option<u8>,
}

/// The parts of a Slakh `metadata.yaml` the loader uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlakhMeta {
    /// Folder of the stem audio files, relative to the track (default `stems`).
    pub audio_dir: Option<String>,
    /// Stems in file order.
    pub stems: Vec<SlakhStemMeta>,
}

/// Strips a trailing ` # comment` outside quotes, then surrounding quotes, from a YAML scalar.
fn yaml_scalar(raw: &str) -> String {
    let mut quote: Option<char> = None;
    let mut end = raw.len();
    let mut prev_space = true;
    for (i, c) in raw.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if (c == '"' || c == '\'') && prev_space => quote = Some(c),
            None if c == '#' && prev_space => {
                end = i;
                break;
            }
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    let v = raw[..end].trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            let inner = &v[1..v.len() - 1];
            return if q == '\'' {
                inner.replace("''", "'")
            } else {
                inner.replace("\\\"", "\"")
            };
        }
    }
    v.to_string()
}

fn yaml_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Splits `key: value` (key possibly quoted); `None` for lines that are not a mapping entry.
fn yaml_key_value(line: &str) -> Option<(String, String)> {
    let (key, rest) = if let Some(q) = line.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let close = line[1..].find(q)? + 1;
        let rest = line[close + 1..].trim_start();
        (line[1..close].to_string(), rest.strip_prefix(':')?)
    } else {
        // The first ':' followed by a space or the line end.
        let idx = line
            .char_indices()
            .find(|&(i, c)| c == ':' && line[i + 1..].chars().next().is_none_or(|n| n == ' '))?
            .0;
        (line[..idx].trim().to_string(), &line[idx + 1..])
    };
    Some((key, yaml_scalar(rest)))
}

/// Parses the known structure of a Slakh `metadata.yaml`: top-level `audio_dir` and the `stems:`
/// map of stem keys to field maps. Indentation may be any width (spaces; tabs are rejected as
/// YAML does); comments, blank lines, quoted keys and values and unrelated keys are tolerated.
pub fn parse_slakh_metadata(text: &str) -> Result<SlakhMeta> {
    let mut meta = SlakhMeta::default();
    let mut in_stems: Option<usize> = None; // indent of the `stems:` line
    let mut key_indent: Option<usize> = None; // indent of the stem keys
    let mut field_indent: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let content = raw.trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let indent_str = &content[..content.len() - trimmed.len()];
        if indent_str.contains('\t') {
            bail!("line {line_no}: tab in indentation");
        }
        let indent = indent_str.len();
        let Some((key, value)) = yaml_key_value(trimmed) else {
            if in_stems.is_some() {
                bail!("line {line_no}: expected 'key: value', got '{trimmed}'");
            }
            continue; // list items etc. elsewhere in the file are not ours
        };
        match in_stems {
            Some(stems_indent) if indent > stems_indent => {
                let ki = *key_indent.get_or_insert(indent);
                if indent == ki {
                    if !value.is_empty() {
                        bail!("line {line_no}: stem '{key}' should be a map of fields");
                    }
                    meta.stems.push(SlakhStemMeta {
                        name: key,
                        ..Default::default()
                    });
                    field_indent = None;
                } else if indent > ki {
                    let fi = *field_indent.get_or_insert(indent);
                    if indent != fi {
                        continue; // deeper nesting inside a field: not used
                    }
                    let Some(stem) = meta.stems.last_mut() else {
                        bail!("line {line_no}: field outside a stem");
                    };
                    let bad = |what: &str| {
                        anyhow::anyhow!("line {line_no}: {key} of {} is not {what}", stem.name)
                    };
                    match key.as_str() {
                        "inst_class" => stem.inst_class = Some(value),
                        "is_drum" => {
                            stem.is_drum = Some(yaml_bool(&value).ok_or_else(|| bad("a bool"))?)
                        }
                        "audio_rendered" => {
                            stem.audio_rendered =
                                Some(yaml_bool(&value).ok_or_else(|| bad("a bool"))?)
                        }
                        "program_num" => {
                            stem.program_num =
                                Some(value.parse().map_err(|_| bad("a program 0-127"))?)
                        }
                        _ => {}
                    }
                } else {
                    bail!("line {line_no}: inconsistent indentation under 'stems:'");
                }
            }
            _ => {
                in_stems = None;
                if indent == 0 {
                    match key.as_str() {
                        "stems" if value.is_empty() => {
                            in_stems = Some(indent);
                            key_indent = None;
                        }
                        "stems" if value != "{}" => {
                            bail!("line {line_no}: 'stems:' should be a map of stems")
                        }
                        "audio_dir" if !value.is_empty() => meta.audio_dir = Some(value),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// The category of a Slakh stem, or why it is skipped.
fn slakh_category(stem: &SlakhStemMeta) -> std::result::Result<Category, String> {
    if stem.is_drum == Some(true) {
        return Ok(Category::Drums);
    }
    match (&stem.inst_class, stem.program_num) {
        (Some(label), _) => {
            Category::from_name(label).map_err(|_| format!("unknown inst_class '{label}'"))
        }
        (None, Some(p)) => Ok(Category::from_gm_program(p)),
        (None, None) => Err("no inst_class, is_drum or program_num".into()),
    }
}

fn slakh_song(id: String, dir: PathBuf) -> Result<SongSource> {
    let meta_path = dir.join("metadata.yaml");
    let text = std::fs::read_to_string(&meta_path)
        .with_context(|| format!("{}: cannot read metadata", meta_path.display()))?;
    let meta = parse_slakh_metadata(&text)
        .with_context(|| format!("{}: broken Slakh metadata", meta_path.display()))?;
    if meta.stems.is_empty() {
        bail!("{}: metadata lists no stems", meta_path.display());
    }
    let audio_dir = dir.join(meta.audio_dir.as_deref().unwrap_or("stems"));
    let mut stems = Vec::new();
    let mut skipped = Vec::new();
    for stem in &meta.stems {
        let Some(path) = find_audio_file(&audio_dir, &stem.name) else {
            let reason = if stem.audio_rendered == Some(false) {
                "not rendered (audio_rendered: false)"
            } else {
                "audio file missing"
            };
            skipped.push((audio_dir.join(format!("{}.flac", stem.name)), reason.into()));
            continue;
        };
        if stem.audio_rendered == Some(false) {
            skipped.push((path, "not rendered (audio_rendered: false)".into()));
            continue;
        }
        match slakh_category(stem) {
            Ok(c) => stems.push((c, path)),
            Err(reason) => skipped.push((path, reason)),
        }
    }
    finish(
        id,
        dir,
        stems,
        skipped,
        "no rendered stem with a known instrument class",
    )
}
