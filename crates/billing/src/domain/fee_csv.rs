//! A fee-schedule version's entries as CSV, for upload and download by billing staff.
//!
//! The format is one header row `code,modifiers,amount,description`, then one row per entry:
//! modifiers joined with `:` (`25:GT`, empty for the base price), the amount as a decimal
//! (`125`, `125.5`, `125.50`). [`parse`] reports every bad row at once (up to [`MAX_ERRORS`]) so
//! a clerk can fix a spreadsheet in one pass; [`write`] produces a file [`parse`] reads back.

use std::collections::{BTreeSet, HashMap};

use csv::{ReaderBuilder, StringRecord};

use crate::domain::codes::{Modifier, ProcedureCode};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;
use crate::domain::pricing::{FeeEntry, MAX_ENTRIES, amount_not_positive, duplicate};

/// The header row, compared case-insensitively and in this order.
const HEADER: [&str; 4] = ["code", "modifiers", "amount", "description"];

/// After this many errors [`parse`] stops reading: the file needs fixing anyway.
pub const MAX_ERRORS: usize = 100;

/// For each code and modifier set already read, the line of its first entry.
type Seen = HashMap<(String, BTreeSet<String>), u64>;

/// Reads a version's entries. Errors name `line N` (as an editor counts lines; the header is
/// line 1) and the column: `line 7: amount`. A bad header is a single error on `line 1`.
///
/// Reasons: `FEE_CSV_HEADER_INVALID`, `FEE_CSV_ROW_INVALID` (not 4 fields), `FEE_CSV_MALFORMED`
/// (unreadable CSV), the codes.rs reasons on `line N: code` / `line N: modifiers`,
/// `AMOUNT_INVALID` / `AMOUNT_NOT_POSITIVE` on `line N: amount`, `FEE_ENTRY_DUPLICATE` and
/// `FEE_ENTRIES_TOO_MANY` on `line N`.
///
/// Blank rows (empty lines, or only empty fields as spreadsheets export them) are skipped. A
/// leading UTF-8 byte-order mark, which spreadsheet exports add, is ignored.
pub fn parse(text: &str) -> Result<Vec<FeeEntry>, Vec<Invalid>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        // Rows with a wrong field count become our own per-line error rather than a stop.
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    match records.next() {
        Some(Ok(header)) if header_ok(&header) => {}
        _ => return Err(vec![header_error()]),
    }

    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut seen = Seen::new();
    let mut rows = 0usize;
    for result in records {
        let record = match result {
            Ok(record) => record,
            Err(error) => {
                errors.push(malformed(&error));
                break;
            }
        };
        if is_blank(&record) {
            continue;
        }
        let line = line_of(&record, text);
        rows += 1;
        if rows > MAX_ENTRIES {
            errors.push(too_many(line));
            break;
        }
        match parse_row(&record, line) {
            Ok(entry) => match check_duplicate(&mut seen, &entry, line) {
                Ok(()) => entries.push(entry),
                Err(error) => errors.push(error),
            },
            Err(row_errors) => errors.extend(row_errors),
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        errors.truncate(MAX_ERRORS);
        Err(errors)
    }
}

fn header_ok(record: &StringRecord) -> bool {
    record.len() == HEADER.len()
        && record
            .iter()
            .zip(HEADER)
            .all(|(field, name)| field.eq_ignore_ascii_case(name))
}

fn header_error() -> Invalid {
    Invalid::new(
        "line 1",
        "FEE_CSV_HEADER_INVALID",
        format!("the first line must be the header {}", HEADER.join(",")),
    )
}

fn malformed(error: &csv::Error) -> Invalid {
    let line = error.position().map_or(0, csv::Position::line);
    Invalid::new(
        format!("line {line}"),
        "FEE_CSV_MALFORMED",
        "the file is not readable as CSV from here on",
    )
}

fn too_many(line: u64) -> Invalid {
    Invalid::new(
        format!("line {line}"),
        "FEE_ENTRIES_TOO_MANY",
        format!("a version holds at most {MAX_ENTRIES} entries; the file has more"),
    )
}

/// The line the record starts on (a quoted field may span lines). The csv crate positions a
/// record at the start of any blank lines it skipped before it, so those are counted here.
fn line_of(record: &StringRecord, text: &str) -> u64 {
    let Some(position) = record.position() else {
        return 0;
    };
    let from = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let skipped = text
        .get(from..)
        .unwrap_or("")
        .bytes()
        .take_while(|b| matches!(b, b'\n' | b'\r'))
        .filter(|b| *b == b'\n')
        .count();
    position.line() + skipped as u64
}

