//! Shared test helpers: sample loading.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Every sample file name, sorted.
pub fn sample_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hl7"))
        .collect();
    names.sort();
    names
}

/// Loads a sample. Files are stored with LF line ends for readability; except for the `_lf`
/// sample (which must keep LF) they are turned into the standard CR segment terminators.
pub fn sample(name: &str) -> String {
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap();
    if name.contains("_lf") {
        text
    } else {
        text.replace('\n', "\r")
    }
}
