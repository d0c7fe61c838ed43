//! The real GitHub payloads vendored in `tests/fixtures/github-webhooks/`: one folder per
//! `X-GitHub-Event`, each file a raw request body.

use std::path::PathBuf;

/// How many payloads the fixture set holds.
pub const COUNT: usize = 273;

/// One payload: its event (the folder), file name and raw bytes.
pub struct Fixture {
    pub event: String,
    pub file: String,
    pub body: Vec<u8>,
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-webhooks")
}

/// Every payload, sorted by event and file name.
pub fn all() -> Vec<Fixture> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).expect("fixture dir") {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let event = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap();
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                out.push(Fixture {
                    event: event.clone(),
                    file: name,
                    body: std::fs::read(file.path()).unwrap(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.event, &a.file).cmp(&(&b.event, &b.file)));
    assert_eq!(out.len(), COUNT, "fixture payloads in {}", dir().display());
    out
}

/// One payload by `event/file`.
pub fn one(path: &str) -> Vec<u8> {
    std::fs::read(dir().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}
