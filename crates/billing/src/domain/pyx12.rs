//! Test support: pyx12's `x12valid` (the program `PM_X12VALID` names) run on a file the tests
//! wrote. Its exit code is 1 even on success, so only its report is read: the file passes when the
//! report says `<file>: OK` and names no error line.
#![allow(clippy::unwrap_used)]

/// What `x12valid` reports on `text` written as `file_name` (None, after saying so, when
/// `PM_X12VALID` is unset), with the line that says the file passed.
pub fn report(file_name: &str, text: &str) -> Option<(String, String)> {
    let Some(validator) = std::env::var_os("PM_X12VALID").filter(|v| !v.is_empty()) else {
        eprintln!("PM_X12VALID is not set: skipping the pyx12 validation of {file_name}");
        return None;
    };
    let dir = std::env::temp_dir().join(format!(
        "pm-pyx12-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file_name);
    std::fs::write(&path, text).unwrap();
    // x12valid writes its 997/999 beside the input: run it in the scratch folder.
    let output = std::process::Command::new(validator)
        .arg(&path)
        .current_dir(&dir)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    eprint!("{report}");
    Some((report, format!("{}: OK", path.display())))
}

/// Asserts pyx12 accepts `text`: `OK` and no `ERROR` at all (837P files).
pub fn assert_accepted(file_name: &str, text: &str) {
    if let Some((report, ok)) = report(file_name, text) {
        assert!(
            report.contains(&ok) && !report.contains("ERROR"),
            "{file_name}:\n{report}\n{text}"
        );
    }
}
