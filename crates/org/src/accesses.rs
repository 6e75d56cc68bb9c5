//! "Who accessed patient X between T1 and T2" across the mesh: Org's own trail merged with the
//! trail of every other service that holds PHI (asked over `pm.audit.v1.AuditService`), oldest
//! first, a page at a time. The page token carries a cursor per trail.

use pm_api::audit::audit_service_client::AuditServiceClient;
use pm_api::audit::{self as wire, ListPatientAccessesRequest as TrailRequest};
use pm_api::org::{AccessRecord, ListPatientAccessesRequest, ListPatientAccessesResponse};
use pm_runtime::{ApiError, ApiResult, Db, paging};
use tonic::transport::Channel;

/// Another service's trail.
#[derive(Clone)]
pub struct Peer {
    /// The service's short name (`scheduling`).
    pub service: String,
    /// Its audit service, reached with Org's own certificate.
    pub client: AuditServiceClient<Channel>,
}

/// Where a trail's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// After this seq (0: from the start).
    After(i64),
    /// Nothing more.
    Done,
}

fn decode(entries: &[String], service: &str) -> ApiResult<Cursor> {
    let Some(entry) = entries
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{service}=")))
    else {
        return Ok(Cursor::After(0));
    };
    match entry {
        "done" => Ok(Cursor::Done),
        seq => seq
            .parse()
            .map(Cursor::After)
            .map_err(|_| paging::invalid_token()),
    }
}

fn encode(service: &str, cursor: Cursor) -> String {
    match cursor {
        Cursor::After(seq) => format!("{service}={seq}"),
        Cursor::Done => format!("{service}=done"),
    }
}

/// One trail's page: its records and whether it has more after them.
struct Page {
    service: String,
    records: Vec<wire::AccessRecord>,
    more: bool,
}

