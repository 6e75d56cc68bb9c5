//! Differential test against python-hl7 (PyPI `hl7`, BSD): every leaf of every sample (and a few
//! synthetic messages) must decode to the same text in both parsers.
//!
//! Skipped, with a message, when `python3` or its `hl7` package is missing
//! (`python3 -m pip install hl7`). Known, deliberate differences are excluded from the
//! comparison: python-hl7 turns `\.br\` into CR (we give LF), `\H\`/`\N\` into `_` (we drop them),
//! `\Xhh\` into one character per byte (we read UTF-8 first), and drops unknown escapes like
//! `\Zxx\` (we keep them). Leaves holding any escape other than `\F\ \S\ \T\ \R\ \E\` are therefore
//! not compared; the number skipped is printed.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use pm_hl7::{Message, Value};

const SCRIPT: &str = r#"
import sys, hl7
lines = sys.stdin.read().split("\n")
msg = hl7.parse(bytes.fromhex(lines[0]).decode("utf-8"))
out = []
for key in lines[1:]:
    if not key:
        continue
    try:
        out.append(str(msg[key]).encode("utf-8").hex())
    except Exception:
        out.append("!")
print("\n".join(out))
"#;

fn python_hl7_available() -> bool {
    Command::new("python3")
        .args(["-c", "import hl7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// Asks python-hl7 for each key; `None` where it raised.
fn python_values(er7: &str, keys: &[String]) -> Vec<Option<String>> {
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("{}\n{}\n", hex(er7), keys.join("\n"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let values: Vec<Option<String>> = text
        .lines()
        .map(|l| if l == "!" { None } else { Some(unhex(l)) })
        .collect();
    assert_eq!(values.len(), keys.len());
    values
}

/// True when the raw leaf holds only the five delimiter escapes (or none).
fn only_basic_escapes(raw: &str, escape: char) -> bool {
    let mut s = raw.to_owned();
    for code in ["F", "S", "T", "R", "E"] {
        s = s.replace(&format!("{escape}{code}{escape}"), "");
    }
    !s.contains(escape)
}

struct Leaf {
    key: String,
    ours: Value<'static>,
}

fn leaves(msg: &Message) -> (Vec<Leaf>, usize) {
    let escape = msg.delimiters().escape();
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for seg in msg.all_segments() {
        let occ = seen.entry(seg.id()).or_default();
        *occ += 1;
        let id = if *occ == 1 {
            seg.id().to_owned()
        } else {
            format!("{}{}", seg.id(), occ)
        };
        for (f, field) in seg.fields().enumerate() {
            for (r, rep) in field.repetitions().enumerate() {
                for (c, comp) in rep.components().enumerate() {
                    let subs: Vec<_> = comp.subcomponents().collect();
                    // One past the last subcomponent: absent for us, '' for python-hl7 (but not
                    // for MSH-1/MSH-2, which python-hl7 does not split at all).
                    let atomic = seg.id() == "MSH" && f < 2;
                    let end = if atomic { subs.len() } else { subs.len() + 1 };
                    for s in 0..end {
                        if let Some(sub) = subs.get(s)
                            && !only_basic_escapes(sub.raw(), escape)
                        {
                            skipped += 1;
                            continue;
                        }
                        let (f, r, c, s) = (f + 1, r + 1, c + 1, s + 1);
                        out.push(Leaf {
                            key: format!("{id}.F{f}.R{r}.C{c}.S{s}"),
                            ours: seg.value(f, r, c, s).into_owned(),
                        });
                    }
                }
            }
        }
        // A field past the end of the segment.
        out.push(Leaf {
            key: format!("{id}.F{}.R1.C1.S1", seg.field_count() + 1),
            ours: Value::Absent,
        });
    }
    (out, skipped)
}

#[test]
fn same_values_as_python_hl7() {
    if !python_hl7_available() {
        eprintln!(
            "SKIPPED same_values_as_python_hl7: python3 with the `hl7` package is not installed \
             (python3 -m pip install hl7)"
        );
        return;
    }
    let mut inputs: Vec<(String, String)> = common::sample_names()
        .into_iter()
        .map(|n| {
            let text = common::sample(&n);
            (n, text)
        })
        .collect();
    inputs.push((
        "synthetic-escapes".into(),
        "MSH|^~\\&|A|B\rNTE|1|\\F\\\\S\\\\T\\\\R\\\\E\\|éé\\F\\ü~x^\\E\\y&z|\"\"|a^\"\"^\rZZ1|||~~^^&&".into(),
    ));
    inputs.push((
        "synthetic-custom".into(),
        "MSH#!@*%#X#Y\rPID#1##a!b@c*d%E%\rPID#2##%F%%S%".into(),
    ));

    let (mut compared, mut skipped) = (0, 0);
    for (name, text) in inputs {
        let msg = Message::parse(&text).unwrap();
        let (leaves, skip) = leaves(&msg);
        skipped += skip;
        let keys: Vec<String> = leaves.iter().map(|l| l.key.clone()).collect();
        let theirs = python_values(&msg.to_er7(), &keys);
        for (leaf, theirs) in leaves.iter().zip(theirs) {
            let expected = match &leaf.ours {
                Value::Text(t) => t.to_string(),
                Value::Empty | Value::Absent => String::new(),
                Value::Null => "\"\"".to_owned(),
            };
            // For positions that do not exist python-hl7 answers '' or raises IndexError,
            // depending on the depth; both mean "absent".
            if leaf.ours == Value::Absent && theirs.is_none() {
                compared += 1;
                continue;
            }
            assert_eq!(
                theirs.as_deref(),
                Some(expected.as_str()),
                "{name} {}",
                leaf.key
            );
            compared += 1;
        }
    }
    eprintln!(
        "python-hl7 differential: {compared} leaves compared, {skipped} skipped (known escape differences)"
    );
    assert!(compared > 500, "{compared}");
}