fn is_blank(record: &StringRecord) -> bool {
    record.iter().all(|field| field.trim().is_empty())
}

/// One row as an entry, or every problem with it.
fn parse_row(record: &StringRecord, line: u64) -> Result<FeeEntry, Vec<Invalid>> {
    let [code, modifiers, amount, description] = match fields(record) {
        Some(fields) => fields,
        None => {
            return Err(vec![Invalid::new(
                format!("line {line}"),
                "FEE_CSV_ROW_INVALID",
                format!(
                    "a row has 4 fields ({}), this one has {}",
                    HEADER.join(","),
                    record.len()
                ),
            )]);
        }
    };
    let modifiers = split_modifiers(modifiers);
    let checked = (
        ProcedureCode::parse(&format!("line {line}: code"), code),
        check_modifiers(&modifiers, line),
        parse_amount(amount, line),
    );
    match checked {
        (Ok(_), Ok(()), Ok(amount)) => Ok(FeeEntry {
            code: code.to_string(),
            modifiers,
            amount,
            description: description.to_string(),
        }),
        (code, modifiers, amount) => Err([code.err(), modifiers.err(), amount.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

fn fields(record: &StringRecord) -> Option<[&str; 4]> {
    match record.iter().collect::<Vec<_>>().as_slice() {
        [a, b, c, d] => Some([a, b, c, d]),
        _ => None,
    }
}

/// `25:GT` → `["25", "GT"]`; empty → none.
fn split_modifiers(field: &str) -> Vec<String> {
    if field.is_empty() {
        return Vec::new();
    }
    field.split(':').map(str::to_string).collect()
}

/// The modifier checks of codes.rs, reported on `line N: modifiers` with the position of the
/// bad one in the message (clerks count from 1).
fn check_modifiers(modifiers: &[String], line: u64) -> Result<(), Invalid> {
    Modifier::parse_modifiers("modifiers", modifiers)
        .map(|_| ())
        .map_err(|e| {
            let index = e
                .field
                .strip_prefix("modifiers[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok());
            let message = match index {
                Some(i) => format!("modifier {} of {}: {}", i + 1, modifiers.len(), e.message),
                None => e.message,
            };
            Invalid::new(format!("line {line}: modifiers"), e.reason, message)
        })
}

fn parse_amount(text: &str, line: u64) -> Result<Cents, Invalid> {
    let field = format!("line {line}: amount");
    match Cents::parse_decimal(text) {
        Ok(amount) if amount.is_positive() => Ok(amount),
        Ok(_) => Err(amount_not_positive(&field)),
        Err(error) => Err(Invalid::new(field, "AMOUNT_INVALID", error.to_string())),
    }
}

/// Refuses a second entry with the same code and modifier set, naming the first one's line.
fn check_duplicate(seen: &mut Seen, entry: &FeeEntry, line: u64) -> Result<(), Invalid> {
    let key = (
        entry.code.clone(),
        entry.modifiers.iter().cloned().collect(),
    );
    match seen.get(&key) {
        Some(first) => Err(duplicate(format!("line {line}"), &format!("line {first}"))),
        None => {
            seen.insert(key, line);
            Ok(())
        }
    }
}

/// Writes entries in the format [`parse`] reads, sorted by code then modifiers (as listed),
/// amounts with two decimals, fields quoted only where CSV needs it.
pub fn write(entries: &[FeeEntry]) -> String {
    let mut sorted: Vec<&FeeEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| (&a.code, &a.modifiers).cmp(&(&b.code, &b.modifiers)));
    let mut out = HEADER.join(",");
    out.push('\n');
    for entry in sorted {
        let row = [
            quoted(&entry.code),
            quoted(&entry.modifiers.join(":")),
            entry.amount.to_string(),
            quoted(&entry.description),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// The field as CSV writes it: in double quotes (inner quotes doubled) when it holds a comma,
/// a quote or a line break.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(code: &str, modifiers: &[&str], cents: i64, description: &str) -> FeeEntry {
        FeeEntry {
            code: code.to_string(),
            modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
            amount: Cents::new(cents),
            description: description.to_string(),
        }
    }

    fn errors_of(text: &str) -> Vec<(String, &'static str)> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect()
    }

    #[test]
    fn reads_a_typical_file() {
        let text = "\u{feff}Code,Modifiers,AMOUNT,description\r\n\
                    99213,,125,Office visit\r\n\
                    99213,25:GT,125.5,\"Office visit, telehealth\"\r\n\
                    G0506,,125.05,\"Care plan \"\"add-on\"\"\"\r\n\
                    90837,95,0.01,\r\n\
                    \r\n\
                    \r\n";
        let expected = vec![
            entry("99213", &[], 12_500, "Office visit"),
            entry("99213", &["25", "GT"], 12_550, "Office visit, telehealth"),
            entry("G0506", &[], 12_505, "Care plan \"add-on\""),
            entry("90837", &["95"], 1, ""),
        ];
        assert_eq!(parse(text), Ok(expected));
        assert_eq!(parse("code,modifiers,amount,description\n"), Ok(Vec::new()));
    }

    #[test]
    fn a_bad_header_is_one_error_on_line_1() {
        for text in [
            "",
            "\n",
            "code,modifiers,amount\n99213,,1,x\n",
            "code,amount,modifiers,description\n99213,1,,x\n",
            "code,modifiers,amount,description,notes\n",
            "code ,modifiers,amount,description\n",
            "99213,,1,x\n",
        ] {
            let errors = parse(text).unwrap_err();
            assert_eq!(errors.len(), 1, "{text:?}");
            assert_eq!(
                (errors[0].field.as_str(), errors[0].reason),
                ("line 1", "FEE_CSV_HEADER_INVALID"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn each_rule_names_the_line_and_column() {
        let cases = [
            ("9921,,1,x", "line 2: code", "PROCEDURE_CODE_INVALID"),
            ("g0506,,1,x", "line 2: code", "PROCEDURE_CODE_INVALID"),
            ("99213,2,1,x", "line 2: modifiers", "MODIFIER_INVALID"),
            ("99213,25:,1,x", "line 2: modifiers", "MODIFIER_INVALID"),
            ("99213,25:25,1,x", "line 2: modifiers", "MODIFIER_REPEATED"),
            (
                "99213,25:GT:59:95:XE,1,x",
                "line 2: modifiers",
                "MODIFIERS_TOO_MANY",
            ),
            ("99213,,-5,x", "line 2: amount", "AMOUNT_NOT_POSITIVE"),
            ("99213,,0,x", "line 2: amount", "AMOUNT_NOT_POSITIVE"),
            ("99213,,0.00,x", "line 2: amount", "AMOUNT_NOT_POSITIVE"),
            ("99213,,12.345,x", "line 2: amount", "AMOUNT_INVALID"),
            ("99213,,$12,x", "line 2: amount", "AMOUNT_INVALID"),
            ("99213,,,x", "line 2: amount", "AMOUNT_INVALID"),
            ("99213,,1 000,x", "line 2: amount", "AMOUNT_INVALID"),
            ("99213,,99999999999,x", "line 2: amount", "AMOUNT_INVALID"),
            ("99213,,1", "line 2", "FEE_CSV_ROW_INVALID"),
            ("99213,,1,x,y", "line 2", "FEE_CSV_ROW_INVALID"),
        ];
        for (row, field, reason) in cases {
            let text = format!("code,modifiers,amount,description\n{row}\n");
            let errors = errors_of(&text);
            assert_eq!(errors, [(field.to_string(), reason)], "{row}");
        }
    }

    #[test]
    fn messages_explain_without_echoing_the_value() {
        let text = "code,modifiers,amount,description\n99213,25:zz,12.345,x\n";
        let errors = parse(text).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].message.starts_with("modifier 2 of 2: "),
            "{}",
            errors[0].message
        );
        assert!(errors[0].message.contains("uppercase"));
        assert!(!errors[0].message.contains("zz"));
        assert!(
            errors[1].message.contains("two decimals"),
            "{}",
            errors[1].message
        );
    }

    #[test]
    fn collects_every_row_error_with_lines_as_a_person_counts_them() {
        let text = "code,modifiers,amount,description\n\
                    99213,,125,\"two\nline description\"\n\
                    bad,x,0,one\n\
                    \n\
                    99214,,1,ok\n\
                    99214,,2,again\n\
                    ,,,\n\
                    99215,GT:25,1.5,ok\n\
                    99215,25:GT,1.5,same set\n";
        let errors = errors_of(text);
        let expected = [
            ("line 4: code", "PROCEDURE_CODE_INVALID"),
            ("line 4: modifiers", "MODIFIER_INVALID"),
            ("line 4: amount", "AMOUNT_NOT_POSITIVE"),
            ("line 7", "FEE_ENTRY_DUPLICATE"),
            ("line 10", "FEE_ENTRY_DUPLICATE"),
        ];
        let expected: Vec<_> = expected.iter().map(|(f, r)| (f.to_string(), *r)).collect();
        assert_eq!(errors, expected);
        let duplicate = &parse(text).unwrap_err()[3];
        assert!(
            duplicate.message.contains("line 6"),
            "{}",
            duplicate.message
        );
    }

    #[test]
    fn line_numbers_count_blank_lines_and_multi_line_fields() {
        let cases = [
            ("\n\nbad,,1,x\n", "line 4: code"),
            ("\r\n\r\n\r\nbad,,1,x\r\n", "line 5: code"),
            ("99213,,1,\"a\nb\nc\"\n\nbad,,1,x\n", "line 6: code"),
            (",,,\n  \nbad,,1,x\n", "line 4: code"),
            ("99213,,1,x\nbad,,1,\"spans\ntwo\"\n", "line 3: code"),
        ];
        for (rows, field) in cases {
            let text = format!("code,modifiers,amount,description\n{rows}");
            let errors = errors_of(&text);
            assert_eq!(
                errors,
                [(field.to_string(), "PROCEDURE_CODE_INVALID")],
                "{rows:?}"
            );
        }
    }

    #[test]
    fn stops_after_100_errors() {
        let mut text = String::from("code,modifiers,amount,description\n");
        for _ in 0..150 {
            text.push_str("bad,,0,x\n");
        }
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[0].field, "line 2: code");
        assert_eq!(errors[MAX_ERRORS - 1].field, "line 51: amount");
    }

    #[test]
    fn at_most_20_000_rows() {
        let file = |rows: usize| {
            let entries: Vec<FeeEntry> = (0..rows)
                .map(|i| entry(&format!("{i:05}"), &[], 100, "x"))
                .collect();
            write(&entries)
        };
        assert_eq!(parse(&file(MAX_ENTRIES)).unwrap().len(), MAX_ENTRIES);
        let errors = errors_of(&file(MAX_ENTRIES + 1));
        assert_eq!(
            errors,
            [(format!("line {}", MAX_ENTRIES + 2), "FEE_ENTRIES_TOO_MANY")]
        );
    }

    #[test]
    fn writes_sorted_with_two_decimals_and_quotes_where_needed() {
        let entries = [
            entry("G0506", &[], 12_550, "plain"),
            entry("99213", &["GT", "25"], 1, "with, comma"),
            entry("99213", &[], 12_500, "say \"hi\""),
            entry("99213", &["25"], 10, "two\nlines"),
        ];
        let expected = "code,modifiers,amount,description\n\
                        99213,,125.00,\"say \"\"hi\"\"\"\n\
                        99213,25,0.10,\"two\nlines\"\n\
                        99213,GT:25,0.01,\"with, comma\"\n\
                        G0506,,125.50,plain\n";
        assert_eq!(write(&entries), expected);
        assert_eq!(write(&[]), "code,modifiers,amount,description\n");
    }

    fn arb_code() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9]{5}", "[0-9]{4}[FTU]", "[A-V][0-9]{4}",]
    }

    fn arb_entry() -> impl Strategy<Value = FeeEntry> {
        (
            arb_code(),
            prop::sample::subsequence(vec!["25", "GT", "59", "95", "XE"], 0..=4).prop_shuffle(),
            1i64..=crate::domain::money::MAX_AMOUNT.cents(),
            any::<String>(),
        )
            .prop_map(|(code, modifiers, cents, description)| {
                entry(&code, &modifiers, cents, &description)
            })
    }

    proptest! {
        #[test]
        fn parse_reads_back_what_write_wrote(entries in prop::collection::vec(arb_entry(), 0..30)) {
            // A valid version has one entry per code and modifier set.
            let mut seen = BTreeSet::new();
            let mut entries: Vec<FeeEntry> = entries
                .into_iter()
                .filter(|e| {
                    let set: BTreeSet<String> = e.modifiers.iter().cloned().collect();
                    seen.insert((e.code.clone(), set))
                })
                .collect();
            prop_assert_eq!(crate::domain::pricing::check_entries(&entries), Ok(()));
            let text = write(&entries);
            entries.sort_by(|a, b| (&a.code, &a.modifiers).cmp(&(&b.code, &b.modifiers)));
            prop_assert_eq!(parse(&text), Ok(entries));
        }
    }
}