/// Refuses a window end outside the API's range (years 1 to 9999, normalized) and an end before
/// the start, naming the field: saturated microseconds would otherwise read as "no records".
pub fn check_window(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> ApiResult<()> {
    for (field, ts) in [("start_time", start), ("end_time", end)] {
        if ts.is_some_and(|ts| !pm_runtime::time::is_valid(ts)) {
            return Err(ApiError::invalid(
                field,
                "a normalized instant in years 1 to 9999",
            ));
        }
    }
    if let (Some(start), Some(end)) = (start, end)
        && pm_runtime::time::to_micros(end) < pm_runtime::time::to_micros(start)
    {
        return Err(ApiError::invalid(
            "end_time",
            "must not be before start_time",
        ));
    }
    Ok(())
}

/// Reads a page of every trail after its cursor, merges them by time, keeps `page_size`, and
/// moves each trail's cursor past what was kept.
pub async fn list(
    db: &Db,
    peers: &[Peer],
    req: &ListPatientAccessesRequest,
) -> ApiResult<ListPatientAccessesResponse> {
    let page_size = paging::page_size(req.page_size)?;
    check_window(req.start_time.as_ref(), req.end_time.as_ref())?;
    // The query is the request as sent: an open end ("until now") stays the same query across pages.
    let asked = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| pm_runtime::time::to_micros(t).to_string())
            .unwrap_or_default()
    };
    let fingerprint =
        paging::query_fingerprint(&[&req.patient, &asked(&req.start_time), &asked(&req.end_time)]);
    let entries = paging::decode_token(&req.page_token, &fingerprint)?.unwrap_or_default();
    // The first page pins the end of an open interval ("until now"), and the token keeps it: the
    // listing is a snapshot, not a chase of the records that reading it adds.
    let until = match entries.iter().find_map(|e| e.strip_prefix("until=")) {
        Some(micros) => micros.parse::<i64>().map_err(|_| paging::invalid_token())?,
        None => req
            .end_time
            .as_ref()
            .map_or_else(pm_runtime::time::now_micros, pm_runtime::time::to_micros),
    };
    let trail = |after: i64| TrailRequest {
        patient: req.patient.clone(),
        start_time: req.start_time,
        end_time: Some(pm_runtime::time::to_timestamp(until)),
        page_size: i32::try_from(page_size).unwrap_or(1000),
        after_seq: after,
    };

    let mut pages = Vec::new();
    let mut cursors = Vec::new();
    for service in std::iter::once(crate::NAME).chain(peers.iter().map(|p| p.service.as_str())) {
        let cursor = decode(&entries, service)?;
        cursors.push((service.to_string(), cursor));
        let Cursor::After(after) = cursor else {
            continue;
        };
        let page = match peers.iter().find(|p| p.service == service) {
            None => pm_authz::audit_api::patient_page(db, service, &trail(after)).await?,
            // A trail that cannot be read makes the answer incomplete: refuse rather than omit.
            Some(peer) => peer
                .client
                .clone()
                .list_patient_accesses(trail(after))
                .await
                .map_err(|s| ApiError::peer_unavailable(service, &s.message()))?
                .into_inner(),
        };
        pages.push(Page {
            service: service.to_string(),
            more: page.next_after_seq != 0,
            records: page.records,
        });
    }

    let mut merged: Vec<(usize, usize)> = pages
        .iter()
        .enumerate()
        .flat_map(|(p, page)| (0..page.records.len()).map(move |r| (p, r)))
        .collect();
    let key = |&(p, r): &(usize, usize)| {
        let record = &pages[p].records[r];
        let time = record
            .time
            .as_ref()
            .map(|t| (t.seconds, t.nanos))
            .unwrap_or_default();
        (time, pages[p].service.clone(), record.seq)
    };
    merged.sort_by_key(key);
    merged.truncate(page_size);

    let mut any_more = false;
    for page in &pages {
        let taken: Vec<&wire::AccessRecord> = merged
            .iter()
            .filter(|(p, _)| pages[*p].service == page.service)
            .map(|&(p, r)| &pages[p].records[r])
            .collect();
        let left_behind = taken.len() < page.records.len();
        let next = match taken.last() {
            Some(last) if left_behind || page.more => Cursor::After(last.seq),
            Some(_) => Cursor::Done,
            None if page.records.is_empty() && !page.more => Cursor::Done,
            // Nothing of this trail made the page: read it again from the same place next time.
            None => cursors
                .iter()
                .find(|(s, _)| *s == page.service)
                .map_or(Cursor::After(0), |(_, c)| *c),
        };
        any_more |= next != Cursor::Done;
        if let Some(slot) = cursors.iter_mut().find(|(s, _)| *s == page.service) {
            slot.1 = next;
        }
    }
    let records = merged
        .iter()
        .map(|&(p, r)| to_org(pages[p].records[r].clone()))
        .collect();
    let next_page_token = if any_more {
        paging::encode_token(
            &fingerprint,
            std::iter::once(format!("until={until}"))
                .chain(cursors.iter().map(|(s, c)| encode(s, *c)))
                .collect(),
        )
    } else {
        String::new()
    };
    Ok(ListPatientAccessesResponse {
        records,
        next_page_token,
    })
}

fn to_org(r: wire::AccessRecord) -> AccessRecord {
    AccessRecord {
        seq: r.seq,
        time: r.time,
        method: r.method,
        principal: r.principal,
        calling_service: r.calling_service,
        resources: r.resources,
        source: r.source,
        purpose: r.purpose,
        outcome: r.outcome,
        status_code: r.status_code,
        fhir_audit_event: r.fhir_audit_event,
        service: r.service,
    }
}

#[cfg(test)]
mod window_tests {
    use prost_types::Timestamp;

    use super::check_window;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    fn field(result: pm_runtime::ApiResult<()>) -> Option<String> {
        result
            .err()
            .and_then(|e| e.violations.into_iter().next())
            .map(|(f, _)| f)
    }

    #[test]
    fn out_of_range_or_reversed_windows_name_the_field() {
        let ok = ts(1_700_000_000, 0);
        for bad in [
            ts(i64::MAX, 0),
            ts(i64::MIN, 0),
            ts(0, -1),
            ts(0, 1_000_000_000),
        ] {
            assert_eq!(
                field(check_window(Some(&bad), None)).as_deref(),
                Some("start_time")
            );
            assert_eq!(
                field(check_window(Some(&ok), Some(&bad))).as_deref(),
                Some("end_time")
            );
        }
        assert_eq!(
            field(check_window(Some(&ok), Some(&ts(1_600_000_000, 0)))).as_deref(),
            Some("end_time")
        );
        assert!(check_window(None, None).is_ok());
        assert!(check_window(Some(&ok), Some(&ok)).is_ok());
    }
}
